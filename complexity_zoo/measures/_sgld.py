"""Vectorized SGLD around a checkpoint: every chain advances in one batched computation.

The update is devinterp's (Lau et al. 2023): with w* the checkpoint's weights,
    w <- w - (lr / 2) (n_beta ∇L_B(w) + γ (w - w*) + wd w) + N(0, lr),
L_B the mean loss of a minibatch shared by all chains. Chains are stacked along a leading
dimension and driven through ``torch.func.functional_call`` under ``vmap``; models with
operations vmap cannot batch fall back to a loop over chains.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from ..data import Data


class _LossModule(nn.Module):
    """Wraps model + data so that functional_call can swap the model's parameters."""

    def __init__(self, model: nn.Module, data: Data) -> None:
        super().__init__()
        self.model = model
        self._data = data

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self._data.per_example_loss(self.model, (x, y)).mean()


@dataclass
class Trace:
    losses: Tensor  # (chains, steps): minibatch loss at each step, before its update
    diverged: Tensor  # (chains,) bool
    vectorized: bool


def sample(
    model: nn.Module,
    data: Data,
    *,
    lr: float,
    n_beta: float,
    localization: float,
    weight_decay: float,
    num_chains: int,
    num_steps: int,
    batch_size: int,
    seed: int,
) -> Trace:
    """Run ``num_chains`` SGLD chains for ``num_steps`` steps from the model's weights."""
    device = next(model.parameters()).device
    wrapper = _LossModule(copy.deepcopy(model).eval(), data)
    names = [f"model.{n}" for n, _ in model.named_parameters()]
    center = {f"model.{n}": p.detach().clone() for n, p in model.named_parameters()}
    buffers = {f"model.{n}": b for n, b in wrapper.model.named_buffers()}
    chains = {n: w.unsqueeze(0).repeat(num_chains, *[1] * w.ndim) for n, w in center.items()}
    gen_cpu = torch.Generator().manual_seed(seed)
    gen_dev = torch.Generator(device=device).manual_seed(seed) if device.type != "cpu" else gen_cpu
    x_all, y_all = data.tensors("train")[:2]
    n = x_all.shape[0]

    def loss_of(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return functional_call(wrapper, ({**params}, buffers), (x, y))

    step_fn = vmap(grad_and_value(loss_of), in_dims=(0, None, None))
    vectorized = True
    losses = torch.empty(num_chains, num_steps, dtype=torch.float64)
    diverged = torch.zeros(num_chains, dtype=torch.bool)
    order, pos = torch.randperm(n, generator=gen_cpu), 0
    for t in range(num_steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen_cpu), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        x, y = x_all[idx].to(device), y_all[idx].to(device)
        if vectorized:
            try:
                grads, loss = step_fn(chains, x, y)
            except (RuntimeError, NotImplementedError):
                vectorized = False
        if not vectorized:
            grads, loss = _loop(loss_of, chains, x, y, num_chains)
        losses[:, t] = loss.detach().double().cpu()
        bad = ~torch.isfinite(losses[:, t])
        diverged |= bad
        keep = (~diverged).to(device)
        with torch.no_grad():
            for name in names:
                w, g = chains[name], grads[name]
                drift = n_beta * g + localization * (w - center[name]) + weight_decay * w
                noise = torch.randn(w.shape, generator=gen_dev, device=device, dtype=w.dtype)
                new = w - (lr / 2) * drift + lr**0.5 * noise
                mask = keep.reshape(-1, *[1] * (w.ndim - 1))
                chains[name] = torch.where(mask, new, w)  # a diverged chain stays where it broke
    return Trace(losses, diverged, vectorized)


def _loop(loss_of, chains: dict[str, Tensor], x: Tensor, y: Tensor, num_chains: int):
    grads = {n: torch.empty_like(w) for n, w in chains.items()}
    losses = torch.empty(num_chains, device=x.device)
    fn = grad_and_value(loss_of)
    for c in range(num_chains):
        g, loss = fn({n: w[c] for n, w in chains.items()}, x, y)
        for n in grads:
            grads[n][c] = g[n]
        losses[c] = loss
    return grads, losses
