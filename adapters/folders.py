"""Which ecosystem wrote a folder, told from its file names alone, and the Trajectory it holds.

Used by ``complexity-zoo compare``. Detection lists names; it never imports or runs anything a
folder names. A run folder's factory is imported only if allow-listed or trusted (see
``Trajectory.from_dir``); Hugging Face models are built from ``config.json`` with
``trust_remote_code=False``; timm's from the arguments stored in the checkpoint; Lightning
checkpoints do not say how to build their model, so they need an explicit ``model`` factory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from torch import nn

from complexity_zoo.errors import CheckpointNotFoundError, TrajectoryError
from complexity_zoo.trajectory import Trajectory

FORMATS = ("run", "hf", "timm", "lightning")
LOOKS = {
    "run": "run.json and checkpoints/step_*.safetensors (complexity-zoo's run folder)",
    "hf": "checkpoint-N/ folders with config.json and model.safetensors (transformers.Trainer)",
    "timm": "checkpoint-N.pth.tar files (timm's train.py)",
    "lightning": "*.ckpt files, checkpoints/*.ckpt, or version_N/checkpoints/*.ckpt (Lightning)",
}


def detect_format(path: str | os.PathLike) -> str:
    """``run``, ``hf``, ``timm`` or ``lightning``, from the names of the files in ``path``."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointNotFoundError(f"{str(root)!r} does not exist or is not a folder.")
    names = [p.name for p in root.iterdir()]
    found = []
    if (root / "run.json").is_file():
        found.append("run")
    if any(re.fullmatch(r"checkpoint-\d+", n) and (root / n).is_dir() for n in names):
        found.append("hf")
    if any(re.fullmatch(r"checkpoint-\d+\.pth\.tar", n) for n in names):
        found.append("timm")
    # Only folders that stay inside the one named are listed (a linked checkpoints/ is not).
    base = root.resolve()
    folders = [root, root / "checkpoints", *(p / "checkpoints" for p in root.glob("version_*"))]
    inside = [d for d in folders if d.is_dir() and (d.resolve() == base or base in d.resolve().parents)]
    if any(any(d.glob("*.ckpt")) for d in inside):
        found.append("lightning")
    if len(found) == 1:
        return found[0]
    if not found:
        kinds = "; ".join(f"{k}: {v}" for k, v in LOOKS.items())
        raise CheckpointNotFoundError(f"{str(root)!r} holds no checkpoint series this library reads ({kinds}).")
    raise TrajectoryError(f"{str(root)!r} looks like several formats ({', '.join(found)}): pass --format.")


def load_folder(path: str | os.PathLike, fmt: str = "auto", *, model: Callable[[], nn.Module] | None = None,
                trust: bool = False) -> Trajectory:
    """The Trajectory in ``path``, read by the adapter of ``fmt`` (``auto``: :func:`detect_format`)."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "run":
        return Trajectory.from_dir(path, model=model, trust=trust)
    if fmt == "hf":
        from . import huggingface

        return huggingface.load_trajectory(path, model=model)
    if fmt == "timm":
        from . import timm

        return timm.load_trajectory(path, model=model)
    if fmt == "lightning":
        from . import lightning

        if model is None:
            raise TrajectoryError(
                f"{str(path)!r} holds Lightning checkpoints, which do not say how to build their model: "
                f"pass --model PKG.MODULE:FACTORY (the LightningModule, or the nn.Module inside it)."
            )
        folder, _, _ = lightning.resolve_run_folder(path)
        return lightning.load_trajectory(path, model=model, prefix=guess_prefix(folder, model))
    raise TrajectoryError(f"Unknown format {fmt!r}; the formats are {['auto', *FORMATS]}.")


def guess_prefix(folder: Path, model: Callable[[], nn.Module]) -> str | None:
    """The attribute of the LightningModule that holds ``model``'s weights: None when the keys match
    as saved, else the ``name.`` under which every key of the model is found."""
    from .lightning import _ckpt_files, _read

    keys = set(model().state_dict())
    saved = set(_read(_ckpt_files(folder)[-1], (), mmap=True)["state_dict"])
    if keys <= saved:
        return None
    for top in sorted({k.split(".", 1)[0] + "." for k in saved}):
        if keys <= {k[len(top):] for k in saved if k.startswith(top)}:
            return top
    raise TrajectoryError(
        f"The model's keys (e.g. {sorted(keys)[:3]}) are not in the Lightning checkpoints of {str(folder)!r}, "
        f"as saved or under one attribute (their keys start with {sorted({k.split('.', 1)[0] for k in saved})})."
    )
