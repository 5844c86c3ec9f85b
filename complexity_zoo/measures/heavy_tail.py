"""Heavy-tailed self-regularization (Martin & Mahoney 2021): power-law exponents of the layers'
empirical spectral densities, and correlation traps.

For each weight matrix W (ndim >= 2, read as (shape[0], -1); transposed so that N >= M), the
ESD is the eigenvalues λ = s² of WᵀW (WeightWatcher's default: not divided by N). The tail is
fitted as WeightWatcher does, with the continuous power-law maximum-likelihood estimate of
Clauset, Shalizi & Newman 2009: for each candidate x_min (every eigenvalue but the largest),
α = 1 + n / Σ_{λ ≥ x_min} ln(λ / x_min) over the n eigenvalues in the tail, and x_min is the one
whose fit has the smallest Kolmogorov–Smirnov distance to the tail. Layers with fewer than
``min_eigenvalues`` eigenvalues are skipped (listed in extras).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import UndefinedMeasureError
from ..measure import Measure, MeasureResult
from ..registry import register_measure

#: The 99th percentile of the Tracy–Widom (β = 1) law: the trap threshold's false-alarm rate is ~1%.
TW1_Q99 = 2.0234


def power_law_fit(eigenvalues: np.ndarray) -> dict[str, float]:
    """Clauset et al.'s continuous power-law fit with x_min by minimum KS distance.

    Returns ``alpha``, ``xmin``, ``n_tail``, ``ks`` (distance) and ``alpha_stderr`` = (α − 1)/√n.
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > 0]
    if len(lam) < 3:
        raise UndefinedMeasureError(f"A power-law fit needs at least 3 positive eigenvalues; got {len(lam)}.")
    best = None
    logs = np.log(lam)
    suffix = np.cumsum(logs[::-1])[::-1]  # Σ_{j >= i} ln λ_j
    for i in range(len(lam) - 1):
        if i > 0 and lam[i] == lam[i - 1]:
            continue
        n = len(lam) - i
        denom = suffix[i] - n * logs[i]
        if denom <= 0:
            continue
        alpha = 1 + n / denom
        tail = lam[i:]
        cdf_fit = 1 - (tail / lam[i]) ** (1 - alpha)
        emp_hi = np.arange(1, n + 1) / n
        emp_lo = np.arange(0, n) / n
        ks = float(max(np.abs(emp_hi - cdf_fit).max(), np.abs(cdf_fit - emp_lo).max()))
        if best is None or ks < best["ks"]:
            best = {"alpha": float(alpha), "xmin": float(lam[i]), "n_tail": n, "ks": ks,
                    "alpha_stderr": float((alpha - 1) / math.sqrt(n))}
    if best is None:
        raise UndefinedMeasureError("No x_min gives a power-law fit (all eigenvalues equal).")
    return best


def layer_spectra(model: nn.Module, min_eigenvalues: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Eigenvalues of WᵀW per layer (N >= M), and the layers skipped as too small."""
    spectra, skipped = {}, []
    for name, p in model.named_parameters():
        if p.ndim < 2:
            continue
        w = p.detach().double().reshape(p.shape[0], -1)
        if min(w.shape) < min_eigenvalues:
            skipped.append(name)
            continue
        spectra[name] = (torch.linalg.svdvals(w) ** 2).cpu().numpy()
    if not spectra:
        raise UndefinedMeasureError(
            f"No weight matrix has at least min_eigenvalues={min_eigenvalues} eigenvalues (smaller "
            f"dimension); skipped {skipped}. Lower min_eigenvalues to fit small layers."
        )
    return spectra, skipped


def trap_threshold(n: int, m: int, variance: float) -> float:
    """Largest eigenvalue of WᵀW expected for an N x M matrix of iid entries with this variance:
    the Marchenko–Pastur edge plus 2.02 Tracy–Widom scales (Johnstone 2001's centering and
    scaling for the real Wishart case; ~1% chance of exceeding it without structure)."""
    a, b = math.sqrt(n - 1), math.sqrt(m)
    mu = (a + b) ** 2
    sigma = (a + b) * (1 / a + 1 / b) ** (1 / 3)
    return variance * (mu + TW1_Q99 * sigma)


class _HeavyTail(Measure):
    min_eigenvalues: int = 10

    def __post_init__(self) -> None:
        if not (isinstance(self.min_eigenvalues, int) and self.min_eigenvalues >= 3):
            raise self._setting_error("min_eigenvalues", "an integer >= 3", self.min_eigenvalues)


@register_measure("alpha")
class Alpha(_HeavyTail):
    """Mean over layers of the power-law exponent α of the ESD of WᵀW (Martin & Mahoney 2021;
    WeightWatcher's ``alpha``). Per-layer α, x_min, tail size, KS distance and α's standard
    error (α − 1)/√n in extras. α ≈ 2–4 is 'well trained'; α < 2 warns of over-fitting
    (Prakash & Martin 2025, 'anti-grokking')."""

    def compute(self, model: nn.Module, data=None) -> MeasureResult:
        spectra, skipped = layer_spectra(model, self.min_eigenvalues)
        fits = {n: power_law_fit(s) for n, s in spectra.items()}
        per = {n: f["alpha"] for n, f in fits.items()}
        return MeasureResult(sum(per.values()) / len(per),
                             extras={"per_layer": per, "fits": fits, "skipped": skipped})


@register_measure("alpha_weighted")
class AlphaWeighted(_HeavyTail):
    """Mean over layers of α · log10 λ_max (Martin, Peng & Mahoney 2021; WeightWatcher's
    ``alpha_weighted``), λ_max the largest eigenvalue of WᵀW."""

    def compute(self, model: nn.Module, data=None) -> MeasureResult:
        spectra, skipped = layer_spectra(model, self.min_eigenvalues)
        per = {n: power_law_fit(s)["alpha"] * math.log10(float(s.max())) for n, s in spectra.items()}
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
    num_shuffles: int = 3
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.num_shuffles, int) and self.num_shuffles >= 1):
            raise self._setting_error("num_shuffles", "a positive integer", self.num_shuffles)

    def compute(self, model: nn.Module, data=None) -> MeasureResult:
        gen = torch.Generator().manual_seed(0 if self.seed is None else self.seed)
        totals, per = [], {}
        skipped = []
        for _ in range(self.num_shuffles):
            total = 0
            for name, p in model.named_parameters():
                if p.ndim < 2:
                    continue
                w = p.detach().double().cpu().reshape(p.shape[0], -1)
                if min(w.shape) < self.min_eigenvalues:
                    skipped.append(name)
                    continue
                shuffled = w.reshape(-1)[torch.randperm(w.numel(), generator=gen)].reshape(w.shape)
                n, m = max(w.shape), min(w.shape)
                top = torch.linalg.svdvals(shuffled) ** 2
                traps = int((top > trap_threshold(n, m, float(w.var(unbiased=False)))).sum())
                per[name] = per.get(name, 0) + traps / self.num_shuffles
                total += traps
            totals.append(total)
        if not per:
            raise UndefinedMeasureError(f"No weight matrix has at least {self.min_eigenvalues} eigenvalues.")
        mean = float(np.mean(totals))
        stderr = float(np.std(totals, ddof=1) / math.sqrt(len(totals))) if len(totals) > 1 else 0.0
        return MeasureResult(mean, stderr=stderr, extras={"per_layer": per, "skipped": sorted(set(skipped))})
