"""Heavy-tailed self-regularization (Martin & Mahoney 2021): power-law exponents of the layers'
empirical spectral densities, and correlation traps.

For each weight matrix W (ndim >= 2, read as (shape[0], -1); transposed so that N >= M), the
ESD is the eigenvalues λ = s² of WᵀW (WeightWatcher's default: not divided by N). The tail is
fitted with the continuous power-law maximum-likelihood estimate of Clauset, Shalizi & Newman
2009: for each candidate x_min (every eigenvalue but the largest), α = 1 + n / Σ_{λ ≥ x_min}
ln(λ / x_min) over the n eigenvalues in the tail, and x_min is the one whose fit is closest to
the tail by a Kolmogorov–Smirnov statistic. Layers with fewer than ``min_eigenvalues``
eigenvalues are skipped (listed in extras).

Two named conventions choose what WeightWatcher 0.7's ``analyze()`` does instead:

- ``xmin_statistic``: ``"ks"`` (default; Clauset et al.'s two-sided KS distance, distinct
  eigenvalues as candidates) or ``"weightwatcher"``: WeightWatcher's one-sided distance
  max |F_fit(λ_(i)) − i/n| (i = 0..n−1), every sorted eigenvalue a candidate (ties included),
  α ≤ 1 scored 1, eigenvalues ≤ 1e-5 dropped first. WeightWatcher switches to another estimator
  below 20 eigenvalues; "weightwatcher" skips such layers (listed) rather than imitate it.
- ``conv_reading``: ``"matrix"`` (default; a kernel (out, in, *k) read as (out, in·∏k)) or
  ``"per_position"``: one (out, in) slice per kernel position, the slices' eigenvalues pooled
  into one ESD (WeightWatcher's reading of Conv2d; its conv2d_norm, which halves the slices'
  eigenvalues, is applied too: it changes no α, only the 1e-5 floor and ``alpha_weighted``'s λ_max).

With both set to WeightWatcher's, ``alpha`` and ``alpha_weighted`` equal the means of
``analyze()``'s per-layer values to 1e-6 on Student-t, trained and convolutional layers
(tests/test_weightwatcher_reference.py, WeightWatcher 0.7.7 on the CPU, where it takes SciPy's
float64 SVD).
WeightWatcher does not fold BatchNorm, and neither do these measures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from .. import _context
from .._settings import one_of
from ..errors import UndefinedMeasureError
from ..measure import Convention, Measure, MeasureResult
from ..registry import register_measure
from ._weights import as_matrix, singular_values, spectra

#: The 99th percentile of the Tracy–Widom (β = 1) law: the trap threshold's false-alarm rate is ~1%.
TW1_Q99 = 2.0234


#: WeightWatcher's floor on eigenvalues (EVALS_THRESH) and the size below which it fits otherwise.
WW_EVALS_THRESH = 1e-5
WW_SMALL_N = 20


def power_law_fit(eigenvalues: np.ndarray, xmin_statistic: str = "ks") -> dict[str, float]:
    """Clauset et al.'s continuous power-law fit with x_min by minimum KS distance (``"ks"``, or
    WeightWatcher's one-sided variant, ``"weightwatcher"``: see the module docstring).

    Returns ``alpha``, ``xmin``, ``n_tail``, ``ks`` (distance) and ``alpha_stderr`` = (α − 1)/√n.
    """
    if xmin_statistic == "weightwatcher":
        return _ww_fit(eigenvalues)
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > 0]
    if len(lam) < 3:
        raise UndefinedMeasureError(f"A power-law fit needs at least 3 positive eigenvalues; got {len(lam)}.")
    logs = np.log(lam)
    suffix = np.cumsum(logs[::-1])[::-1]  # Σ_{j >= i} ln λ_j
    i = np.arange(len(lam) - 1)
    n = len(lam) - i
    denom = suffix[:-1] - n * logs[:-1]
    keep = (denom > 0) & np.r_[True, lam[1:-1] != lam[:-2]]  # a fit, and the first of equal candidates
    i, n, alpha = i[keep], n[keep], 1 + n[keep] / denom[keep]
    if len(i) == 0:
        raise UndefinedMeasureError("No x_min gives a power-law fit (all eigenvalues equal).")
    ks = np.empty(len(i))
    rows = max(1, KS_BLOCK // len(lam))
    for b in range(0, len(i), rows):  # candidates x tail positions, KS_BLOCK at a time
        ks[b:b + rows] = _ks_distances(lam, i[b:b + rows], n[b:b + rows], alpha[b:b + rows])
    k = int(np.argmin(np.where(np.isnan(ks), np.inf, ks)))  # the first smallest, as a scan with a strict '<' keeps
    return {"alpha": float(alpha[k]), "xmin": float(lam[i[k]]), "n_tail": int(n[k]), "ks": float(ks[k]),
            "alpha_stderr": float((alpha[k] - 1) / math.sqrt(n[k]))}


#: Elements of the (candidate x_min, eigenvalue) table taken at once by power_law_fit (8 MiB each).
KS_BLOCK = 1 << 20


def _ks_distances(lam: np.ndarray, i: np.ndarray, n: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """KS distance between each candidate's fitted CDF and the empirical CDF of its tail λ[i:]
    (the same float operations per element as a loop over candidates would do)."""
    j = np.arange(len(lam))
    k = j[None, :] - i[:, None]  # position in the tail; < 0 before x_min
    with np.errstate(all="ignore"):
        cdf = 1 - (lam[None, :] / lam[i][:, None]) ** (1 - alpha[:, None])
        hi = np.abs((k + 1) / n[:, None] - cdf)
        lo = np.abs(cdf - k / n[:, None])
    d = np.where(k >= 0, np.maximum(hi, lo), -np.inf)
    return d.max(axis=1)


def shared_fit(eigenvalues: np.ndarray, xmin_statistic: str) -> dict[str, float]:
    """:func:`power_law_fit`, shared within a job (``alpha`` and ``alpha_weighted`` fit the same
    layers): keyed by the eigenvalues' bytes, so a measure gets the fit of exactly its input."""
    ctx = _context.current()
    if ctx is None:
        return power_law_fit(eigenvalues, xmin_statistic)
    lam = np.ascontiguousarray(eigenvalues, dtype=np.float64)
    key = (xmin_statistic, lam.shape, hashlib.blake2b(lam.tobytes()).digest())
    return dict(ctx.get("power-law fit", key, lambda: power_law_fit(lam, xmin_statistic)))


