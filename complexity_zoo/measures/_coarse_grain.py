"""Coarse-graining of weights (quantization + SVD truncation) and the lossless coders that size it.

The math of DeMoss et al. 2024 (``apply_svd_truncate_quantize`` in their main.py), as pure
functions over one model's parameters: SVDs are computed once per model and reused for every
candidate (Δ, τ), since the search evaluates many candidates on the same weights.
"""

from __future__ import annotations

import bz2
import lzma
import math
import pickle
import struct
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

CODERS = ("lzma-codes", "bz2-pickle")
# Which factor of W = U S V^T (W reshaped to (shape[0], -1), torch layout) carries the singular
# values: "left" stores Q(U S), Q(V^T); "right" stores Q(U), Q(S V^T) (the authors' layout for a
# Linear layer, whose Flax kernel is W^T); "split" stores Q(U sqrt S), Q(sqrt S V^T).
SIDES = ("left", "right", "split")


@dataclass
class Stored:
    """One stored tensor of a coarse-grained model: integer codes, value = codes * Δ."""

    param: str
    role: str  # "whole", "left" (Q(U_k S_k^a)) or "right" (Q(S_k^(1-a) V_k^T)); a set by the side
    codes: Tensor  # int64, same device as the weights


class CoarseGrainer:
    """Holds a model's parameters and their SVDs; builds coarse-grained copies on demand."""

    def __init__(self, model: nn.Module) -> None:
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        self._svd: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        for name, p in self.params.items():
            if p.ndim >= 2:
                u, s, vh = torch.linalg.svd(p.reshape(p.shape[0], -1).double(), full_matrices=False)
                self._svd[name] = (u, s, vh)

    @property
    def matrices(self) -> list[str]:
        return list(self._svd)

    def ranks(self, tau: float) -> dict[str, int | None]:
        """Rank k of each matrix at threshold τ; None where the factors would not be smaller.

        k = number of leading singular values whose cumulative sum is below τ·Σσ
        (``searchsorted(cumsum(S), τ·sum(S))``, left side; k may be 0), as in the paper.
        """
        out: dict[str, int | None] = {}
        for name, (u, s, vh) in self._svd.items():
            m, n = u.shape[0], vh.shape[1]
            k = int(torch.searchsorted(torch.cumsum(s, 0), tau * s.sum()).item())
            out[name] = k if k * (m + n) < m * n else None
        return out

    def factors(self, name: str, k: int, side: str = "left") -> tuple[Tensor, Tensor]:
        """The rank-k factors (left (m, k), right (k, n)) of a matrix, S placed by ``side``."""
        u, s, vh = self._svd[name]
        if side == "left":
            return u[:, :k] * s[:k], vh[:k]
        if side == "right":
            return u[:, :k], s[:k, None] * vh[:k]
        if side == "split":
            r = s[:k].sqrt()
            return u[:, :k] * r, r[:, None] * vh[:k]
        raise ValueError(f"unknown side {side!r}; the sides are {SIDES}")

    def stored(self, delta: float, ranks: dict[str, int | None],
               sides: dict[str, str] | None = None) -> list[Stored]:
        """The integer codes that a coarse-grained model stores, in parameter order."""
        out = []
        for name, p in self.params.items():
            k = ranks.get(name)
            if k is None:
                out.append(Stored(name, "whole", torch.round(p.double() / delta).long()))
            else:
                left, right = self.factors(name, k, (sides or {}).get(name, "left"))
                out.append(Stored(name, "left", torch.round(left / delta).long()))
                out.append(Stored(name, "right", torch.round(right / delta).long()))
        return out

    def weights(self, delta: float, stored: list[Stored]) -> dict[str, Tensor]:
        """The coarse-grained parameters that the stored codes decode to."""
        out: dict[str, Tensor] = {}
        left: Tensor | None = None
        for st in stored:
            p = self.params[st.param]
            if st.role == "whole":
                out[st.param] = (st.codes.double() * delta).to(p.dtype)
            elif st.role == "left":
                left = st.codes.double() * delta
            else:
                assert left is not None  # "right" always follows its "left"
                out[st.param] = (left @ (st.codes.double() * delta)).reshape(p.shape).to(p.dtype)
        return out


