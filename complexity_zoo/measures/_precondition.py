"""The update rules of the batched samplers: plain SGLD and RMSProp-preconditioned SGLD.

Each rule advances a flat (rows, parameters) buffer of chain weights in place, given the
minibatch gradients g (of the mean loss) and standard normal noise ξ of the same shape.

SGLD (Lau et al. 2023, devinterp's SGMCMC.sgld):
    w <- w - (lr / 2) (n_beta g + γ (w - w*) + wd w) + sqrt(lr) ξ

RMSProp-preconditioned SGLD (pSGLD, Li et al. 2016), exactly as devinterp 2.x's
``SGMCMC.rmsprop_sgld`` with its ``RMSpropPreconditioner``:
    V <- α V + (1 - α) g²          (V starts at 0 and is updated before use; no bias correction;
                                    g is the raw minibatch gradient, before n_beta)
    G = 1 / (sqrt(V) + eps)        (defaults α = 0.99, eps = 0.1, devinterp's)
    w <- w - (lr / 2) G (n_beta g + γ (w - w*) + wd w) + sqrt(lr) sqrt(G) ξ
i.e. devinterp's grad_coef = prior_coef = G (the localization and weight-decay terms are
preconditioned too) and noise_coef = sqrt(G); the Γ correction term of Li et al. is omitted,
as devinterp omits it (``add_grad_correction=False``).
"""

from __future__ import annotations

import torch
from torch import Tensor

SAMPLERS = ("sgld", "rmsprop")


class SGLDRule:
    """w <- (1 - lr (γ + wd) / 2) w + (lr γ / 2) w* - (lr n_beta / 2) g + sqrt(lr) ξ."""

    def __init__(self, centers: list[Tensor], *, lr: float, n_beta: float, localization: float,
                 weight_decay: float) -> None:
        self.shrink = 1 - lr * (localization + weight_decay) / 2
        self.push = -lr * n_beta / 2
        self.spread = lr**0.5
        self.pulls = [lr * localization / 2 * c for c in centers]

    def update(self, i: int, state: Tensor, g: Tensor, noise: Tensor) -> None:
        state.mul_(self.shrink).add_(self.pulls[i]).add_(g, alpha=self.push).add_(noise, alpha=self.spread)


class RMSpropRule:
    """pSGLD with devinterp's RMSpropPreconditioner (see the module docstring). ``g`` is
    overwritten (it is the caller's scratch buffer, refilled every step)."""

    def __init__(self, centers: list[Tensor], states: list[Tensor], *, lr: float, n_beta: float,
                 localization: float, weight_decay: float, alpha: float = 0.99, eps: float = 0.1) -> None:
        self.lr, self.n_beta, self.alpha, self.eps = lr, n_beta, alpha, eps
        self.decay = localization + weight_decay
        self.pulls = [localization * c for c in centers]
        self.square_avg = [torch.zeros_like(s) for s in states]
        self.coef = [torch.empty_like(s) for s in states]

    def update(self, i: int, state: Tensor, g: Tensor, noise: Tensor) -> None:
        v, coef = self.square_avg[i], self.coef[i]
        v.mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
        torch.sqrt(v, out=coef).add_(self.eps).reciprocal_()
        drift = g.mul_(self.n_beta).add_(state, alpha=self.decay).sub_(self.pulls[i])
        state.addcmul_(coef, drift, value=-self.lr / 2)
        state.addcmul_(coef.sqrt_(), noise, value=self.lr**0.5)