def _ww_fit(eigenvalues: np.ndarray) -> dict[str, float]:
    """WeightWatcher 0.7's x_min choice (``WWFit.fit_power_law_standard``), restated."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > WW_EVALS_THRESH]
    if len(lam) < WW_SMALL_N:
        raise UndefinedMeasureError(
            f"WeightWatcher's fit needs at least {WW_SMALL_N} eigenvalues above {WW_EVALS_THRESH} (it uses "
            f"another estimator below); got {len(lam)}.")
    logs = np.log(lam)
    suffix = np.cumsum(logs[::-1])[::-1]
    n = len(lam) - np.arange(len(lam) - 1)
    with np.errstate(divide="ignore"):
        alphas = 1 + n / (suffix[:-1] - n * logs[:-1])
    ds = np.ones(len(alphas))
    for i in np.flatnonzero(alphas > 1):
        tail = lam[i:]
        ds[i] = np.abs(1 - (tail / lam[i]) ** (1 - alphas[i]) - np.arange(n[i]) / n[i]).max()
    i = int(np.argmin(ds))
    return {"alpha": float(alphas[i]), "xmin": float(lam[i]), "n_tail": int(n[i]), "ks": float(ds[i]),
            "alpha_stderr": float((alphas[i] - 1) / math.sqrt(n[i]))}


def layer_spectra(
    tensors: nn.Module | Iterable[tuple[str, Tensor]], min_eigenvalues: int, per_position: bool = False
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Eigenvalues of WᵀW per layer (N >= M), and the layers skipped as too small.

    Spectra follow :func:`~._weights.singular_values` (float64 on the CPU, float32 on GPUs);
    all of them reach the host in one transfer. ``per_position``: a kernel with more than two
    dims gives the pooled eigenvalues of its per-position (out, in) slices, halved
    (WeightWatcher's reading and its conv2d_norm on slices).
    """
    if isinstance(tensors, nn.Module):
        tensors = ((n, p.detach()) for n, p in tensors.named_parameters())
    skipped: list[str] = []

    def big_enough():
        for name, t in tensors:
            if t.ndim < 2:
                continue
            if per_position and t.ndim > 2:
                if min(t.shape[:2]) * math.prod(t.shape[2:]) < min_eigenvalues:
                    skipped.append(name)
                    continue
                scale = math.sqrt(0.5)  # WeightWatcher's conv2d_norm on a slice (measured: λ halved)
                for i in range(math.prod(t.shape[2:])):
                    yield (name, scale, i), t.reshape(t.shape[0], t.shape[1], -1)[:, :, i]
                continue
            w = as_matrix(t)
            if min(w.shape) < min_eigenvalues:
                skipped.append(name)
                continue
            yield name, w

    with torch.no_grad():
        spec = spectra(big_enough(), shared=True)
        if per_position:  # pool each kernel's slices, rescaled by WeightWatcher's conv2d_norm √(k·k/2)
            pooled: dict[str, list[Tensor]] = {}
            for key, sv in spec.items():
                name, scale = (key[0], key[1]) if isinstance(key, tuple) else (key, 1.0)
                pooled.setdefault(name, []).append(sv * scale)
            spec = {n: torch.cat(parts) for n, parts in pooled.items()}
    if not spec:
        raise UndefinedMeasureError(
            f"No weight matrix has at least min_eigenvalues={min_eigenvalues} eigenvalues (smaller "
            f"dimension); skipped {skipped}. Lower min_eigenvalues to fit small layers."
        )
    flat = torch.cat([s.double() ** 2 for s in spec.values()]).cpu().numpy()
    parts = np.split(flat, np.cumsum([len(s) for s in spec.values()])[:-1])
    return dict(zip(spec, parts)), skipped


