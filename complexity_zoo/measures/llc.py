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
from ._masks import COMPONENT_MODES, ParamMasks, attention_head_masks, components, resolve_restriction, row_masks
from ._mcmc import ess_bulk, rhat
from ._precondition import SAMPLERS
from ._sgld import Sampler

BACKENDS = ("torch", "devinterp")
__all__ = ["LocalLearningCoefficient", "attention_head_masks", "calibrate_llc", "default_nbeta", "llc_from_trace"]


def default_nbeta(batch_size: int) -> float:
    """devinterp's default inverse temperature: b / ln b."""
    return batch_size / math.log(batch_size)


def _count(model: nn.Module, masks: dict | None) -> int:
    """How many weights a restriction samples."""
    params = dict(model.named_parameters())
    if masks is None:
        return sum(p.numel() for p in params.values())
    return sum(params[n].numel() if m is None else int(m.sum()) for n, m in masks.items())


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

    ``sampler="rmsprop"`` preconditions SGLD as devinterp's RMSprop-SGLD does (pSGLD, Li et al.
    2016; ``rmsprop_alpha``, ``rmsprop_eps``). ``restrict`` samples only some parameters (name
    globs, ``re:`` regexes, or a dict name -> bool element mask; see
    :func:`attention_head_masks`), the rest frozen at the checkpoint. ``per_component="layer"``
    (or ``"parameter"``) adds one estimate per module (parameter) of the sampled set, in
    ``extras["per_layer"]``, from chains run beside the main ones in the same batched pass.
    ``until_converged=True`` runs ``num_draws`` more draws at a time until split-R̂ <=
    ``target_r_hat`` and stderr / |value| <= ``target_rel_stderr`` (every component's, with
    ``per_component``), or ``max_draws`` draws are spent; extras say which rule stopped it.
    ``max_examples``: the chains and L(w*) see a seeded subsample of at most that many training
    examples (recorded in ``extras["sample"]``). A step's cost is set by ``batch_size``; this
    bounds the rest: the train split held on the device and the full pass of ``init_loss``.
    """

    needs_data = True
    stochastic = True
    version = 2  # 2: per-chain noise generators (a seed's numbers differ from version 1's)
    # The sampler runs num_burnin_steps + num_draws steps, so burn-in may be longer than the draws.
    limits = {"num_burnin_steps": at_least(0), "n_beta": above(0), "weight_decay": at_least(0),
              "localization": at_least(0), "lr": above(0), "num_chains": at_least(1), "num_draws": at_least(1),
              "batch_size": at_least(1), "max_examples": at_least(1)}
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
    sampler: str = "sgld"
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 0.1
    restrict: str | list | dict | ParamMasks | None = None
    per_component: str | None = None
    until_converged: bool = False
    target_r_hat: float = 1.01
    target_rel_stderr: float = 0.05
    max_draws: int = 5000
    max_examples: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise self._setting_error("backend", f"one of {BACKENDS}", self.backend)
        if self.init_loss not in ("full", "first_batch"):
            raise self._setting_error("init_loss", "'full' or 'first_batch'", self.init_loss)
        self._check_new_settings()

    def _check_new_settings(self) -> None:
        if self.sampler not in SAMPLERS:
            raise self._setting_error("sampler", f"one of {SAMPLERS}", self.sampler)
        if not (isinstance(self.rmsprop_alpha, (int, float)) and 0 <= self.rmsprop_alpha < 1):
            raise self._setting_error("rmsprop_alpha", "a number in [0, 1)", self.rmsprop_alpha)
        if not (isinstance(self.rmsprop_eps, (int, float)) and self.rmsprop_eps > 0):
            raise self._setting_error("rmsprop_eps", "a positive number", self.rmsprop_eps)
        if self.per_component not in (None, *COMPONENT_MODES):
            raise self._setting_error("per_component", f"None or one of {COMPONENT_MODES}", self.per_component)
        if isinstance(self.restrict, dict):  # element masks: a digest in the cache key, not a tensor repr
            object.__setattr__(self, "restrict", ParamMasks(self.restrict))
        elif not (self.restrict is None or isinstance(self.restrict, (str, ParamMasks)) or (
                isinstance(self.restrict, (list, tuple)) and all(isinstance(p, str) for p in self.restrict))):
            raise self._setting_error("restrict", "None, a name pattern, a list of them, or a dict of masks",
                                      self.restrict)
        if not (isinstance(self.max_draws, int) and self.max_draws >= self.num_draws):
            raise self._setting_error("max_draws", "an integer >= num_draws", self.max_draws)
        for name in ("target_r_hat", "target_rel_stderr"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                raise self._setting_error(name, "a positive number", getattr(self, name))
        if self.backend == "devinterp" and self.until_converged:
            raise self._setting_error("until_converged", "False with backend='devinterp' (it cannot resume "
                                      "chains)", self.until_converged)

    @property
    def nbeta(self) -> float:
        return self.n_beta if self.n_beta is not None else default_nbeta(self.batch_size)

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        seed = 0 if self.seed is None else self.seed
        data = data.subsample(self.max_examples, seed=seed, splits=("train",))
        blocks = self._blocks(model)
        chains, stopped, draws, note = self.num_chains, None, self.num_draws, None
        if self.backend == "devinterp":
            from ._devinterp import run_devinterp

            runs = [run_devinterp(self, model, data, seed, masks) for _, masks in blocks]
            losses, init = np.concatenate([r[0] for r in runs]), runs[0][2]
        else:
            sampler = self._sampler(model, data, seed, blocks)
            losses = sampler.run(self.num_burnin_steps + self.num_draws).cpu().numpy()
            init = self._init_loss(model, data, losses[:chains])
            while self.until_converged:
                if all(self._converged(e) for e in self._estimates(losses, init, blocks)):
                    stopped = "converged"
                    break
                if draws >= self.max_draws:
                    stopped = "max_draws"
                    break
                more = min(self.num_draws, self.max_draws - draws)
                losses = np.concatenate([losses, sampler.run(more).cpu().numpy()], axis=1)
                draws += more
            note = sampler.note if sampler.vectorized else "vmap could not batch the model: chains ran one by one"
        ests = self._estimates(losses, init, blocks)
        main = ests[0]
        extras = {
            "llc_per_chain": main["per_chain"].tolist(),
            "loss_trace": losses[:chains].tolist(),
            "init_loss": init,
            "n_beta": self.nbeta,
            "diverged_chains": main["diverged"],
            "backend": self.backend,
            "sampler": self.sampler,
        }
        if self.restrict is not None:
            extras["num_sampled"] = _count(model, blocks[0][1])
        if self.per_component is not None:
            extras["per_layer"] = {label: e["value"] for (label, _), e in zip(blocks[1:], ests[1:])}
            extras["per_layer_stderr"] = {label: e["stderr"] for (label, _), e in zip(blocks[1:], ests[1:])}
            extras["per_layer_r_hat"] = {label: e["diagnostics"].get("r_hat", float("nan"))
                                         for (label, _), e in zip(blocks[1:], ests[1:])}
            extras["per_layer_num_params"] = {label: _count(model, m) for label, m in blocks[1:]}
        if self.until_converged:
            extras["stopped_by"], extras["draws_used"] = stopped, draws
        if data.sample is not None:
            extras["sample"] = data.sample
        if note:
            extras["vmap_note"] = note
        return MeasureResult(main["value"], stderr=main["stderr"], diagnostics=main["diagnostics"], extras=extras)

    def _blocks(self, model: nn.Module) -> list[tuple[str, dict | None]]:
        """("", the sampled set) then, with ``per_component``, (component, its parameters)."""
        sampled = None if self.restrict is None else resolve_restriction(model, self.restrict)
        if self.per_component is None:
            return [("", sampled)]
        every = sampled if sampled is not None else dict.fromkeys(n for n, _ in model.named_parameters())
        return [("", sampled), *components(model, self.per_component, every).items()]

    def _sampler(self, model: nn.Module, data: Data, seed: int, blocks: list) -> Sampler:
        names = masks = None
        if len(blocks) > 1 or blocks[0][1] is not None:
            params = dict(model.named_parameters())
            names, masks = row_masks(params, [dict.fromkeys(params) if b is None else b for _, b in blocks],
                                     self.num_chains)
        rule_kwargs = dict(alpha=self.rmsprop_alpha, eps=self.rmsprop_eps) if self.sampler == "rmsprop" else None
        return Sampler(model, data, lr=self.lr, n_beta=self.nbeta, localization=self.localization,
                       weight_decay=self.weight_decay, rows=len(blocks) * self.num_chains,
                       batch_size=min(self.batch_size, data.n("train")), seed=seed, rule=self.sampler,
                       rule_kwargs=rule_kwargs, sampled=names, masks=masks)

    def _estimates(self, losses: np.ndarray, init: float, blocks: list) -> list[dict]:
        """Per block of ``num_chains`` rows: value, stderr, per-chain values, diagnostics."""
        burnin = 0 if self.include_burnin else self.num_burnin_steps
        c, out = self.num_chains, []
        for b, (label, _) in enumerate(blocks):
            rows = losses[b * c : (b + 1) * c]
            diverged = ~np.isfinite(rows).all(axis=1)
            per_chain, kept = llc_from_trace(rows, init, self.nbeta, burnin, diverged)
            ok = per_chain[np.isfinite(per_chain)]
            if len(ok) == 0:
                where = f" of component {label!r}" if label else ""
                raise NonFiniteError(
                    f"All {c} SGLD chains{where} diverged (non-finite loss) at lr={self.lr}; "
                    f"lower lr or raise localization (calibrate_llc helps choose)."
                )
            if len(ok) > 1:
                stderr = float(np.std(ok, ddof=1) / math.sqrt(len(ok)))
            else:  # one chain: the Monte Carlo error of its mean, from its effective sample size
                stderr = float(self.nbeta * np.std(kept) / math.sqrt(max(ess_bulk(kept[:, None].T), 1.0)))
            diagnostics = {}
            if kept.shape[1] >= 8:
                diagnostics = {"ess_bulk": ess_bulk(kept), "r_hat": rhat(kept) if len(kept) > 1 else float("nan")}
            out.append({"value": float(ok.mean()), "stderr": stderr, "per_chain": per_chain,
                        "diagnostics": diagnostics, "diverged": np.nonzero(diverged)[0].tolist()})
        return out

    def _converged(self, est: dict) -> bool:
        r_hat = est["diagnostics"].get("r_hat", float("nan"))
        rel = est["stderr"] / abs(est["value"]) if est["value"] != 0 else float("inf")
        return bool(r_hat <= self.target_r_hat and rel <= self.target_rel_stderr)

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
