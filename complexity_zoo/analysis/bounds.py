"""Generalization bounds from a description length in bits.

A hypothesis h described by a prefix-free code of L bits gets prior mass 2^-L; with a union
over ``union_size`` candidates that the user chose among (checkpoints, ε values, ...), the
confidence term is ln(union_size / δ). For the 0-1 error R of h and its training error R̂ on n
examples, with probability at least 1 - δ:

* Occam (Langford & Seeger form; DeMoss et al. 2024): R <= R̂ + sqrt((L ln 2 + ln(k/δ)) / (2n)),
  clipped at 1;
* kl (Chernoff; Lotfi et al. 2022's form for a compression prior): kl(R̂ || R) <= (L ln 2 +
  ln(k/δ)) / n, inverted exactly for R;
* binomial tail inversion (Langford 2005): the largest R with P[Binomial(n, R) <= nR̂] >=
  δ 2^-L / k, which is never looser than the kl form.

L is the self-delimiting length of the code: the description of L itself (Elias gamma,
2⌊log2 L⌋ + 1 bits) precedes the L bits, so the lengths satisfy Kraft's inequality. R̂ must be
the training error of the model that the bits describe; for a lossy code (the Kolmogorov
estimate's coarse-grained weights) that is not the trained model's error.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special

from ..errors import InvalidSettingError


def _check(bits: float, n: int, train_error: float, delta: float, union_size: int) -> None:
    if not (bits >= 0 and n >= 1 and 0 <= train_error <= 1 and 0 < delta < 1 and union_size >= 1):
        raise InvalidSettingError(
            "Bounds need bits >= 0, n >= 1, train_error in [0, 1], delta in (0, 1) and union_size >= 1; got "
            f"bits={bits}, n={n}, train_error={train_error}, delta={delta}, union_size={union_size}."
        )


def prefix_free_bits(bits: float) -> float:
    """Length of a self-delimiting code for an L-bit description: L + 2⌊log2 L⌋ + 1 (L rounded up)."""
    if not bits >= 0:
        raise InvalidSettingError(f"A code length must be >= 0 bits; got {bits}.")
    length = max(math.ceil(bits), 1)
    return float(length + 2 * math.floor(math.log2(length)) + 1)


def _complexity(bits: float, delta: float, union_size: int) -> float:
    """L ln 2 + ln(k / δ), in nats, with L the prefix-free length."""
    return prefix_free_bits(bits) * math.log(2) + math.log(union_size / delta)


def occam_bound(bits: float, n: int, train_error: float, delta: float = 0.05, union_size: int = 1) -> float:
    """R̂ + sqrt((L ln 2 + ln(k/δ)) / (2n)), clipped at 1."""
    _check(bits, n, train_error, delta, union_size)
    return min(1.0, train_error + math.sqrt(_complexity(bits, delta, union_size) / (2 * n)))


def binary_kl(q: float, p: float) -> float:
    """kl(q || p) between Bernoulli(q) and Bernoulli(p), in nats."""
    def term(a: float, b: float) -> float:
        return 0.0 if a == 0 else (math.inf if b == 0 else a * math.log(a / b))

    return term(q, p) + term(1 - q, 1 - p)


def kl_inverse(q: float, c: float, tol: float = 1e-12) -> float:
    """The largest p in [q, 1] with kl(q || p) <= c (bisection; kl is increasing in p there)."""
    if c <= 0:
        return q
    lo, hi = q, 1.0
    if binary_kl(q, hi) <= c:
        return 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if binary_kl(q, mid) <= c:
            lo = mid
        else:
            hi = mid
    return hi  # an upper bound: never below the true inverse


def kl_bound(bits: float, n: int, train_error: float, delta: float = 0.05, union_size: int = 1) -> float:
    """The kl-inverse bound: the largest R with kl(R̂ || R) <= (L ln 2 + ln(k/δ)) / n."""
    _check(bits, n, train_error, delta, union_size)
    return kl_inverse(train_error, _complexity(bits, delta, union_size) / n)


def _log_binomial_cdf(k: int, n: int, p: float) -> float:
    """ln P[Binomial(n, p) <= k], exact in log space (no underflow for tiny tails)."""
    if p <= 0:
        return 0.0
    if p >= 1:
        return 0.0 if k >= n else -math.inf
    j = np.arange(k + 1)
    logpmf = (special.gammaln(n + 1) - special.gammaln(j + 1) - special.gammaln(n - j + 1)
              + j * math.log(p) + (n - j) * math.log1p(-p))
    return float(special.logsumexp(logpmf))


def binomial_bound(bits: float, n: int, train_error: float, delta: float = 0.05, union_size: int = 1,
                   tol: float = 1e-12) -> float:
    """Langford's binomial tail inversion: the largest R with P[Bin(n, R) <= k] >= δ 2^-L / k.

    k = round(n R̂) training errors. Exact, hence at least as tight as the kl form.
    """
    _check(bits, n, train_error, delta, union_size)
    errors = int(round(train_error * n))
    target = -_complexity(bits, delta, union_size)
    if errors >= n:
        return 1.0
    lo, hi = errors / n, 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if _log_binomial_cdf(errors, n, mid) >= target:
            lo = mid
        else:
            hi = mid
    return hi


BOUND_COLUMNS = ["occam_bound", "kl_bound", "binomial_bound", "vacuous"]


def bounds_table(frame: pd.DataFrame, delta: float = 0.05, chance_error: float = 1.0,
                 union_size: int = 1) -> pd.DataFrame:
    """Add the three bounds to rows with columns ``bits``, ``n`` and ``train_error``.

    ``vacuous``: the tightest bound (binomial) is no better than ``chance_error``, the error
    of guessing (1 - 1/C for C classes; 1 when unknown). Rows with a missing value get NaN.
    """
    out = frame.copy()
    values: dict[str, list[float]] = {c: [] for c in BOUND_COLUMNS[:3]}
    for bits, n, err in zip(out["bits"], out["n"], out["train_error"]):
        ok = all(v is not None and np.isfinite(v) for v in (bits, n, err))
        for name, fn in (("occam_bound", occam_bound), ("kl_bound", kl_bound), ("binomial_bound", binomial_bound)):
            values[name].append(fn(bits, int(n), err, delta, union_size) if ok else np.nan)
    out = out.assign(**values)
    out["vacuous"] = [bool(b >= chance_error - 1e-9) if np.isfinite(b) else np.nan for b in out["binomial_bound"]]
    return out
