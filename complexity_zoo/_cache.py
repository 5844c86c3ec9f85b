"""The result cache of compare(): one small JSON file per finished (checkpoint, measure) cell."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CacheWarning


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
CACHE_FORMAT = 3
# What a cell must hold to be used; anything else is recomputed.
_REQUIRED = ("value", "seconds", "run", "step", "measure", "settings")
# A cell is a few KB (value, stderr, diagnostics, per-layer extras); a file bigger than this at a
# cell's path is not read (it is not a cell this library wrote), and the cell is recomputed.
MAX_CELL_BYTES = 64 << 20
_KEY_FIELDS = ("checkpoint_id", "model_id", "measure_key", "data_id")


class CellKey(str):
    """A cell's key (a digest), carrying what it is a digest of: the checkpoint's content, the
    model factory's identity, the measure's key (name, version, settings, seed) and the data's
    identity. A cell records these and a read checks them, so a record moved under another key
    is never served."""

    fields: dict

    def __new__(cls, digest: str, fields: dict) -> CellKey:
        obj = super().__new__(cls, digest)
        obj.fields = fields
        return obj

    def __reduce__(self):  # travels to worker processes with its fields
        return CellKey, (str(self), self.fields)


def _checksum(body: dict) -> str:
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_record(record: object, key: str, measure_name: str) -> str | None:
    """Why ``record`` is not a complete, untouched cell of this format for ``key``, or None.

    Checked: the format, the key, the fields the key is a digest of (they must digest to it),
    the measure, a finite value, and the checksum of the whole content (an edit by hand fails it).
    The checksum finds edits and damage, not forgery: whoever can write the cache folder can
    recompute it (keep a cache where only you write)."""
    if not isinstance(record, dict):
        return f"it holds a JSON {type(record).__name__}, not a cell"
    if record.get("format") != CACHE_FORMAT:
        return f"its format is {record.get('format')!r}, not {CACHE_FORMAT}"
    if record.get("key") != key:
        return f"it was written under another key ({str(record.get('key'))[:12]}...)"
    fields = record.get("key_fields")
    if not isinstance(fields, dict) or set(fields) != set(_KEY_FIELDS) or ResultCache.key(**fields) != key:
        return "its recorded checkpoint, model, measure and data do not digest to its key"
    if getattr(key, "fields", fields) != fields:
        return "its recorded checkpoint, model, measure or data differ from this cell's"
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        return f"it lacks {missing}"
    if record["measure"] != measure_name:
        return f"it is a cell of the measure {record['measure']!r}, not {measure_name!r}"
    value = record["value"]
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
        return f"its value {value!r} is not a finite number"
    body = {k: v for k, v in record.items() if k != "checksum"}
    if record.get("checksum") != _checksum(body):
        return "its checksum does not match its content (edited or damaged)"
    return None


class ResultCache:
    """A folder of finished cells; each is written atomically the moment it is computed.

    A cell's key is a digest of the checkpoint's content, the model factory's identity, the
    measure (name, version, settings, seed) and the data's identity (examples, loss), under a
    format version. Each cell records those and a checksum of its content; a cell that fails
    :func:`check_record` (edited, damaged, moved, too big) is recomputed with a
    :class:`CacheWarning` and overwritten. A cache that cannot be written (read-only, full, a
    path taken) warns once and the comparison goes on without caching what it cannot write.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.writable = True
        self._warned = False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe.{os.getpid()}.{threading.get_ident()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            self._cannot_write(e)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_warned": False}

    def _cannot_write(self, error: OSError) -> None:
        self.writable = False
        if not self._warned:
            self._warned = True
            warnings.warn(f"The cache {str(self.root)!r} cannot be written ({type(error).__name__}: {error}); the "
                          f"comparison goes on, and cells that cannot be written are computed without caching.",
                          CacheWarning, stacklevel=3)

    @staticmethod
    def key(checkpoint_id: str, model_id: str, measure_key: str, data_id: str | None) -> CellKey:
        fields = {"checkpoint_id": checkpoint_id, "model_id": model_id, "measure_key": measure_key,
                  "data_id": data_id}
        blob = json.dumps([CACHE_FORMAT, checkpoint_id, model_id, measure_key, data_id])
        return CellKey(hashlib.sha256(blob.encode()).hexdigest()[:40], fields)

    def _path(self, measure_name: str, key: str) -> Path:
        return self.root / measure_name / f"{key}.json"

    def _outside(self, path: Path) -> bool:
        """Whether a cell's folder leads out of the cache (a link): such a cell is neither read nor written."""
        base, folder = os.path.realpath(self.root), os.path.realpath(path.parent)
        return folder != base and not folder.startswith(base + os.sep)

    def get(self, measure_name: str, key: str) -> dict | None:
        """The finished cell under ``key``, or None: absent, or failing :func:`check_record` (warned)."""
        path = self._path(measure_name, key)
        if self._outside(path):
            return self._bad(path, "its folder is a link out of the cache")
        try:  # O_NOFOLLOW: a cell that is a link is not followed (it is recomputed, and the link replaced)
            with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as f:
                raw = f.read(MAX_CELL_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):  # nothing there
            return None
        except OSError as e:  # a folder at the cell's path, no permission, ...
            return self._bad(path, f"it cannot be read ({type(e).__name__}: {e})")
        if len(raw) > MAX_CELL_BYTES:
            return self._bad(path, f"it is over {MAX_CELL_BYTES >> 20} MiB, bigger than any cell")
        try:
            record = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # torn or not JSON
            return self._bad(path, f"it is not a JSON cell ({type(e).__name__})")
        why = check_record(record, key, measure_name)
        if why is not None:
            return self._bad(path, why)
        record = dict(record)
        for k in ("format", "key", "key_fields", "checksum"):
            record.pop(k)
        return record

    @staticmethod
    def _bad(path: Path, why: str) -> None:
        warnings.warn(f"The cache cell {str(path)!r} is not used: {why}. It is computed again.", CacheWarning,
                      stacklevel=3)
        return None

    def put(self, measure_name: str, key: str, record: dict) -> None:
        """Write one cell atomically: a temporary file, flushed, then renamed over the old one.

        A write that fails (read-only, disk full, a folder at the cell's path) leaves no
        temporary file and warns once; the cell's result is still returned by compare."""
        if not self.writable:
            return
        path = self._path(measure_name, key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        body = {**to_jsonable(record), "format": CACHE_FORMAT, "key": str(key),
                "key_fields": getattr(key, "fields", None)}
        payload = json.dumps({**body, "checksum": _checksum(body)}, allow_nan=False)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if self._outside(path):
                raise OSError(f"{str(path.parent)!r} is a link out of the cache")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._warned:
                self._warned = True
                warnings.warn(f"A cell cannot be written to the cache {str(self.root)!r} ({type(e).__name__}: {e}); "
                              f"the comparison goes on, and cells that cannot be written are not cached.",
                              CacheWarning, stacklevel=3)
