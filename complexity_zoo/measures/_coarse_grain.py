"""Coarse-graining of weights (quantization + SVD truncation) and the lossless coders that size it.

The math of DeMoss et al. 2024 (``apply_svd_truncate_quantize`` in their main.py), as pure
functions over one model's parameters: SVDs are computed once per model and reused for every
candidate (Δ, τ), since the search evaluates many candidates on the same weights.
"""

from __future__ import annotations

import bz2
import lzma
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ._kolmogorov_pickle import tree_pickle

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


@dataclass
class FlaxLayout:
    """How the authors' Flax model would hold these parameters: key paths and kernel layout.

    Flax names a Linear weight ``kernel`` and stores it as W^T (in, out), an Embedding's
    ``embedding`` and a LayerNorm's ``scale`` as in torch, all under a ``params`` root; its
    pytree flattens dicts with keys sorted. Module paths are torch's, except for the modular
    task's models, which get the names of the authors' own Flax modules (their ``MLP`` and
    ``TransformerDecoder``) so that their pickled tree structure is reproduced exactly.
    """

    paths: dict[str, tuple[str, ...]]
    kernels: set[str]

    @property
    def order(self) -> list[str]:
        return sorted(self.paths, key=self.paths.__getitem__)

    @classmethod
    def of(cls, model: nn.Module) -> FlaxLayout:
        paths: dict[str, tuple[str, ...]] = {}
        kernels: set[str] = set()
        rename = _AUTHORS_NAMES.get(type(model).__name__, {})
        for name, _ in model.named_parameters():
            path, _, leaf = name.rpartition(".")
            module = model.get_submodule(path) if path else model
            if leaf == "weight":
                if isinstance(module, nn.Linear):
                    leaf = "kernel"
                    kernels.add(name)
                elif isinstance(module, nn.Embedding):
                    leaf = "embedding"
                elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
                    leaf = "scale"
            parts: list[str] = []
            lists = rename.get("#lists", ())
            for seg in path.split(".") if path else []:
                if seg.isdigit() and parts and parts[-1] in lists:  # Flax names list members name_i
                    parts[-1] = f"{rename[parts[-1]]}_{seg}"
                else:
                    parts.extend([seg] if seg in lists else rename.get(seg, seg).split("."))
            paths[name] = ("params", *parts, leaf)
        return cls(paths, kernels)


# Torch module names of complexity_zoo.tasks' modular models -> the authors' Flax names (model.py).
_AUTHORS_NAMES: dict[str, dict] = {
    "ModularMLP": {"embed": "embedding", "hidden": "mlp_layers_0", "out": "output_layer"},
    "ModularTransformer": {
        "#lists": ("blocks",), "blocks": "decoder_layers", "embed": "embedding",
        "pos_embed": "positional_embedding", "unembed": "output_layer", "attn": "self_attn",
        "q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj", "ff1": "ffn.layer1", "ff2": "ffn.layer2"},
}


class CoarseGrainer:
    """Holds a model's parameters and their SVDs; builds coarse-grained copies on demand.

    ``paper_numerics``: the authors' arithmetic instead of float64: each matrix decomposed in
    float32 as their Flax tree holds it (a Linear weight as W^T) by LAPACK gesdd through SciPy,
    the very routine JAX calls on CPU (bit-identical factors), ranks from float32 cumulative
    sums, and codes round(x / Δ) computed in float32 as their ``quantize`` does.
    """

    def __init__(self, model: nn.Module, paper_numerics: bool = False) -> None:
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.layout = FlaxLayout.of(model)
        self.paper_numerics = paper_numerics
        self._svd: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self._cumsum: dict[str, tuple] = {}  # host copies: ranks(τ) needs no device sync
        for name, p in self.params.items():
            if p.ndim >= 2:
                w = p.reshape(p.shape[0], -1)
                if paper_numerics:
                    u, s, vh = _paper_svd(w, name in self.layout.kernels)
                else:
                    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
                self._svd[name] = (u, s, vh)
                host = s.cpu().numpy()
                self._cumsum[name] = (np.cumsum(host), host.sum(), u.shape[0], vh.shape[1])

    @property
    def matrices(self) -> list[str]:
        return list(self._svd)

    def ranks(self, tau: float) -> dict[str, int | None]:
        """Rank k of each matrix at threshold τ; None where the factors would not be smaller.

        k = number of leading singular values whose cumulative sum is below τ·Σσ
        (``searchsorted(cumsum(S), τ·sum(S))``, left side; k may be 0), as in the paper.
        """
        out: dict[str, int | None] = {}
        for name, (cumsum, total, m, n) in self._cumsum.items():
            k = int(np.searchsorted(cumsum, total.dtype.type(tau) * total, side="left"))
            out[name] = k if k * (m + n) < m * n else None
        return out

    def paper_sides(self) -> dict[str, str]:
        """The authors' factor layout: S on the input side of a Linear weight (their kernel's
        left factor), on the row side of anything else."""
        return {name: "right" if name in self.layout.kernels else "left" for name in self._svd}

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

    def best_side(self, name: str, k: int, delta: float) -> str:
        """The side of S whose quantized rank-k factors rebuild the matrix most closely
        (Frobenius norm; ties go to the first of SIDES). Needs no data, so it is cheap."""
        w = self.params[name].reshape(self.params[name].shape[0], -1).double()
        best, best_err = SIDES[0], math.inf
        for side in SIDES:
            left, right = self.factors(name, k, side)
            err = float(torch.linalg.norm(w - (torch.round(left / delta) @ torch.round(right / delta)) * delta ** 2))
            if err < best_err:
                best, best_err = side, err
        return best

    def stored(self, delta: float, ranks: dict[str, int | None],
               sides: dict[str, str] | None = None) -> list[Stored]:
        """The integer codes that a coarse-grained model stores, in parameter order."""
        out = []
        codes = self._codes(delta)
        for name, p in self.params.items():
            k = ranks.get(name)
            if k is None:
                x = p.float() if self.paper_numerics else p.double()
                out.append(Stored(name, "whole", codes(x)))
            else:
                left, right = self.factors(name, k, (sides or {}).get(name, "left"))
                out.append(Stored(name, "left", codes(left)))
                out.append(Stored(name, "right", codes(right)))
        return out

    def _codes(self, delta: float):
        """round(x / Δ), half to even. With ``paper_numerics`` as XLA computes their x / Δ on
        float32: x times the float32 reciprocal 1/Δ (not a correctly rounded division; the
        two differ in the last bit, which flips a code where x / Δ is within it of k + 1/2)."""
        if not self.paper_numerics:
            return lambda x: torch.round(x / delta).long()
        recip = float(np.float32(1.0) / np.float32(delta))  # exact in float32
        return lambda x: torch.round(x.float() * recip).long()

    def weights(self, delta: float, stored: list[Stored]) -> dict[str, Tensor]:
        """The coarse-grained parameters that the stored codes decode to."""
        out: dict[str, Tensor] = {}
        left: Tensor | None = None
        dtype = torch.float32 if self.paper_numerics else torch.float64
        for st in stored:
            p = self.params[st.param]
            if st.role == "whole":
                out[st.param] = (st.codes.to(dtype) * delta).to(p.dtype)
            elif st.role == "left":
                left = st.codes.to(dtype) * delta
            else:
                assert left is not None  # "right" always follows its "left"
                out[st.param] = (left @ (st.codes.to(dtype) * delta)).reshape(p.shape).to(p.dtype)
        return out


