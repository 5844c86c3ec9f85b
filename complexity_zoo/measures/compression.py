"""Lossless compressed size of the raw weights: the naive baseline of DeMoss et al. 2024."""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Any

from ..measure import Measure, MeasureResult
from ..registry import register_measure

# Each at its strongest standard setting, so sizes are reproducible across machines. Streaming
# compressor objects: fed piece by piece they write the same bytes as the one-shot functions
# (tested), so a tensor is never copied whole into a bytes object.
COMPRESSORS: dict[str, Callable[[], Any]] = {
    "bz2": lambda: bz2.BZ2Compressor(9),
    "lzma": lambda: lzma.LZMACompressor(preset=9),
    "zlib": lambda: zlib.compressobj(9),
}
PIECE = 1 << 22  # bytes handed to the compressor at a time


def compressed_bytes(payload: bytes | memoryview, compressor: str) -> int:
    """Size in bytes of ``payload`` after lossless compression, fed in pieces."""
    c = COMPRESSORS[compressor]()
    view = memoryview(payload).cast("B")
    size = sum(len(c.compress(view[i:i + PIECE])) for i in range(0, len(view), PIECE))
    return size + len(c.flush())


def float32_bytes(tensor) -> memoryview:
    """The tensor's values as little-endian float32, the layout of a saved checkpoint (a view
    of the host tensor's memory when it is float32 already: no copy)."""
    array = tensor.detach().cpu().float().contiguous().numpy()
    return memoryview(array.astype("<f4", copy=False)).cast("B")


def naive_bits(params: dict, compressor: str = "bz2") -> dict[str, int]:
    """Bits of each raw float32 tensor compressed on its own (the paper's naive baseline)."""
    return {name: 8 * compressed_bytes(float32_bytes(p), compressor) for name, p in params.items()}


@register_measure("naive_compression")
class NaiveCompression(Measure):
    """Compressed size of each raw float32 parameter tensor, summed, in bits.

    DeMoss et al. 2024's naive baseline ('bzip2 of each tensor separately'), against which
    their coarse-grained estimate is 30-40x smaller. ``compressor``: bz2 (the paper's), lzma
    or zlib, each at maximum level.
    """

    unit = "bits"
    lossless = True
    compressor: str = "bz2"

    def __post_init__(self) -> None:
        if self.compressor not in COMPRESSORS:
            raise self._setting_error("compressor", f"one of {sorted(COMPRESSORS)}", self.compressor)

    tensors_only = True

    def compute_tensors(self, tensors, init=None) -> MeasureResult:
        per, raw = {}, 0
        for name, t in tensors:  # compression runs on the host: one tensor's bytes at a time
            per[name] = 8 * compressed_bytes(float32_bytes(t), self.compressor)
            raw += 8 * 4 * t.numel()
        return MeasureResult(float(sum(per.values())), extras={"per_tensor_bits": per, "raw_bits": raw})
