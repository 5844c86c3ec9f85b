"""The result cache of compare(): one small JSON file per finished (checkpoint, measure) cell."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


def to_jsonable(obj: Any) -> Any:
    """Tensors and arrays as lists, numpy scalars as Python numbers, non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


class ResultCache:
    """A folder of finished cells; each is written atomically the moment it is computed."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(checkpoint_id: str, measure_key: str, data_id: str | None) -> str:
        blob = json.dumps([checkpoint_id, measure_key, data_id])
        return hashlib.sha1(blob.encode()).hexdigest()

    def _path(self, measure_name: str, key: str) -> Path:
        return self.root / measure_name / f"{key}.json"

    def get(self, measure_name: str, key: str) -> dict | None:
        path = self._path(measure_name, key)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # a torn file from a crash mid-write: recompute
            return None

    def put(self, measure_name: str, key: str, record: dict) -> None:
        path = self._path(measure_name, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(to_jsonable(record)))
        os.replace(tmp, path)
