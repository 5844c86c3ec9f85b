"""Streaming reads: a checkpoint's tensors one at a time, so memory is bounded by the largest
tensor rather than the model (safetensors, sharded safetensors via their index, torch files)."""

from __future__ import annotations

import ctypes
import functools
import json
import mmap
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor

from ._io import (
    MAX_HEADER_BYTES,
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    check_safetensors_header,
    check_torch_file,
    read_json,
    state_dict_from_object,
    torch_load_weights_only,
)
from .errors import CheckpointError, CheckpointNotFoundError, NotACheckpointError


def open_tensors(path: str | os.PathLike, key: str | None = None, prefix: str | None = None,
                 safe_globals: tuple = ()) -> TensorReader:
    """A reader of one checkpoint's tensors that reads each tensor only when asked for it.

    ``.safetensors``: the header is parsed here and each tensor read with a positioned read
    into a fresh buffer (memory: the tensor asked for). ``*.index.json``: the shards it lists,
    each resolved inside the index's folder. Torch files (``.pt``, ``.bin``, ``.pth.tar``, ...):
    see :class:`TorchFileReader`; ``key`` picks a nested state dict (e.g. ``state_dict_ema``)
    and ``prefix`` keeps the keys under it, stripped (Lightning's ``model.``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"Checkpoint file {str(path)!r} does not exist.")
    if path.name.endswith(".index.json"):
        return ShardedReader(path)
    if path.name.endswith(SAFETENSORS_SUFFIXES):
        return SafetensorsReader(path)
    if path.name.endswith(TORCH_SUFFIXES):
        return TorchFileReader(path, key=key, prefix=prefix, safe_globals=safe_globals)
    raise CheckpointError(
        f"{str(path)!r} is not a checkpoint this library reads: expected one of "
        f"{SAFETENSORS_SUFFIXES + TORCH_SUFFIXES} or a '*.index.json' shard index."
    )


class TensorReader:
    """Named tensors read one at a time: ``keys()``, ``get(name)``, ``close()`` (a context manager)."""

    where: str = "<memory>"

    def keys(self) -> list[str]:
        raise NotImplementedError

    def get(self, name: str) -> Tensor:
        raise NotImplementedError

    def identity(self, name: str) -> object | None:
        """What ``name``'s tensor shares with others (tied weights of a torch file), or None."""
        return None

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[tuple[str, Tensor]]:
        for name in self.keys():
            yield name, self.get(name)
            release_free_memory()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MappingReader(TensorReader):
    """A reader over a state dict already in memory."""

    def __init__(self, state: Mapping[str, Tensor], where: str = "<memory>") -> None:
        self.state, self.where = state, where

    def keys(self) -> list[str]:
        return list(self.state)

    def get(self, name: str) -> Tensor:
        return self.state[name]

    def identity(self, name: str) -> object | None:
        t = self.state[name]
        return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "U16": getattr(torch, "uint16", None), "U32": getattr(torch, "uint32", None),
    "U64": getattr(torch, "uint64", None), "F8_E4M3": getattr(torch, "float8_e4m3fn", None),
    "F8_E5M2": getattr(torch, "float8_e5m2", None), "F8_E8M0": getattr(torch, "float8_e8m0fnu", None),
}


