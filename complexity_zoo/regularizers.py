"""Regularizers as torch loss terms and training-time perturbations.

Both come from DeMoss et al., "The Complexity Dynamics of Grokking" (arXiv 2412.09810),
authors' code github.com/brantondemoss/GrokkingComplexity ``main.py``:
``spectral_entropy_penalty`` and ``noisy_update_step`` / ``add_noise_to_params``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .errors import InvalidSettingError, ModelError
from .measures._weights import singular_value_entropy, weight_matrices

#: Added inside the logarithm, as in the authors' ``spectral_entropy_penalty(epsilon=1e-10)``.
SPECTRAL_ENTROPY_EPS = 1e-10


def spectral_entropy(model: nn.Module, eps: float = SPECTRAL_ENTROPY_EPS) -> Tensor:
    """Mean spectral entropy of the model's weight matrices, differentiable (nats).

    For every parameter with ``ndim >= 2`` (embeddings and unembedding included), reshaped to
    ``(shape[0], -1)``: singular values s, p_i = s_i / sum_j s_j (singular values, not their
    squares), H = -sum_i p_i ln(p_i + eps). Returns the mean H over matrices, a scalar that
    carries gradients (``torch.linalg.svdvals``), so ``loss + 0.1 * spectral_entropy(model)``
    is the paper's regularized objective. Lowering H lowers the effective rank exp(H).

    All-zero matrices have no spectrum (0/0) and are left out of the mean; the authors' code
    would return NaN for them.

    Source: DeMoss et al. 2024, ``spectral_entropy_penalty`` in the authors' ``main.py``.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"spectral_entropy needs an nn.Module; got {type(model).__name__}.")
    entropies = []
    for w in weight_matrices(model).values():
        s = torch.linalg.svdvals(w)
        if bool(s.sum() == 0):
            continue
        entropies.append(singular_value_entropy(s, eps=eps))
    if not entropies:
        raise ModelError(
            "spectral_entropy needs at least one non-zero parameter with two or more dimensions; "
            "this model has none."
        )
    return torch.stack(entropies).mean()


@contextlib.contextmanager
def weight_noise(
    model: nn.Module, std: float, generator: torch.Generator | None = None
) -> Iterator[nn.Module]:
    """Add N(0, std^2) to every parameter in place; restore the exact weights on exit.

    Used as ``with weight_noise(model, 1e-2, g): loss(model).backward()`` followed by
    ``optimizer.step()`` outside the block: the gradient is taken at theta + noise and the
    update is applied to the clean theta, as in the authors' ``noisy_update_step`` (their
    ``add_noise_to_params(variance=...)`` multiplies a standard normal by that value, so it
    is a standard deviation). Noise goes on every parameter, biases and norms included.
    The original values are copied and written back (not subtracted), so restoring is exact
    even if the block raises. ``std = 0`` changes nothing.

    ``generator`` makes the noise reproducible; it may live on another device than the
    model (noise is drawn there and moved). Without one the global RNG is used.

    Source: DeMoss et al. 2024 (sigma = 1e-2 for add/mul, 1e-3 for sub/div).
    """
    if not isinstance(std, (int, float)) or std < 0 or std != std:
        raise InvalidSettingError(f"weight_noise needs a standard deviation std >= 0; got {std!r}.")
    if std == 0:
        yield model
        return
    params = [p for p in model.parameters()]
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p in params:
                if generator is not None:
                    noise = torch.randn(
                        p.shape, generator=generator, device=generator.device, dtype=p.dtype
                    ).to(p.device)
                else:
                    noise = torch.randn_like(p)
                p.add_(noise, alpha=float(std))
        yield model
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
