"""The result cache of compare(): one small JSON file per finished (checkpoint, measure) cell."""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
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


# Bump when the key or the record changes: older cells are then never read (they stay on disk).
CACHE_FORMAT = 2
# What a cell must hold to be used; anything else is recomputed.
_REQUIRED = ("value", "seconds", "run", "step", "measure", "settings")


def valid_record(record: object, key: str) -> bool:
    """A complete, finished cell of this cache format, written under ``key``."""
    if not isinstance(record, dict) or record.get("format") != CACHE_FORMAT or record.get("key") != key:
        return False
    if any(k not in record for k in _REQUIRED):
        return False
    value = record["value"]
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class ResultCache:
    """A folder of finished cells; each is written atomically the moment it is computed.

    A cell's key is a digest of the checkpoint's content, the model factory's identity, the
    measure (name, version, settings, seed) and the data's identity (examples, loss), under a
    format version. A file that does not parse as a complete cell of this format is ignored and
    recomputed (and then overwritten).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(checkpoint_id: str, model_id: str, measure_key: str, data_id: str | None) -> str:
        blob = json.dumps([CACHE_FORMAT, checkpoint_id, model_id, measure_key, data_id])
        return hashlib.sha256(blob.encode()).hexdigest()[:40]

    def _path(self, measure_name: str, key: str) -> Path:
        return self.root / measure_name / f"{key}.json"

    def get(self, measure_name: str, key: str) -> dict | None:
        """The finished cell under ``key``, or None (absent, torn, damaged or of another format)."""
        path = self._path(measure_name, key)
        try:
            record = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError):  # absent, unreadable, torn or not JSON: recompute
            return None
        if not valid_record(record, key):
            return None
        record = dict(record)
        record.pop("format"), record.pop("key")
        return record

    def put(self, measure_name: str, key: str, record: dict) -> None:
        """Write one cell atomically: a temporary file, flushed, then renamed over the old one."""
        path = self._path(measure_name, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        payload = json.dumps({**to_jsonable(record), "format": CACHE_FORMAT, "key": key}, allow_nan=False)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