def trap_threshold(n: int, m: int, variance: float) -> float:
    """Largest eigenvalue of WᵀW expected for an N x M matrix of iid entries with this variance:
    the Marchenko–Pastur edge plus 2.02 Tracy–Widom scales (Johnstone 2001's centering and
    scaling for the real Wishart case; ~1% chance of exceeding it without structure)."""
    a, b = math.sqrt(n - 1), math.sqrt(m)
    mu = (a + b) ** 2
    sigma = (a + b) * (1 / a + 1 / b) ** (1 / 3)
    return variance * (mu + TW1_Q99 * sigma)


WW_CONVENTION = Convention(
    paper="Martin & Mahoney 2021; Martin, Peng & Mahoney 2021", code="weightwatcher 0.7 (PyPI), analyze()",
    default="xmin_statistic='ks' (two-sided KS), conv_reading='matrix' ((out, in*k*k))",
    switch="xmin_statistic='weightwatcher', conv_reading='per_position'",
    agreement="per-layer and mean equal to weightwatcher 0.7.7 analyze() to 1e-6 (3 Student-t nets with a "
              "conv layer, a trained MLP); not folded, as weightwatcher does not fold BatchNorm",
    tests=("tests/test_weightwatcher_reference.py::test_alpha_equals_weightwatcher_on_student_t_layers",
           "tests/test_weightwatcher_reference.py::test_alpha_equals_weightwatcher_on_a_trained_mlp"))


class _HeavyTail(Measure):
    tensors_only = True
    min_eigenvalues: int = 10

    def __post_init__(self) -> None:
        if not (isinstance(self.min_eigenvalues, int) and self.min_eigenvalues >= 3):
            raise self._setting_error("min_eigenvalues", "an integer >= 3", self.min_eigenvalues)


class _Fitted(_HeavyTail):
    """A power-law fit per layer, under the named conventions of the module docstring."""

    limits = {"xmin_statistic": one_of("ks", "weightwatcher"), "conv_reading": one_of("matrix", "per_position")}
    xmin_statistic: str = "ks"
    conv_reading: str = "matrix"

    def fits(self, tensors) -> tuple[dict[str, np.ndarray], dict[str, dict], list[str]]:
        """Per layer: eigenvalues and fit; the layers skipped (too small for the fit)."""
        spectra, skipped = layer_spectra(tensors, self.min_eigenvalues, self.conv_reading == "per_position")
        fits = {}
        for n, s in spectra.items():
            try:
                fits[n] = shared_fit(s, self.xmin_statistic)
            except UndefinedMeasureError:
                if self.xmin_statistic != "weightwatcher":
                    raise
                skipped.append(n)
        if not fits:
            raise UndefinedMeasureError(f"No layer is large enough for WeightWatcher's fit; skipped {skipped}.")
        return {n: spectra[n] for n in fits}, fits, skipped


