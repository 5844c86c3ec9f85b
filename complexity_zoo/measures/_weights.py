"""Weight matrices and their spectra: the pure functions that measures and regularizers share.

Private (leading underscore) so that the registry's discovery does not import it as a family,
and ``complexity_zoo.regularizers`` can use it without registering any measure.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