def _paper_svd(w: Tensor, kernel: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Float32 SVD of ``w`` as the authors' JAX code computes it, in torch orientation.

    They decompose the Flax array (W^T for a Linear weight): K = U S V^T, so W = V S U^T.
    """
    import scipy.linalg

    a = w.detach().float().cpu().numpy()
    u, s, vt = scipy.linalg.svd(a.T if kernel else a, full_matrices=False, lapack_driver="gesdd")
    if kernel:
        u, vt = vt.T, u.T
    return tuple(torch.from_numpy(np.ascontiguousarray(x)).to(w.device) for x in (u, s, vt))


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
    # round(x / Δ) * Δ in float32, as their quantize() computes it; -0.0 -> +0.0 as they map it
    values = st.codes.cpu().numpy().astype(np.float32) * np.float32(delta)
    return values + np.float32(0.0)


def _paper_tree(stored: list[Stored], delta: float | None, layout: FlaxLayout | None,
                params: dict[str, Tensor] | None = None) -> dict:
    """The tree the authors pickle: their Flax parameter dict, each leaf raveled float32, a
    truncated matrix a 2-tuple of factors (their ``components=True``).

    A Linear weight is their (in, out) kernel, so a factored kernel is [right^T, left^T] in
    torch terms. ``params`` instead of ``stored``: the exact float32 weights in the same layout.
    ``layout`` None: torch's names, one level.
    """
    by_param: dict[str, list[np.ndarray]] = {}
    if params is not None:
        for name, p in params.items():
            by_param[name] = [p.detach().float().cpu().numpy()]
    else:
        for st in stored:
            by_param.setdefault(st.param, []).append(_float32_values(st, delta))
    tree: dict = {}
    for name, parts in by_param.items():
        path = layout.paths[name] if layout is not None else (name,)
        if layout is not None and name in layout.kernels:
            parts = [a.T for a in reversed(parts)]
        leaves = [np.ascontiguousarray(a).ravel() for a in parts]
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaves[0] if len(leaves) == 1 else tuple(leaves)
    return tree


def coded_bits(stored: list[Stored], delta: float, coder: str, layout: FlaxLayout | None = None) -> int:
    """Exact size in bits of everything needed to rebuild the coarse-grained weights.

    ``bz2-pickle`` is the paper's: bzip2 (level 9) of their pickle of the flattened parameter
    tree, JAX array wrappers and tree structure included (``_paper_tree``, ``tree_pickle``).
    ``lzma-codes`` stores Δ, each tensor's rank and integer width, then the codes in the
    narrowest signed integer type, all compressed by raw LZMA2 (preset 9); the architecture
    gives the shapes.
    """
    if coder == "bz2-pickle":
        return 8 * len(bz2.compress(tree_pickle(_paper_tree(stored, delta, layout)), compresslevel=9))
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


def exact_bits(params: dict[str, Tensor], coder: str, layout: FlaxLayout | None = None) -> int:
    """Size in bits of the weights stored exactly (lossless float32), in the same coder."""
    if coder == "bz2-pickle":
        return 8 * len(bz2.compress(tree_pickle(_paper_tree([], None, layout, params=params)), compresslevel=9))
    arrays = [p.detach().float().cpu().numpy().ravel() for p in params.values()]
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
