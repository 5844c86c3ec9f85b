"""Lossless compressed size of the raw weights: the naive baseline of DeMoss et al. 2024."""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable

from ..measure import Measure, MeasureResult
from ..registry import register_measure

# Each at its strongest standard setting, so sizes are reproducible across machines.
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "bz2": lambda b: bz2.compress(b, compresslevel=9),
    "lzma": lambda b: lzma.compress(b, preset=9),
    "zlib": lambda b: zlib.compress(b, level=9),
}


def compressed_bytes(payload: bytes, compressor: str) -> int:
    """Size in bytes of ``payload`` after lossless compression."""
    return len(COMPRESSORS[compressor](payload))


def float32_bytes(tensor) -> bytes:
    """The tensor's values as little-endian float32, the layout of a saved checkpoint."""
    return tensor.detach().cpu().float().numpy().astype("<f4", copy=False).tobytes()


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
