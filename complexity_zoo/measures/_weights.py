"""Weight matrices and their spectra: the pure functions that measures and regularizers share.

Private (leading underscore) so that the registry's discovery does not import it as a family,
and ``complexity_zoo.regularizers`` can use it without registering any measure.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .. import _context


def weight_matrices(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters with ``ndim >= 2``, each viewed as (shape[0], -1)."""
    return {n: p.reshape(p.shape[0], -1) for n, p in model.named_parameters() if p.ndim >= 2}


def singular_value_entropy(s: Tensor, eps: float = 0.0) -> Tensor:
    """Shannon entropy (nats) of p_i = s_i / sum_j s_j; differentiable.

    ``eps`` is added inside the log as in DeMoss et al.'s regularizer (1e-10); with ``eps=0``
    zero singular values contribute 0 (the limit of p ln p).
    """
    p = s / s.sum(dim=-1, keepdim=True)
    if eps == 0.0:
        return -torch.xlogy(p, p).sum(dim=-1)
    return -(p * torch.log(p + eps)).sum(dim=-1)


# -- streamed tensors: device, precision and memory policy -------------------------------------
#: Elements per float64 chunk when a tensor is reduced piecewise (8 MiB of workspace): a tensor
#: this small or smaller is reduced in one piece, exactly as before streaming existed.
CHUNK = 1 << 20
#: A matrix at least this many times taller than wide has its spectrum taken from its Gram matrix.
TALL_RATIO = 16


def as_matrix(t: Tensor) -> Tensor:
    """A parameter with ``ndim >= 2`` as the matrix (shape[0], -1): a conv kernel (out, in*k*k)."""
    return t.reshape(t.shape[0], -1)


def spectrum_dtype(device: torch.device) -> torch.dtype:
    """The dtype of SVDs: float64 on the CPU, float32 on accelerators; never half precision.

    Measured on this project's 2-core CPU (ResNet-18's 21 matrices): float64 takes about 2x the
    float32 time (2.2 s vs 1.1 s per checkpoint), cheap enough to keep the exact values earlier
    versions gave; float32 moves singular values by up to 3e-6 of the largest (effective rank by
    3e-9, stable rank by 4e-7 relative). GPUs run float64 at 1/2 (H100) to 1/64 (consumer cards)
    of float32's rate, so there float32 is used; bf16/fp16/fp8 weights are upcast first.
    """
    return torch.float64 if torch.device(device).type == "cpu" else torch.float32


def _chunks(t: Tensor):
    """float64 copies of t's consecutive CHUNK-element pieces, in ONE reused buffer.

    A fresh 8 MiB copy per piece would fragment glibc's heap (each small result lands in the
    last freed piece, so the next piece takes new pages): RSS grew by ~1.4x the tensor on a
    147 MiB embedding. Consumers must not keep a piece past the next one.
    """
    flat = t.detach().reshape(-1)
    buf = torch.empty(min(CHUNK, max(flat.numel(), 1)), dtype=torch.float64, device=flat.device)
    for i in range(0, max(flat.numel(), 1), CHUNK):
        piece = flat[i:i + CHUNK]
        yield buf[:piece.numel()].copy_(piece)


def sum_squares(t: Tensor) -> Tensor:
    """Σ t² in float64 (a 0-d tensor on t's device), with at most CHUNK elements upcast at once."""
    return sum(torch.dot(c, c) for c in _chunks(t))


def vector_norm(t: Tensor) -> Tensor:
    """‖t‖₂ in float64 (a 0-d tensor on t's device), with at most CHUNK elements upcast at once."""
    parts = [torch.linalg.vector_norm(c) for c in _chunks(t)]
    return parts[0] if len(parts) == 1 else torch.linalg.vector_norm(torch.stack(parts))


