"""Spectral measures of the weight matrices: effective rank, spectral entropy, stable rank.

Every parameter with two or more dimensions is a matrix here (embeddings included, as in
DeMoss et al.'s code); a convolution kernel of shape (out, in, *k) is read as (out, in*prod(k)).
All-zero matrices have no spectrum to normalize and are skipped (listed in extras).
"""

from __future__ import annotations

import torch

from ..errors import MeasureError
from ..measure import Measure, MeasureResult
from ..registry import register_measure
from ._weights import as_matrix, singular_value_entropy, spectra, spectrum_dtype, weight_matrices

__all__ = ["singular_value_entropy", "weight_matrices"]


def _mean_over_matrices(tensors, per_matrix) -> MeasureResult:
    """Mean over non-zero weight matrices of ``per_matrix(singular values)``, from a tensor stream.

    Spectra follow :func:`~._weights.singular_values` (float64 on the CPU, float32 on GPUs,
    Gram eigenvalues on the CPU where well-conditioned; the dtype is in extras["svd_dtype"]); statistics
    are taken in float64 on the device and moved to the host once.
    """
    with torch.no_grad():
        spec = spectra(((n, as_matrix(t)) for n, t in tensors if t.ndim >= 2), shared=True)
        if spec:
            rows = torch.stack([torch.stack([s.sum().double(), per_matrix(s.double()).double()])
                                for s in spec.values()]).cpu().tolist()
    names = list(spec)
    skipped = [n for n, (total, _) in zip(names, rows) if total == 0.0] if spec else []
    per = {n: v for n, (total, v) in zip(names, rows) if total != 0.0} if spec else {}
    if not per:
        raise MeasureError(
            "The model has no non-zero parameter with two or more dimensions, so it has no "
            f"spectrum to measure (skipped all-zero matrices: {skipped})."
        )
    device = next(iter(spec.values())).device
    value = sum(per.values()) / len(per)
    return MeasureResult(value, extras={"per_layer": per, "skipped_zero_matrices": skipped,
                                        "svd_dtype": str(spectrum_dtype(device)).removeprefix("torch.")})


@register_measure("effective_rank")
class EffectiveRank(Measure):
    """Effective rank exp(H(p)), p_i = s_i / sum_j s_j, averaged over weight matrices.

    Roy & Vetterli 2007, 'The effective rank: a measure of effective dimensionality'; the
    quantity DeMoss et al. 2024 log. Equals k for a matrix with k equal non-zero singular values.
    """

    version = 2  # 2: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    tensors_only = True

    def compute_tensors(self, tensors, init=None) -> MeasureResult:
        return _mean_over_matrices(tensors, lambda s: torch.exp(singular_value_entropy(s)))


@register_measure("spectral_entropy")
class SpectralEntropy(Measure):
    """Mean over weight matrices of H = -sum p_i ln p_i, p_i = s_i / sum_j s_j (nats).

    The quantity DeMoss et al. 2024's regularizer penalizes (singular values, not their
    squares: WeightWatcher's 'entropy' normalizes s^2 and is a different quantity).
    """

    version = 2  # 2: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    unit = "nats"
    tensors_only = True

    def compute_tensors(self, tensors, init=None) -> MeasureResult:
        return _mean_over_matrices(tensors, singular_value_entropy)


@register_measure("stable_rank")
class StableRank(Measure):
    """Stable rank ||W||_F^2 / ||W||_2^2 = sum s_i^2 / s_max^2, averaged over weight matrices.

    Rudelson & Vershynin 2007; used in norm-based bounds (Bartlett et al. 2017, Neyshabur
    et al. 2018). At most the rank; equals k for k equal non-zero singular values.
    """

    version = 2  # 2: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    tensors_only = True

    def compute_tensors(self, tensors, init=None) -> MeasureResult:
        return _mean_over_matrices(tensors, lambda s: (s**2).sum() / s.max() ** 2)
