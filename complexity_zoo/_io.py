"""Reading and writing weights safely: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from ._pickle_bounds import check_torch_payloads
from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    LimitExceededError,
    NotACheckpointError,
    UnsafeCheckpointError,
)

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
# Keys under which training scripts commonly nest the model's state dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model")


_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, streamed; remembered in this process per (path, size, mtime).

    The inode change time is part of what is remembered too: any write updates it, even one
    that restores the size and mtime, and no one can set it back.
    """
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise CheckpointNotFoundError(f"Checkpoint file {path!r} cannot be read: {e}") from e
    key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _what_is(head: bytes) -> str:
    """A short description of what a file that is not a checkpoint holds, from its first bytes."""
    text = head.lstrip()
    if text.startswith(b"version https://git-lfs"):
        return "a git-lfs pointer (the real file was never downloaded: run 'git lfs pull')"
    low = text[:100].lower()
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low:
        return "an HTML page (a download that returned a web page?)"
    if not head:
        return "nothing (the file is empty)"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognized binary data (first bytes {head[:8].hex(' ')})"
    if text[:1] in (b"{", b"["):
        try:
            json.loads(decoded)
            return "JSON text"
        except json.JSONDecodeError:
            pass
    return f"text ({decoded.strip()[:40]!r}...)"


def check_torch_file(path: Path) -> None:
    """Refuse a file that is neither a torch zip archive with data.pkl nor a legacy pickle."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise NotACheckpointError(f"{str(path)!r} is not a checkpoint: it is a damaged zip archive ({e}).") from e
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise NotACheckpointError(
                f"{str(path)!r} is not a checkpoint: it is a zip archive without data.pkl (it holds "
                f"{names[:5]}{'...' if len(names) > 5 else ''})."
            )
        check_torch_payloads(str(path), head)
        return
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:  # a pickle protocol 2-5 header
        check_torch_payloads(str(path), head)
        return
    raise NotACheckpointError(f"{str(path)!r} is not a checkpoint: it holds {_what_is(head)}.")


# A safetensors header is parsed whole (JSON), so its size and the number of objects and values in
# it are bounded first: 100 MB is the safetensors library's own limit; 2**18 tensors in one file is
# several times the largest checkpoints' (a shard holds hundreds to a few thousand).
MAX_HEADER_BYTES = 100 << 20
MAX_TENSORS = 1 << 18


# JSON files a folder holds (run.json, shard indexes, config.json, trainer_state.json) are read
# whole and parsed: bounded first. The largest real ones (a long trainer_state.json) are a few MB.
MAX_JSON_BYTES = 128 << 20


def read_json(path: str | os.PathLike) -> object:
    """The JSON value in a file, refusing a file over :data:`MAX_JSON_BYTES` before reading it whole
    (decoding and parsing errors propagate as ``UnicodeDecodeError`` / ``json.JSONDecodeError``)."""
    with open(path, "rb") as f:
        raw = f.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise LimitExceededError(f"Refusing to read {str(path)!r}: it is over {MAX_JSON_BYTES} bytes "
                                 f"(complexity_zoo._io.MAX_JSON_BYTES), far more than any such JSON file holds.")
    return json.loads(raw.decode("utf-8"))


def check_safetensors_header(raw: bytes, where: str) -> None:
    """Refuse a safetensors JSON header with more objects (tensors) or values than bounded, before parsing it."""
    objects, values = raw.count(b"{"), raw.count(b",")
    if objects > MAX_TENSORS + 2 or values > 16 * MAX_TENSORS + (1 << 20):
        raise LimitExceededError(
            f"Refusing to read {where}: its safetensors header lists {objects} objects and {values} values, over "
            f"the bound of {MAX_TENSORS} tensors (complexity_zoo._io.MAX_TENSORS); parsing it would allocate that "
            f"much first."
        )


def check_safetensors_file(path: Path) -> None:
    """Refuse a file whose first bytes are not a safetensors header (length, then a JSON object),
    or whose header is over the bounds of :func:`check_safetensors_header`."""
    with open(path, "rb") as f:
        head = f.read(512)
        size = os.fstat(f.fileno()).st_size
        n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
        if not (0 < n <= size - 8 and head[8:9] == b"{"):
            raise NotACheckpointError(f"{str(path)!r} is not a safetensors checkpoint: it holds {_what_is(head)}.")
        if n > MAX_HEADER_BYTES:
            raise LimitExceededError(f"Refusing to read {str(path)!r}: its safetensors header is {n} bytes, over "
                                     f"the bound of {MAX_HEADER_BYTES}.")
        f.seek(8)
        check_safetensors_header(f.read(n), repr(str(path)))


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a weights-only torch file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"Checkpoint file {str(path)!r} does not exist.")
    if path.name.endswith(SAFETENSORS_SUFFIXES):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        check_safetensors_file(path)
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {e}") from e
    if not path.name.endswith(TORCH_SUFFIXES):
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint this library reads: expected one of "
            f"{SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}."
        )
    obj = torch_load_weights_only(path)
    return state_dict_from_object(obj, path)


def torch_load_weights_only(path: Path, safe_globals: list | None = None, *, mmap: bool = False) -> object:
    """``torch.load(weights_only=True)``, turning refusals into a clear error.

    ``mmap=True`` maps the tensors instead of reading them, so reading a big training
    checkpoint only for its small entries (a step, an epoch) stays cheap.
    """
    check_torch_file(path)
    try:
        if safe_globals:
            with torch.serialization.safe_globals(list(safe_globals)):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        wanted = re.search(r"GLOBAL ([\w.]+)", str(e))
        if wanted is None and "global" not in str(e).lower():
            raise NotACheckpointError(f"{str(path)!r} is not a readable torch checkpoint: {e}") from e
        what = f" It asks for the global {wanted.group(1)!r}." if wanted else ""
        raise UnsafeCheckpointError(
            f"Refusing to load {str(path)!r}: it holds pickled Python objects, not only tensors, "
            f"and unpickling can run arbitrary code.{what} If you trust the file, load it "
            f"yourself (torch.load(..., weights_only=False)), keep its state dict, and pass it "
            f"to Trajectory.from_state_dicts; or re-save it with safetensors."
        ) from e
    except Exception as e:  # torch reports damage as many kinds of error (KeyError, EOFError, ...)
        raise NotACheckpointError(
            f"{str(path)!r} is not a readable torch checkpoint: {type(e).__name__}: {e}"
        ) from e


def state_dict_from_object(obj: object, path: Path) -> dict[str, Tensor]:
    """Find the tensors in a loaded object: a state dict, or one nested under a common key."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        for key in NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                isinstance(v, Tensor) for v in inner.values()
            ):
                return dict(inner)
    raise CheckpointError(
        f"{str(path)!r} holds no state dict: expected a mapping of names to tensors, or one "
        f"nested under {NESTED_KEYS}; got {type(obj).__name__}."
    )


def save_state_dict_file(path: str | os.PathLike, state_dict: Mapping[str, Tensor]) -> None:
    """Write a state dict as safetensors, atomically (a crash never leaves half a file)."""
    from safetensors.torch import save_file

    path = Path(path)
    # Copies break shared storage (tied weights), which safetensors refuses.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or Ctrl-C leaves no half-written .tmp
        raise