def _gram_eigenvalues(w: Tensor) -> Tensor:
    """Eigenvalues (ascending, float64, on w's device) of WᵀW for a tall W, the Gram matrix
    accumulated in float64 from CHUNK-sized row blocks (memory: M x M float64 plus one block).

    On the CPU the product and the eigensolve go through NumPy's BLAS/LAPACK: it takes ``c.T @ c``
    as one symmetric rank-k update, and on this project's AMD machine it ran 1.8x (product) and
    1.4x (eigvalsh) faster than torch's MKL (benchmarks/spectral_context.py).
    """
    m = w.shape[1]
    rows = max(1, CHUNK // m)
    buf = torch.empty(min(rows, w.shape[0]), m, dtype=torch.float64, device=w.device)  # reused, see _chunks
    cpu = w.device.type == "cpu"
    gram = np.zeros((m, m)) if cpu else torch.zeros(m, m, dtype=torch.float64, device=w.device)
    for i in range(0, w.shape[0], rows):
        piece = w[i:i + rows].detach()
        c = buf[:piece.shape[0]].copy_(piece)
        if cpu:
            c = c.numpy()
            gram += c.T @ c
        else:
            gram.addmm_(c.T, c)
    return torch.from_numpy(np.linalg.eigvalsh(gram)) if cpu else torch.linalg.eigvalsh(gram)


def gram_singular_values(w: Tensor) -> Tensor:
    """Singular values (descending) of a tall matrix (N >= M) as √eig(WᵀW), Gram in float64.

    Accuracy: the eigenvalues carry an absolute error of about p·eps64·s_max² (p a small multiple
    of N + M: forming the product and the eigensolve are both backward stable), so s_i has a
    relative error of about p·eps64·(s_max/s_i)²/2: below 1e-8 for s_i > 1e-3·s_max; more
    accurate than a float32 SVD (eps32·s_max/s_i) whenever s_i > 1e-9·s_max. Singular values
    below √(p·eps64)·s_max (~1e-7·s_max) keep only an absolute accuracy of about that size.
    """
    return _gram_eigenvalues(w).flip(0).clamp_min(0).sqrt()


#: On the CPU a matrix's spectrum comes from its Gram matrix when λ_min / λ_max ≥ GRAM_FLOOR
#: (every s_i ≥ 1e-4·s_max, so each carries a relative error below ~p·eps64·1e8/2 ≈ 1e-7 for
#: p ≤ 2000, and typically ~1e-12); below it (rank-deficient or ill-conditioned) the SVD is taken.
GRAM_FLOOR = 1e-8


def singular_values(w: Tensor) -> Tensor:
    """Singular values (descending) of one matrix, by the dtype and method policy above.

    CPU (float64): from the Gram matrix (:func:`gram_singular_values`; 2-3x faster than the SVD
    for the 768-wide matrices of a GPT-2-style model) when it is well-conditioned (λ_min/λ_max ≥
    :data:`GRAM_FLOOR`), else from LAPACK's SVD, whose error is absolute (about eps64·s_max).
    Matrices at least TALL_RATIO times taller than wide always take the Gram route (memory).

    On CUDA the driver is left to PyTorch's default on purpose: 'gesvdj' (Jacobi, accurate
    for the general matrices here) with a fall-back to 'gesvd' (QR) when Jacobi does not
    converge; 'gesvda' is approximate, and tall matrices take the Gram path instead.
    """
    w = tall(w.detach())
    n, m = w.shape
    if n >= TALL_RATIO * m:
        return gram_singular_values(w)
    if w.device.type == "cpu" and m > 0:
        lam = _gram_eigenvalues(w)
        if lam[0] >= GRAM_FLOOR * lam[-1]:
            return lam.flip(0).clamp_min(0).sqrt()
    return torch.linalg.svdvals(w.to(spectrum_dtype(w.device)))


def tall(w: Tensor) -> Tensor:
    """W, or the view Wᵀ when W is wide: the same singular values, and LAPACK takes them about 4x
    faster from the tall orientation (MKL, CPU: 0.44 s against 1.9 s for a 768 x 3072 float64
    matrix; a wide row-major matrix reaches LAPACK as a wide column-major one)."""
    return w.T if w.shape[0] < w.shape[1] else w


def spectra(matrices, batch_bytes: int = 1 << 30, batch: bool | None = None,
            shared: bool = False) -> dict[str, Tensor]:
    """Singular values of each (name, matrix), in the given order, each on its matrix's device.

    ``shared``: the matrices are the checkpoint's parameters, by their parameter names, so
    their spectra are read from, and added to, the job's :mod:`~complexity_zoo._context` when
    one is open (each matrix's SVD is then taken once per job; the tensors returned are the
    stored ones: read them, never modify them in place).

    Each matrix is released once its spectrum is taken, so memory holds one matrix at a time
    (plus the spectra). On accelerators, same-shaped matrices are stacked, up to
    ``batch_bytes``, into one batched call: every SVD call synchronizes the device with the
    host (PyTorch checks convergence), so batching turns one sync per matrix into one per batch.
    On the CPU batching gains nothing (LAPACK loops over the batch) and would hold matrices.
    ``batch``: None batches on accelerators only; True or False forces it (for tests).
    """
    out: dict[str, Tensor] = {}
    keys: dict[str, tuple] = {}  # name -> context key, for the spectra this call computes
    order: list[str] = []
    groups: dict[tuple, list[tuple[str, Tensor]]] = {}

    def flush(key: tuple) -> None:
        names, mats = zip(*groups.pop(key))
        for name, s in zip(names, torch.linalg.svdvals(torch.stack(mats)).unbind(0)):
            out[name] = s

    ctx = _context.current() if shared else None
    kind = _context.spectrum_kind()
    for name, w in matrices:
        order.append(name)
        if ctx is not None:
            key = _context.matrix_key(name, w)
            known = ctx.lookup(kind, key)
            if known is not None:
                out[name] = known
                continue
            keys[name] = key
        n, m = w.shape
        batched = w.device.type != "cpu" if batch is None else batch
        if not batched or max(n, m) >= TALL_RATIO * min(n, m):
            out[name] = singular_values(w)
            continue
        w = tall(w.detach()).to(spectrum_dtype(w.device))
        key = (tuple(w.shape), w.dtype, w.device)
        groups.setdefault(key, []).append((name, w))
        if len(groups[key]) * w.numel() * w.element_size() >= batch_bytes:
            flush(key)
    for key in list(groups):
        flush(key)
    for name, key in keys.items():
        ctx.store(kind, key, out[name])
    return {name: out[name] for name in order}