def entropy_bits(stored: list[Stored]) -> float:
    """A cheap model of the coded size: the zeroth-order entropy of each tensor's codes plus
    16 bits per distinct symbol for its table. Used to rank candidates, never reported."""
    bits = 0.0
    for st in stored:
        codes = st.codes.reshape(-1)
        if codes.numel() == 0:
            continue
        counts = torch.bincount(codes - codes.min()).double()
        counts = counts[counts > 0]
        bits += float(-(counts * torch.log2(counts / counts.sum())).sum()) + 16.0 * counts.numel()
    return bits


def _float32_values(st: Stored, delta: float) -> np.ndarray:
    values = (st.codes.double() * delta).float().cpu().numpy()
    return values + np.float32(0.0)  # -0.0 -> +0.0, as the paper maps it


def coded_bits(stored: list[Stored], delta: float, coder: str) -> int:
    """Exact size in bits of everything needed to rebuild the coarse-grained weights.

    ``bz2-pickle`` is the paper's: bzip2 (level 9) of the pickled list of float32 arrays, a
    factored matrix as one array (its two factors raveled and concatenated). ``lzma-codes``
    stores Δ, each tensor's rank and integer width, then the codes in the narrowest signed
    integer type, all compressed by raw LZMA2 (preset 9); the architecture gives the shapes.
    """
    if coder == "bz2-pickle":
        arrays: list[np.ndarray] = []
        for st in stored:
            values = _float32_values(st, delta).ravel()
            if st.role == "right":
                arrays[-1] = np.concatenate([arrays[-1], values])
            else:
                arrays.append(values)
        return 8 * len(bz2.compress(pickle.dumps(arrays), compresslevel=9))
    if coder == "lzma-codes":
        header = [struct.pack("<f", delta)]
        body = []
        for st in stored:
            codes = st.codes.cpu().numpy().ravel()
            dtype = _narrowest_int(codes)
            k = st.codes.shape[1] if st.role == "left" else (0xFFFFFFFF if st.role == "whole" else 0)
            if st.role != "right":
                header.append(struct.pack("<I", k))
            header.append(struct.pack("<B", np.dtype(dtype).itemsize))
            body.append(codes.astype(dtype).tobytes())
        return 8 * len(lzma_raw(b"".join(header + body)))
    raise ValueError(f"unknown coder {coder!r}; the coders are {CODERS}")


def exact_bits(params: dict[str, Tensor], coder: str) -> int:
    """Size in bits of the weights stored exactly (lossless float32), in the same coder."""
    arrays = [p.detach().float().cpu().numpy().ravel() for p in params.values()]
    if coder == "bz2-pickle":
        return 8 * len(bz2.compress(pickle.dumps(arrays), compresslevel=9))
    return 8 * len(lzma_raw(b"".join(a.astype("<f4").tobytes() for a in arrays)))


def lzma_raw(payload: bytes) -> bytes:
    """LZMA2 (preset 9) without a container: the decoder knows the filter, so no header is paid.

    The dictionary is sized to the payload (a larger one changes nothing but the time spent
    allocating it: preset 9's 64 MiB made small inputs 100x slower).
    """
    dict_size = max(1 << 12, 1 << max(len(payload) - 1, 1).bit_length())
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": min(dict_size, 1 << 26)}]
    return lzma.compress(payload, format=lzma.FORMAT_RAW, filters=filters)


def _narrowest_int(codes: np.ndarray) -> type:
    if codes.size == 0:
        return np.int8
    lo, hi = int(codes.min()), int(codes.max())
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return np.int64


def log_grid(lo: float, hi: float, num: int) -> list[float]:
    """``num`` points from ``lo`` to ``hi``, evenly spaced in log scale."""
    if num == 1:
        return [lo]
    step = (math.log(hi) - math.log(lo)) / (num - 1)
    inner = [math.exp(math.log(lo) + i * step) for i in range(1, num - 1)]
    return [lo, *inner, hi]  # the ends exactly, so a range end can be hit exactly
