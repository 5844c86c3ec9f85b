"""Vectorized SGLD around a checkpoint: every chain advances in one batched computation.

The update is devinterp's (Lau et al. 2023): with w* the checkpoint's weights,
    w <- w - (lr / 2) (n_beta ∇L_B(w) + γ (w - w*) + wd w) + N(0, lr),
L_B the mean loss of a minibatch shared by all chains. The chains' weights live in one flat
(chains, parameters) buffer per dtype, viewed as a parameter dict that
``torch.func.functional_call`` under ``vmap`` drives through the model; the update is then a
few in-place passes over that buffer. The loss trace stays on the device until the end, so a
GPU run never waits on the host. Each chain draws its noise from its own generator, so a
chain's path does not depend on how many chains run beside it. A chain whose loss turns
non-finite is flagged, not stopped: the chains are computed independently, so its NaNs never
reach the others. Models with operations vmap cannot batch fall back to a loop over chains.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
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
    losses: Tensor  # (chains, steps) float64 on the CPU: minibatch loss at each step, before its update
    diverged: Tensor  # (chains,) bool: the chain's loss was non-finite at some step
    vectorized: bool


class _Chains:
    """The chains' weights: one flat (chains, numel) buffer per dtype, and per-name views."""

    def __init__(self, named: list[tuple[str, Tensor]], num_chains: int) -> None:
        self.groups: list[tuple[Tensor, Tensor, list[str]]] = []  # (state, center, names)
        self.params: dict[str, Tensor] = {}
        for dtype in dict.fromkeys(p.dtype for _, p in named):
            members = [(n, p) for n, p in named if p.dtype == dtype]
            center = torch.cat([p.detach().reshape(-1) for _, p in members])
            state = center.repeat(num_chains, 1)
            offset = 0
            for name, p in members:
                self.params[name] = state[:, offset : offset + p.numel()].view(num_chains, *p.shape)
                offset += p.numel()
            self.groups.append((state, center, [n for n, _ in members]))


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
    chains = _Chains([(f"model.{n}", p) for n, p in model.named_parameters()], num_chains)
    buffers = {f"model.{n}": b for n, b in wrapper.model.named_buffers()}
    gen_cpu = torch.Generator().manual_seed(seed)
    chain_seeds = np.random.SeedSequence(seed).generate_state(num_chains, dtype=np.uint64)
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in chain_seeds]
    x_all, y_all = (t.to(device) for t in data.tensors("train")[:2])
    batches = _batch_indices(x_all.shape[0], batch_size, num_steps, gen_cpu).to(device)

    def loss_of(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return functional_call(wrapper, (params, buffers), (x, y))

    step_fn = vmap(grad_and_value(loss_of), in_dims=(0, None, None))
    vectorized = True
    losses = torch.empty(num_chains, num_steps, dtype=torch.float64, device=device)
    # w <- (1 - lr (γ + wd) / 2) w + (lr γ / 2) w* - (lr n_beta / 2) g + sqrt(lr) ξ
    shrink, pull, push = 1 - lr * (localization + weight_decay) / 2, lr * localization / 2, -lr * n_beta / 2
    spread = lr**0.5
    pulls = [pull * center for _, center, _ in chains.groups]
    noises = [torch.empty_like(state) for state, _, _ in chains.groups]
    grad_bufs = [torch.empty_like(state) for state, _, _ in chains.groups]
    for t in range(num_steps):
        x, y = x_all[batches[t]], y_all[batches[t]]
        if vectorized:
            try:
                grads, loss = step_fn(chains.params, x, y)
            except (RuntimeError, NotImplementedError):
                vectorized = False
        if not vectorized:
            grads, loss = _loop(loss_of, chains.params, x, y, num_chains)
        with torch.no_grad():
            losses[:, t] = loss
            for (state, _, names), pulled, noise, g in zip(chains.groups, pulls, noises, grad_bufs):
                torch.cat([grads[n].reshape(num_chains, -1) for n in names], dim=1, out=g)
                for row, gen in zip(noise, gens):
                    row.normal_(generator=gen)
                state.mul_(shrink).add_(pulled).add_(g, alpha=push).add_(noise, alpha=spread)
    losses = losses.cpu()
    return Trace(losses, ~torch.isfinite(losses).all(dim=1), vectorized)


def _batch_indices(n: int, batch_size: int, num_steps: int, gen: torch.Generator) -> Tensor:
    """(num_steps, batch_size) example indices: shuffled epochs, a new shuffle when one runs out."""
    rows, order, pos = [], torch.randperm(n, generator=gen), 0
    for _ in range(num_steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        rows.append(order[pos : pos + batch_size])
        pos += batch_size
    return torch.stack(rows)


def _loop(loss_of, params: dict[str, Tensor], x: Tensor, y: Tensor, num_chains: int):
    grads = {n: torch.empty_like(w) for n, w in params.items()}
    losses = torch.empty(num_chains, dtype=torch.float64, device=x.device)
    fn = grad_and_value(loss_of)
    for c in range(num_chains):
        g, loss = fn({n: w[c] for n, w in params.items()}, x, y)
        for n in grads:
            grads[n][c] = g[n]
        losses[c] = loss
    return grads, losses