@register_measure("alpha")
class Alpha(_Fitted):
    """Mean over layers of the power-law exponent α of the ESD of WᵀW (Martin & Mahoney 2021;
    WeightWatcher's ``alpha``, which it equals with ``xmin_statistic="weightwatcher"`` and
    ``conv_reading="per_position"``; the defaults are Clauset et al.'s fit on (out, in·k·k)).
    Per-layer α, x_min, tail size, KS distance and α's standard error (α − 1)/√n in extras.
    α ≈ 2–4 is 'well trained'; α < 2 warns of over-fitting (Prakash & Martin 2025, 'anti-grokking')."""

    version = 2  # 2: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = WW_CONVENTION

    def compute_tensors(self, tensors, init=None) -> MeasureResult:
        _, fits, skipped = self.fits(tensors)
        per = {n: f["alpha"] for n, f in fits.items()}
        return MeasureResult(sum(per.values()) / len(per),
                             extras={"per_layer": per, "fits": fits, "skipped": skipped})


@register_measure("alpha_weighted")
class AlphaWeighted(_Fitted):
    """Mean over layers of α · log10 λ_max (Martin, Peng & Mahoney 2021; WeightWatcher's
    ``alpha_weighted``), λ_max the largest eigenvalue of WᵀW."""

    version = 2  # 2: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = WW_CONVENTION

    def compute_tensors(self, tensors, init=None) -> MeasureResult:
        spectra, fits, skipped = self.fits(tensors)
        per = {n: fits[n]["alpha"] * math.log10(float(s.max())) for n, s in spectra.items()}
        return MeasureResult(sum(per.values()) / len(per), extras={"per_layer": per, "skipped": skipped})


@register_measure("correlation_traps")
class CorrelationTraps(_HeavyTail):
    """Number of correlation traps: eigenvalues of the element-shuffled weight matrices' WᵀW
    beyond the Marchenko–Pastur edge plus 2.02 Tracy–Widom scales (see :func:`trap_threshold`).

    Shuffling the entries destroys correlations, so a randomized ESD should be Marchenko–Pastur;
    what sticks out comes from a few very large entries (WeightWatcher's ``rand_num_spikes``;
    Martin & Mahoney 2021; Prakash & Martin 2025 report traps before late collapse). Summed
    over layers, averaged over ``num_shuffles`` shuffles (stderr across shuffles).
    """

    stochastic = True
    version = 3  # 3: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)
    num_shuffles: int = 3
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.num_shuffles, int) and self.num_shuffles >= 1):
            raise self._setting_error("num_shuffles", "a positive integer", self.num_shuffles)

    def compute_tensors(self, tensors, init=None) -> MeasureResult:
        # Each tensor is read once, so the shuffles run per layer (version 2; version 1 ran the
        # layers per shuffle, drawing the permutations in another order).
        gen = torch.Generator().manual_seed(0 if self.seed is None else self.seed)
        counts: dict[str, list[Tensor]] = {}
        skipped = []
        with torch.no_grad():
            for name, t in tensors:
                if t.ndim < 2:
                    continue
                w = as_matrix(t).double()
                if min(w.shape) < self.min_eigenvalues:
                    skipped.append(name)
                    continue
                n, m = max(w.shape), min(w.shape)
                threshold = w.var(unbiased=False) * (trap_threshold(n, m, 1.0))
                counts[name] = []
                for _ in range(self.num_shuffles):
                    perm = torch.randperm(w.numel(), generator=gen).to(w.device)  # CPU draws: same on any device
                    shuffled = w.reshape(-1)[perm].reshape(w.shape)
                    counts[name].append((singular_values(shuffled).double() ** 2 > threshold).sum())
        if not counts:
            raise UndefinedMeasureError(f"No weight matrix has at least {self.min_eigenvalues} eigenvalues.")
        table = np.asarray(torch.stack([torch.stack(c) for c in counts.values()]).cpu().tolist(), dtype=float)
        per = dict(zip(counts, (table.sum(axis=1) / self.num_shuffles).tolist()))
        totals = table.sum(axis=0)
        mean = float(np.mean(totals))
        stderr = float(np.std(totals, ddof=1) / math.sqrt(len(totals))) if len(totals) > 1 else 0.0
        return MeasureResult(mean, stderr=stderr, extras={"per_layer": per, "skipped": sorted(set(skipped))})
