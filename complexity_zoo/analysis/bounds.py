"""Generalization bounds from a description length in bits.

* Occam (Langford–Seeger form, prior 2^-K): R <= R̂ + sqrt((K ln 2 + ln(1/δ)) / (2n)); the bound
  DeMoss et al. 2024 relate their complexity to.
* PAC-Bayes compression bound (Lotfi et al. 2022): prior mass from the code length L,
  KL = (L + 2 log2 L + extra) ln 2, and kl(R̂ || R) <= (KL + ln(1/δ)) / n solved for R.

Both bound the 0-1 error on the data distribution; a bound no better than guessing says
nothing ("vacuous", as Lotfi et al. use the word).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import InvalidSettingError


def _check(bits: float, n: int, train_error: float, delta: float) -> None:
    if not (bits >= 0 and n >= 1 and 0 <= train_error <= 1 and 0 < delta < 1):
        raise InvalidSettingError(
            f"Bounds need bits >= 0, n >= 1, train_error in [0, 1] and delta in (0, 1); got "
            f"bits={bits}, n={n}, train_error={train_error}, delta={delta}."
        )


def occam_bound(bits: float, n: int, train_error: float, delta: float = 0.05) -> float:
    """R̂ + sqrt((K ln 2 + ln(1/δ)) / (2n)) for a hypothesis described in ``bits``."""
    _check(bits, n, train_error, delta)
    return train_error + math.sqrt((bits * math.log(2) + math.log(1 / delta)) / (2 * n))


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


def compression_bound(bits: float, n: int, train_error: float, delta: float = 0.05,
                      extra_bits: float = 0.0) -> float:
    """Lotfi et al. 2022's kl-inverse bound with prior mass from the code length ``bits``."""
    _check(bits, n, train_error, delta)
    code = bits + (2 * math.log2(bits) if bits > 1 else 0.0) + extra_bits
    return kl_inverse(train_error, (code * math.log(2) + math.log(1 / delta)) / n)


def bounds_table(frame: pd.DataFrame, delta: float = 0.05, chance_error: float = 1.0) -> pd.DataFrame:
    """Add both bounds to rows with columns ``bits``, ``n`` and ``train_error``.

    ``vacuous``: the tighter (kl) bound is no better than ``chance_error``, the error of
    guessing (1 - 1/C for C classes; 1 when unknown).
    """
    out = frame.copy()
    occam, kl = [], []
    for bits, n, err in zip(out["bits"], out["n"], out["train_error"]):
        ok = all(np.isfinite(v) for v in (bits, n, err))
        occam.append(occam_bound(bits, int(n), err, delta) if ok else np.nan)
        kl.append(compression_bound(bits, int(n), err, delta) if ok else np.nan)
    out["occam_bound"] = occam
    out["kl_bound"] = kl
    out["vacuous"] = [bool(b >= chance_error - 1e-9) if np.isfinite(b) else np.nan for b in kl]
    return out