class SafetensorsReader(TensorReader):
    """A ``.safetensors`` file read tensor by tensor, with no memory map (mapped pages count in RSS).

    The header (8-byte little-endian length, then JSON) is validated as the safetensors library
    does: known dtypes, non-negative shapes, offsets that tile the data area exactly.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.where = str(path)
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        try:
            self.entries = self._read_header(os.fstat(self._file.fileno()).st_size)
        except BaseException:
            self._file.close()
            raise

    def _bad(self, why: str) -> NotACheckpointError:
        return NotACheckpointError(f"{self.where!r} is not a valid safetensors file: {why}.")

    def _read_header(self, size: int) -> dict[str, tuple[torch.dtype, tuple[int, ...], int, int]]:
        head = self._file.read(8)
        if len(head) < 8:
            raise self._bad("it is shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if not 0 < n <= min(size - 8, MAX_HEADER_BYTES):
            raise self._bad(f"its header length {n} does not fit the file ({size} bytes) or is over {MAX_HEADER_BYTES}")
        raw = self._file.read(n)
        check_safetensors_header(raw, repr(self.where))
        try:
            header = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise self._bad(f"its header is not JSON ({e})") from e
        if not isinstance(header, dict):
            raise self._bad("its header is not a JSON object")
        self._base, data_size = 8 + n, size - 8 - n
        entries, spans = {}, []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if not isinstance(info, dict):
                raise self._bad(f"the entry {name!r} is not an object")
            dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
            if _ST_DTYPES.get(dtype) is None:
                raise self._bad(f"the tensor {name!r} has the dtype {dtype!r}, which this torch cannot hold")
            if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
                raise self._bad(f"the tensor {name!r} has the shape {shape!r}")
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                    and 0 <= offsets[0] <= offsets[1] <= data_size):
                raise self._bad(f"the tensor {name!r} has data_offsets {offsets!r} outside its {data_size} data bytes")
            torch_dtype = _ST_DTYPES[dtype]
            numel = 1
            for d in shape:
                numel *= d
            if (offsets[1] - offsets[0]) * 8 != numel * torch_dtype.itemsize * 8:
                raise self._bad(f"the tensor {name!r} of shape {shape} ({dtype}) has {offsets[1] - offsets[0]} bytes")
            entries[name] = (torch_dtype, tuple(shape), offsets[0], offsets[1])
            spans.append((offsets[0], offsets[1], name))
        end = 0
        for begin, stop, name in sorted(spans):
            if begin != end:
                raise self._bad(f"the tensor {name!r} starts at byte {begin}, not where the previous one ends ({end})")
            end = stop
        if end != data_size:
            raise self._bad(f"its tensors cover {end} of its {data_size} data bytes")
        return entries

    def keys(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str) -> Tensor:
        if name not in self.entries:
            raise CheckpointError(f"{self.where!r} has no tensor {name!r}.")
        dtype, shape, begin, end = self.entries[name]
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        out = _fresh(dtype, shape)
        view, done = memoryview(out.reshape(-1).view(torch.uint8).numpy()), 0
        self._file.seek(self._base + begin)
        while done < end - begin:
            got = self._file.readinto(view[done:])
            if not got:
                raise CheckpointError(f"{self.where!r} ended while reading the tensor {name!r}.")
            done += got
        view.release()
        if sys.byteorder != "little" and dtype.itemsize > 1:  # pragma: no cover
            raise CheckpointError(f"Reading {self.where!r} needs a little-endian machine.")
        return out

    def close(self) -> None:
        self._file.close()


class ShardedReader(TensorReader):
    """The shards a ``*.index.json`` lists (its ``weight_map``), each opened when first needed."""

    def __init__(self, path: Path) -> None:
        from ._trust import resolve_inside

        self.where = str(path)
        try:
            weight_map = read_json(path)["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{self.where!r} is not a shard index with a 'weight_map': {e!r}") from e
        where = f"The shard index {self.where!r}"
        self._shard_of = {k: resolve_inside(path.parent, v, where) for k, v in weight_map.items()}
        self._open: dict[Path, TensorReader] = {}

    def keys(self) -> list[str]:
        return list(self._shard_of)

    def get(self, name: str) -> Tensor:
        shard = self._shard_of.get(name)
        if shard is None:
            raise CheckpointError(f"The shard index {self.where!r} lists no tensor {name!r}.")
        if shard not in self._open:
            self._open[shard] = open_tensors(shard)
        reader = self._open[shard]
        if name not in reader.keys():
            raise CheckpointError(f"The shard {str(shard)!r} lacks {name!r}, which {self.where!r} places there.")
        return reader.get(name)

    def close(self) -> None:
        for reader in self._open.values():
            reader.close()
        self._open.clear()


class TorchFileReader(TensorReader):
    """A weights-only torch file. A zip-format file (torch >= 1.6) is memory-mapped
    (``torch.load(mmap=True)``) and each tensor copied out, after which its mapped pages are
    released (``madvise(MADV_DONTNEED)``, on systems that have it): memory stays bounded by about
    twice the largest tensor. A legacy (non-zip) pickle cannot be mapped and is loaded whole.
    """

    def __init__(self, path: Path, key: str | None = None, prefix: str | None = None,
                 safe_globals: tuple = ()) -> None:
        self.where = str(path)
        check_torch_file(path)
        with open(path, "rb") as f:
            self.mapped = f.read(4) == b"PK\x03\x04"
        obj = torch_load_weights_only(path, list(safe_globals) or None, mmap=self.mapped)
        if key is not None:
            inner = obj.get(key) if isinstance(obj, Mapping) else None
            if not isinstance(inner, Mapping) or not all(isinstance(v, Tensor) for v in inner.values()):
                raise CheckpointError(f"{self.where!r} has no state dict under {key!r}.")
            state = dict(inner)
        else:
            state = state_dict_from_object(obj, path)
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not state:
                raise CheckpointError(f"No key of {self.where!r} starts with the prefix {prefix!r}.")
        self.state = state

    def keys(self) -> list[str]:
        return list(self.state)

    def identity(self, name: str) -> object | None:
        return MappingReader.identity(self, name)  # type: ignore[arg-type]

    def get(self, name: str) -> Tensor:
        if name not in self.state:
            raise CheckpointError(f"{self.where!r} has no tensor {name!r}.")
        t = self.state[name]
        if not self.mapped:
            return t
        out = _fresh(t.dtype, tuple(t.shape)).copy_(t)
        _release_pages(t)
        return out

    def close(self) -> None:
        self.state = {}


def _fresh(dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    """An uninitialized tensor in an anonymous mapping of its own, not the heap: it goes back to
    the OS the moment the tensor dies (glibc keeps freed heap blocks, so RSS would grow)."""
    numel = 1
    for d in shape:
        numel *= d
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(mmap.mmap(-1, numel * dtype.itemsize), dtype=dtype).reshape(shape)


def _release_pages(t: Tensor) -> None:
    """Drop the whole pages of a memory-mapped tensor from this process (they are clean: a later
    access reads them from the file again), so a streamed torch file does not accumulate in RSS."""
    advise = getattr(mmap, "MADV_DONTNEED", None)
    if advise is None or t.numel() == 0:
        return
    page = mmap.PAGESIZE
    start = t.data_ptr()
    stop = start + t.numel() * t.element_size()
    first, last = -(-start // page) * page, (stop // page) * page
    if last > first:
        _libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), advise)


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    glibc raises its mmap threshold after a large block is freed, so the next tensor-sized
    workspaces come from the heap, and freed heap pages stay in RSS: without this, streaming
    a 640 MiB checkpoint of 16 MiB tensors grew RSS by ~350 MiB; with it, by ~2 tensors.
    """
    trim = getattr(_libc(), "malloc_trim", None) if sys.platform.startswith("linux") else None
    if trim is not None:
        trim(0)
