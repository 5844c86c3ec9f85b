"""The local learning coefficient (LLC), estimated by SGLD around a checkpoint.

λ̂(w*) = n_beta (E_w[L(w)] - L(w*)) with w drawn from the tempered, localized posterior
∝ exp(-n_beta L(w) - γ/2 |w - w*|²) (Lau et al. 2023, 'The Local Learning Coefficient';
devinterp is the reference implementation). Its value depends strongly on lr and γ:
calibrate with :func:`calibrate_llc`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from torch import nn

from .._settings import above, at_least
from ..data import Data
from ..errors import NonFiniteError
from ..measure import Measure, MeasureResult
from ..registry import register_measure
from ._mcmc import ess_bulk, rhat
from ._sgld import sample

BACKENDS = ("torch", "devinterp")


def default_nbeta(batch_size: int) -> float:
    """devinterp's default inverse temperature: b / ln b."""
    return batch_size / math.log(batch_size)


def llc_from_trace(losses: np.ndarray, init_loss: float, n_beta: float, burnin: int,
                   diverged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-chain LLC from minibatch loss traces (chain, step), dropping ``burnin`` steps;
    diverged chains are NaN."""
    per_chain = n_beta * (losses[:, burnin:].mean(axis=1) - init_loss)
    per_chain[diverged] = np.nan
    return per_chain, losses[~diverged, burnin:]


@register_measure("llc")
class LocalLearningCoefficient(Measure):
    """Local learning coefficient by SGLD (Lau et al. 2023; settings named as in devinterp).

    ``n_beta`` defaults to devinterp's batch_size / ln(batch_size). ``localization`` is γ. The
    estimate averages the minibatch losses after ``num_burnin_steps`` (``include_burnin=True``
    keeps them, devinterp 2.x's convention). L(w*) is the mean loss over the whole training
    set (``init_loss="full"``) or over the sampler's first minibatch (``"first_batch"``).
    Returns the mean over chains and its standard error; extras hold per-chain values, loss
    traces (chain x step) and diverged chains; diagnostics ``ess_bulk`` and ``r_hat`` of the
    post-burn-in traces (ArviZ's definitions). Defaults are devinterp's example values.
    """

    needs_data = True
    stochastic = True
    version = 2  # 2: per-chain noise generators (a seed's numbers differ from version 1's)
    # The sampler runs num_burnin_steps + num_draws steps, so burn-in may be longer than the draws.
    limits = {"num_burnin_steps": at_least(0), "n_beta": above(0), "weight_decay": at_least(0),
              "localization": at_least(0), "lr": above(0)}
    lr: float = 1e-4
    n_beta: float | None = None
    localization: float = 100.0
    weight_decay: float = 0.0
    num_chains: int = 4
    num_draws: int = 200
    num_burnin_steps: int = 0
    batch_size: int = 256
    include_burnin: bool = False
    init_loss: str = "full"
    backend: str = "torch"
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("lr", "localization"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0 and (name != "lr" or v > 0)):
                raise self._setting_error(name, "a non-negative number (lr > 0)", v)
        for name in ("num_chains", "num_draws", "batch_size"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise self._setting_error(name, "a positive integer", v)
        if self.backend not in BACKENDS:
            raise self._setting_error("backend", f"one of {BACKENDS}", self.backend)
        if self.init_loss not in ("full", "first_batch"):
            raise self._setting_error("init_loss", "'full' or 'first_batch'", self.init_loss)

    @property
    def nbeta(self) -> float:
        return self.n_beta if self.n_beta is not None else default_nbeta(self.batch_size)

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        seed = 0 if self.seed is None else self.seed
        if self.backend == "devinterp":
            from ._devinterp import run_devinterp

            losses, diverged, init = run_devinterp(self, model, data, seed)
        else:
            trace = sample(model, data, lr=self.lr, n_beta=self.nbeta, localization=self.localization,
                           weight_decay=self.weight_decay, num_chains=self.num_chains,
                           num_steps=self.num_burnin_steps + self.num_draws,
                           batch_size=min(self.batch_size, data.n("train")), seed=seed)
            losses, diverged = trace.losses.numpy(), trace.diverged.numpy()
            init = self._init_loss(model, data, losses)
        burnin = 0 if self.include_burnin else self.num_burnin_steps
        per_chain, kept = llc_from_trace(losses, init, self.nbeta, burnin, diverged)
        ok = per_chain[np.isfinite(per_chain)]
        if len(ok) == 0:
            raise NonFiniteError(
                f"All {self.num_chains} SGLD chains diverged (non-finite loss) at lr={self.lr}; "
                f"lower lr or raise localization (calibrate_llc helps choose)."
            )
        if len(ok) > 1:
            stderr = float(np.std(ok, ddof=1) / math.sqrt(len(ok)))
        else:  # one chain: the Monte Carlo error of its mean, from its effective sample size
            stderr = float(self.nbeta * np.std(kept) / math.sqrt(max(ess_bulk(kept[:, None].T), 1.0)))
        diagnostics = {}
        if kept.shape[1] >= 8:
            diagnostics = {"ess_bulk": ess_bulk(kept), "r_hat": rhat(kept) if len(kept) > 1 else float("nan")}
        extras = {
            "llc_per_chain": per_chain.tolist(),
            "loss_trace": losses.tolist(),
            "init_loss": init,
            "n_beta": self.nbeta,
            "diverged_chains": np.nonzero(diverged)[0].tolist(),
            "backend": self.backend,
        }
        return MeasureResult(float(ok.mean()), stderr=stderr, diagnostics=diagnostics, extras=extras)

    def _init_loss(self, model: nn.Module, data: Data, losses: np.ndarray) -> float:
        if self.init_loss == "first_batch":
            return float(losses[:, 0].mean())  # every chain starts at w*, on the same batch
        return data.evaluate(model, "train")["loss"]


def calibrate_llc(
    model: nn.Module,
    data: Data,
    lrs: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3),
    localizations: tuple[float, ...] = (10.0, 100.0, 1000.0),
    num_chains: int = 2,
    num_draws: int = 100,
    max_r_hat: float = 1.1,
    **settings,
) -> pd.DataFrame:
    """Short chains over a grid of ``lr`` x ``localization``: which settings give stable traces?

    The devinterp documentation's advice, automated: a setting is ``stable`` when no chain
    diverged, the estimate is positive, split-R̂ is below ``max_r_hat``, and the trace has
    settled (its last quarter's mean differs from its second quarter's by less than two
    standard errors). Rows sorted with the stable settings first, then by lr.
    """
    from ..registry import get_measure

    rows = []
    for lr, gamma in itertools.product(lrs, localizations):
        m = get_measure("llc", lr=lr, localization=gamma, num_chains=num_chains, num_draws=num_draws, **settings)
        try:
            r = m(model, data)
        except NonFiniteError:
            rows.append({"lr": lr, "localization": gamma, "llc": np.nan, "stderr": np.nan, "r_hat": np.nan,
                         "ess_bulk": np.nan, "diverged": num_chains, "settled": False, "stable": False})
            continue
        trace = np.asarray(r.extras["loss_trace"], dtype=float)
        q = trace.shape[1] // 4
        second, last = trace[:, q : 2 * q].mean(1), trace[:, 3 * q :].mean(1)
        spread = np.std(trace[:, 3 * q :], axis=1).mean() / math.sqrt(max(q, 1))
        settled = bool(abs(last.mean() - second.mean()) < 2 * max(spread, 1e-12))
        rh = r.diagnostics.get("r_hat", np.nan)
        rows.append({"lr": lr, "localization": gamma, "llc": r.value, "stderr": r.stderr, "r_hat": rh,
                     "ess_bulk": r.diagnostics.get("ess_bulk", np.nan),
                     "diverged": len(r.extras["diverged_chains"]), "settled": settled,
                     "stable": bool(settled and r.value > 0 and not r.extras["diverged_chains"]
                                    and np.isfinite(rh) and rh < max_r_hat)})
    df = pd.DataFrame(rows)
    return df.sort_values(["stable", "lr"], ascending=[False, True]).reset_index(drop=True)
