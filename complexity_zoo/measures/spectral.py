"""Spectral measures of the weight matrices: effective rank, spectral entropy, stable rank.

Every parameter with two or more dimensions is a matrix here (embeddings included, as in
DeMoss et al.'s code); a convolution kernel of shape (out, in, *k) is read as (out, in*prod(k)).
All-zero matrices have no spectrum to normalize and are skipped (listed in extras).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import MeasureError
from ..measure import Measure, MeasureResult
from ..registry import register_measure
from ._weights import singular_value_entropy, weight_matrices

__all__ = ["singular_value_entropy", "weight_matrices"]


def _spectra(model: nn.Module) -> tuple[dict[str, Tensor], list[str]]:
    """Singular values (float64) of every non-zero weight matrix, and the names skipped."""
    spectra, skipped = {}, []
    with torch.no_grad():
        for name, w in weight_matrices(model).items():
            s = torch.linalg.svdvals(w.detach().double())
            if float(s.sum()) == 0.0:
                skipped.append(name)
            else:
                spectra[name] = s
    if not spectra:
        raise MeasureError(
            "The model has no non-zero parameter with two or more dimensions, so it has no "
            f"spectrum to measure (skipped all-zero matrices: {skipped})."
        )
    return spectra, skipped


def _mean_over_matrices(model: nn.Module, per_matrix) -> MeasureResult:
    spectra, skipped = _spectra(model)
    per = {name: float(per_matrix(s)) for name, s in spectra.items()}
    value = sum(per.values()) / len(per)
    return MeasureResult(value, extras={"per_layer": per, "skipped_zero_matrices": skipped})


@register_measure("effective_rank")
class EffectiveRank(Measure):
    """Effective rank exp(H(p)), p_i = s_i / sum_j s_j, averaged over weight matrices.

    Roy & Vetterli 2007, 'The effective rank: a measure of effective dimensionality'; the
    quantity DeMoss et al. 2024 log. Equals k for a matrix with k equal non-zero singular values.
    """

    def compute(self, model: nn.Module, data=None) -> MeasureResult:
        return _mean_over_matrices(model, lambda s: torch.exp(singular_value_entropy(s)))


@register_measure("spectral_entropy")
class SpectralEntropy(Measure):
    """Mean over weight matrices of H = -sum p_i ln p_i, p_i = s_i / sum_j s_j (nats).

    The quantity DeMoss et al. 2024's regularizer penalizes (singular values, not their
    squares: WeightWatcher's 'entropy' normalizes s^2 and is a different quantity).
    """

    unit = "nats"

    def compute(self, model: nn.Module, data=None) -> MeasureResult:
        return _mean_over_matrices(model, singular_value_entropy)


@register_measure("stable_rank")
class StableRank(Measure):
    """Stable rank ||W||_F^2 / ||W||_2^2 = sum s_i^2 / s_max^2, averaged over weight matrices.

    Rudelson & Vershynin 2007; used in norm-based bounds (Bartlett et al. 2017, Neyshabur
    et al. 2018). At most the rank; equals k for k equal non-zero singular values.
    """

    def compute(self, model: nn.Module, data=None) -> MeasureResult:
        return _mean_over_matrices(model, lambda s: (s**2).sum() / s.max() ** 2)
