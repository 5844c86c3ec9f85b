"""Output margin and margin-normalized norm measures (Jiang et al. 2020, §A; Dziugaite et al. 2020).

The margin γ is the ``quantile`` (default 10th percentile) of the training examples' output
margins f(x)_y − max_{j≠y} f(x)_j, taken as the reference code does: the k-th smallest margin
with k = ⌊m·quantile⌋ (at least 1), then its absolute value (github nitarshan/robust-
generalization-measures, ``measures.py``: ``kthvalue(m // 10)`` and ``.abs()``). "Over margin"
divides the squared norms by γ², i.e. subtracts 2 log γ from the log forms. Sums and logs
are as in :mod:`.norms` (squared norms over layers, before the papers' size adjustment).
For a causal language model the margins are per token: one for each counted next-token
prediction (logit of the true next token − the largest other), and m counts tokens.
``max_examples`` takes the margin over a seeded subsample of the training split
(``Data.subsample``, recorded in ``extras["sample"]``); the margins stay on the model's device
and the host reads only γ. The norms of the margin-normalized measures fold BatchNorm first,
as the reference code does (``fold_batchnorm``, default True; see :mod:`._batchnorm`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import _causal_lm
from .._context import shared_forward
from .._settings import at_least
from ..data import Data, logits_of
from ..errors import DataError, MeasureError
from ..measure import Convention, Measure, MeasureResult
from ..registry import register_measure
from ._batchnorm import FoldingMeasure
from .norms import jiang, log_norm_terms, log_sum_from_log_prod, path_norm_sq

#: The margin quantile of Jiang et al. 2020 and Dziugaite et al. 2020 (10th percentile).
MARGIN_QUANTILE = 0.1


def output_margins(model: nn.Module, data: Data, split: str = "train") -> Tensor:
    """f(x)_y − max_{j≠y} f(x)_j for every example of a classification split (float64).

    Logits (B, C) with integer labels (B,); (B, T, C) sequences contribute one margin per token,
    as does a causal language model's data (``loss="causal_lm"``): one per counted next token.
    Shared by the measures of a compare() job (:func:`~complexity_zoo._context.shared_forward`).
    """
    return shared_forward("output_margins", model, data, split, lambda: _output_margins(model, data, split))


@torch.no_grad()
def _output_margins(model: nn.Module, data: Data, split: str) -> Tensor:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for batch in data.batches(split, device=device):
            if data.loss_name == "causal_lm":  # one margin per counted next-token prediction
                out.append(_causal_lm.token_margins(*_causal_lm.forward(model, batch)))
                continue
            if len(batch) < 2:
                raise DataError(
                    f"The output margin needs (inputs, labels) batches; the {split!r} split gives "
                    f"{len(batch)} tensor(s) per batch."
                )
            logits, y = logits_of(model(batch[0])), batch[1]
            if logits.ndim == 3 and y.shape == logits.shape[:2]:
                logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
            if logits.ndim != 2 or y.shape != logits.shape[:1] or y.is_floating_point():
                raise DataError(
                    f"The output margin needs class logits (B, C) and integer labels (B,); got "
                    f"outputs {tuple(logits.shape)} and labels {tuple(y.shape)} ({y.dtype})."
                )
            logits = logits.double()
            idx = torch.arange(len(y), device=logits.device)
            correct = logits[idx, y].clone()
            logits[idx, y] = -math.inf
            out.append(correct - logits.max(dim=1).values)
    finally:
        model.train(was_training)
    return torch.cat(out)


def margin(model: nn.Module, data: Data, quantile: float = MARGIN_QUANTILE) -> float:
    """|k-th smallest training margin|, k = max(1, ⌊m·quantile⌋) (the reference code's γ)."""
    margins = output_margins(model, data)
    k = max(1, int(len(margins) * quantile))
    value = abs(float(margins.kthvalue(k).values))
    if value == 0.0:
        raise MeasureError("The training margin at the chosen quantile is 0; margin-normalized measures are undefined.")
    return value


class _MarginMeasure(Measure):
    needs_data = True
    quantile: float = MARGIN_QUANTILE
    max_examples: int | None = None
    seed: int = 0  # of the subsample, with max_examples
    limits = {"max_examples": at_least(1)}

    def __post_init__(self) -> None:
        if not (isinstance(self.quantile, (int, float)) and 0 < self.quantile <= 1):
            raise self._setting_error("quantile", "a number in (0, 1]", self.quantile)

    def gamma(self, model: nn.Module, data: Data) -> tuple[float, dict]:
        """γ on the training split (or its subsample) and the extras that say which."""
        sub = data.subsample(self.max_examples, seed=self.seed, splits=("train",))
        extras = {"sample": sub.sample} if sub.sample is not None else {}
        gamma = margin(model, sub, self.quantile)
        return gamma, {"margin": gamma, **extras}

    def numerator(self, model: nn.Module) -> tuple[float, dict]:
        raise NotImplementedError

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        gamma, g_extras = self.gamma(model, data)
        log_num, extras = self.numerator(model)
        return MeasureResult(log_num - 2 * math.log(gamma), extras={**extras, **g_extras})


MARGIN_TESTS = ("tests/test_norms.py::test_margin_measures_match_numpy",
                "tests/test_batchnorm_fold.py::test_margin_normalized_measures_fold_the_norms_not_the_margin",
                "tests/test_reference_recorded.py::test_margin_measures_on_their_folded_network_equal_the_recorded_reference")
RECORDED_MARGIN = ("; on the reference code's folded network equal to values recorded from the reference code itself "
                   "to 1e-7 relative (its NiN with BatchNorm); on the stored network the margin differs from the "
                   "reference code's by its fold's sqrt(1 + eps) per BatchNorm (inverse margin 1.3e-4 relative there)")
MARGIN_AGREEMENT = ("formula equal to a numpy restatement of the reference code's to 1e-4 (float32 logits; MLP); "
                    "BatchNorm fold equal to a hand fold to 1e-6" + RECORDED_MARGIN)


def margin_convention(eq: str) -> Convention:
    return jiang(eq, tests=MARGIN_TESTS, agreement=MARGIN_AGREEMENT)


class _FoldedMargin(_MarginMeasure, FoldingMeasure):
    """A margin-normalized measure of the layers: BatchNorm folded first by default (see
    :class:`~._batchnorm.FoldingMeasure`; the margin is the network's, unchanged by folding)."""


def _log_norm_numerator(norm: str, form: str):
    def numerator(self, model: nn.Module) -> tuple[float, dict]:
        per = log_norm_terms(self.weights(model).items(), norm)
        value = sum(per.values())
        return (log_sum_from_log_prod(value, len(per)) if form == "sum" else value), {"per_layer": per}

    return numerator


def _log_sum_over_margin(measure: _FoldedMargin, model: nn.Module, data: Data, norm: str) -> MeasureResult:
    """log d + (1/d)(Σ_i log ‖W_i‖² − 2 log γ): the reference code divides the margin term by d too."""
    gamma, extras = measure.gamma(model, data)
    per = log_norm_terms(measure.weights(model).items(), norm)
    value = log_sum_from_log_prod(sum(per.values()) - 2 * math.log(gamma), len(per))
    return MeasureResult(value, extras={"per_layer": per, **extras})


@register_measure("inverse_margin")
class InverseMargin(_MarginMeasure):
    """1/γ², γ the 10th-percentile training output margin (Jiang et al. 2020, eq. 22)."""

    convention = Convention(
        paper="Jiang et al. 2020, eq. 22", code="github nitarshan/robust-generalization-measures, "
        "data/generation/measures.py", default="|k-th smallest training margin|, k = max(1, floor(m/10))",
        switch="none (the margin of the network as stored; the reference code's fold leaves BatchNorms that "
               "divide by sqrt(1 + eps), a slightly different function: measure _batchnorm.folded_module(model) "
               "to reproduce it)",
        agreement="equal to a numpy restatement of the reference code's to 1e-4 (float32 logits; MLP)"
                  + RECORDED_MARGIN,
        tests=(MARGIN_TESTS[0], MARGIN_TESTS[2]))

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        gamma, extras = self.gamma(model, data)
        return MeasureResult(1.0 / gamma**2, extras=extras)


@register_measure("log_prod_spectral_over_margin")
class LogProdSpectralOverMargin(_FoldedMargin):
    """Σ_i log ‖W_i‖_2² − 2 log γ (Jiang et al. 2020, eq. 31; Bartlett et al. 2017's numerator)."""

    version = 3  # 3: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = margin_convention("31")

    numerator = _log_norm_numerator("spectral", "prod")


@register_measure("log_sum_spectral_over_margin")
class LogSumSpectralOverMargin(_FoldedMargin):
    """log d + (1/d)(Σ_i log ‖W_i‖_2² − 2 log γ) (Jiang et al. 2020, eq. 34).

    Note the reference code divides the margin term by d as well (as here).
    """

    version = 3  # 3: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = margin_convention("34")

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        return _log_sum_over_margin(self, model, data, "spectral")


@register_measure("log_prod_frobenius_over_margin")
class LogProdFrobeniusOverMargin(_FoldedMargin):
    """Σ_i log ‖W_i‖_F² − 2 log γ (Jiang et al. 2020, eq. 36)."""

    convention = margin_convention("36")

    numerator = _log_norm_numerator("frobenius", "prod")


@register_measure("log_sum_frobenius_over_margin")
class LogSumFrobeniusOverMargin(_FoldedMargin):
    """log d + (1/d)(Σ_i log ‖W_i‖_F² − 2 log γ) (Jiang et al. 2020, eq. 38)."""

    convention = margin_convention("38")

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        return _log_sum_over_margin(self, model, data, "frobenius")


@register_measure("spec_orig")
class SpecOrig(_FoldedMargin):
    """log(Π_i ‖W_i‖_2² / γ²) + log Σ_i ‖W_i‖_F²/‖W_i‖_2² (Jiang et al. 2020, eq. 30: the
    spectral bound of Bartlett et al. 2017 with the origin as reference)."""

    version = 3  # 3: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = margin_convention("30")

    def numerator(self, model: nn.Module) -> tuple[float, dict]:
        weights = self.weights(model)
        spec, fro = log_norm_terms(weights.items(), "spectral"), log_norm_terms(weights.items(), "frobenius")
        ratio = sum(math.exp(fro[n] - spec[n]) for n in spec)
        return sum(spec.values()) + math.log(ratio), {"per_layer": spec}


@register_measure("spec_init")
class SpecInit(_FoldedMargin):
    """log(Π_i ‖W_i‖_2² / γ²) + log Σ_i ‖W_i − W_i⁰‖_F²/‖W_i‖_2² (Jiang et al. 2020, eq. 29:
    Bartlett et al. 2017's bound with the initialization as reference)."""

    version = 3  # 3: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = margin_convention("29")

    needs_init = True

    def compute(self, model: nn.Module, data: Data, init: dict[str, Tensor]) -> MeasureResult:
        from .norms import frobenius_sq, layer_matrices

        gamma, extras = self.gamma(model, data)
        weights = self.weights(model)
        spec = log_norm_terms(weights.items(), "spectral")
        mats, mats0 = layer_matrices(weights), layer_matrices(self.init_weights(model, init))
        ratio = sum(frobenius_sq(mats[n] - mats0[n]) / math.exp(spec[n]) for n in spec)
        if ratio <= 0:
            raise MeasureError("spec_init is undefined at the initialization itself (zero distance).")
        value = sum(spec.values()) - 2 * math.log(gamma) + math.log(ratio)
        return MeasureResult(value, extras={"per_layer": spec, **extras})


@register_measure("path_norm_over_margin")
class PathNormOverMargin(_MarginMeasure):
    """Squared path norm / γ² (Jiang et al. 2020, eq. 43); defined where ``path_norm`` is."""

    causal_lm = False  # the path norm has no reading on attention models

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        pn = path_norm_sq(model)
        gamma, extras = self.gamma(model, data)
        return MeasureResult(pn / gamma**2, extras={**extras, "path_norm": pn})
