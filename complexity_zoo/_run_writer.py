"""Writing a run folder incrementally: run.json, each checkpoint and metrics row as they come."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from ._io import read_json, save_state_dict_file
from ._trust import confine, factory_from_spec, localize_spec
from .errors import TrajectoryError

RUN_FORMAT = 1


class RunWriter:
    """Writes a run folder incrementally: each checkpoint and metrics row lands on disk at once."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        model: dict,
        task: dict | None = None,
        overwrite: bool = False,
    ) -> None:
        self.root = Path(path)
        factory_from_spec(model, trust=True)  # fail now, not when someone reads the run
        model = localize_spec(model, self.root)
        meta = {"format": RUN_FORMAT, "model": model, "task": task}
        meta_path = self.root / "run.json"
        for p in (meta_path, self.root / "checkpoints", self.root / "metrics.csv"):  # never write through a link
            if p.is_symlink() or p.exists():
                confine(self.root, p, "The run folder's")
        if meta_path.exists() and not overwrite:
            old = read_json(meta_path)
            if old != json.loads(json.dumps(meta)):
                raise TrajectoryError(
                    f"{str(self.root)!r} already holds a different run; pass overwrite=True or "
                    f"choose another folder."
                )
        (self.root / "checkpoints").mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        self._metrics_path = self.root / "metrics.csv"
        if overwrite and self._metrics_path.exists():
            self._metrics_path.unlink()

    def write_checkpoint(
        self, step: int, state_dict: Mapping[str, Tensor], metrics: Mapping[str, float] | None = None
    ) -> Path:
        """Write ``checkpoints/step_{step:08d}.safetensors`` and its metrics row."""
        if int(step) < 0:
            raise TrajectoryError(f"Steps are non-negative integers; got {step!r}.")
        path = self.root / "checkpoints" / f"step_{int(step):08d}.safetensors"
        save_state_dict_file(path, state_dict)
        if metrics:
            self.write_metrics(step, metrics)
        return path

    def write_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append one row to ``metrics.csv``; a row with new columns rewrites the file wider."""
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        header: list[str] = []
        if self._metrics_path.exists():
            with self._metrics_path.open(newline="") as f:
                header = next(csv.reader(f), [])
        if header and set(row) <= set(header):
            with self._metrics_path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=header, restval="").writerow(row)
            return
        rows: list[dict] = []
        if header:
            with self._metrics_path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        rows.append(row)
        columns = ["step"] + sorted({k for r in rows for k in r} - {"step"})
        tmp = self._metrics_path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, restval="")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self._metrics_path)
