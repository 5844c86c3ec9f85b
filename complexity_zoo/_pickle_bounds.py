"""Bounds on what a checkpoint's pickle may ask to allocate, checked before torch unpickles it.

``torch.load(weights_only=True)`` allows only tensors and containers, but still allocates every
string, byte string and container the pickle describes: a 1 MiB zip whose deflated ``data.pkl``
holds one 1 GiB string cost 3.7 GiB before torch's own refusal. :func:`check_torch_payloads`
walks the pickle's opcodes (reading each length prefix, skipping the payload in chunks) and
refuses a file whose pickle or any one item is over :data:`LIMITS`, or whose zip entries inflate
far beyond their stored size. It allocates at most one chunk and one text line.
"""

from __future__ import annotations

import pickletools
import zipfile
import zlib
from typing import BinaryIO

from .errors import LimitExceededError, NotACheckpointError

# Raise these (in this module) to read a file you trust that is over them.
LIMITS = {
    "pickle_bytes": 256 << 20,  # data.pkl; real ones are KBs to tens of MBs (one entry per tensor)
    "item_bytes": 64 << 20,  # one string, byte string or integer in the pickle
    "opcodes": 1 << 24,  # each can make one object: bounds the objects built (~1 GB at most)
    "inflation": 64,  # how many times a compressed zip entry over 16 MiB may grow (torch stores, never compresses)
}
_OPS = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
# Width of the length prefix of opcodes whose argument is a counted payload, and whether it is signed.
_PREFIX = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
           pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}
_CHUNK = 1 << 20


def _too_big(where: str, what: str, size: int, limit: str) -> LimitExceededError:
    return LimitExceededError(
        f"Refusing to load {where}: {what} is {size} bytes, over the bound of {LIMITS[limit]} "
        f"(complexity_zoo._pickle_bounds.LIMITS[{limit!r}]); reading it would allocate that much before "
        f"anything could check it. If you trust the file, raise the bound."
    )


def _read(stream: BinaryIO, n: int, where: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise NotACheckpointError(f"{where} ends inside its pickle.")
    return data


def scan_pickle(stream: BinaryIO, where: str) -> bool:
    """Walk one pickle up to its STOP, refusing payloads over :data:`LIMITS`; False at a clean end of file."""
    for count in range(LIMITS["opcodes"] + 1):
        code = stream.read(1)
        if not code:
            if count == 0:
                return False
            raise NotACheckpointError(f"{where} ends inside its pickle.")
        op = _OPS.get(code)
        if op is None:
            raise NotACheckpointError(f"{where} holds no valid pickle (byte {code!r} is no opcode).")
        if op.name == "STOP":
            return True
        n = op.arg.n if op.arg is not None else 0
        if n >= 0:
            _read(stream, n, where)
        elif n == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if op.arg.name.endswith("_pair") else 1):
                line = stream.readline(LIMITS["item_bytes"] + 1)
                if not line.endswith(b"\n"):
                    raise _too_big(where, f"a text argument of {op.name}", len(line), "item_bytes")
        else:
            width, signed = _PREFIX[n]
            size = int.from_bytes(_read(stream, width, where), "little", signed=signed)
            if size < 0:
                raise NotACheckpointError(f"{where} holds a pickle with a negative length ({op.name}).")
            if size > LIMITS["item_bytes"]:
                raise _too_big(where, f"one item of its pickle ({op.name})", size, "item_bytes")
            while size:
                size -= len(_read(stream, min(size, _CHUNK), where))
    raise _too_big(where, "the number of opcodes of its pickle", LIMITS["opcodes"] + 1, "opcodes")


def check_torch_payloads(path: str, head: bytes) -> None:
    """Refuse a torch file (zip or legacy pickle, told by ``head``) whose pickle or zip entries are over bounds."""
    where = repr(str(path))
    if not head.startswith(b"PK\x03\x04"):  # legacy: magic, protocol, sys_info, the object, storage keys
        with open(path, "rb") as f:
            for _ in range(5):
                if not scan_pickle(f, where):
                    return
        return
    try:
        _check_zip(path, where)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise NotACheckpointError(f"{where} is not a readable torch checkpoint: {type(e).__name__}: {e}") from e


def _check_zip(path: str, where: str) -> None:
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(
                    16 << 20, LIMITS["inflation"] * info.compress_size):
                raise LimitExceededError(
                    f"Refusing to load {where}: its zip entry {info.filename!r} inflates from {info.compress_size} "
                    f"to {info.file_size} bytes, over {LIMITS['inflation']} times (complexity_zoo._pickle_bounds."
                    f"LIMITS['inflation']); torch never compresses what it saves. If you trust the file, raise "
                    f"the bound."
                )
            if info.filename == "data.pkl" or info.filename.endswith("/data.pkl"):
                if info.file_size > LIMITS["pickle_bytes"]:
                    raise _too_big(where, f"its pickle {info.filename!r}", info.file_size, "pickle_bytes")
                with z.open(info) as f:
                    scan_pickle(f, where)  # type: ignore[arg-type]
