"""Vectorized SGLD around a checkpoint: every chain advances in one batched computation.

The update is devinterp's (Lau et al. 2023): with w* the checkpoint's weights,
    w <- w - (lr / 2) (n_beta ∇L_B(w) + γ (w - w*) + wd w) + N(0, lr),
L_B the mean loss of a minibatch shared by all chains, or its RMSProp-preconditioned form
(``_precondition.py``). The chains' weights live in one flat (rows, parameters) buffer per
dtype, viewed as a parameter dict that ``torch.func.functional_call`` under ``vmap`` drives
through the model; the update is then a few in-place passes over that buffer. A row is a
chain; a weight restriction keeps the unsampled parameters out of the buffer (frozen at w*)
and, for element masks, resets the masked-out entries of a row to w* after each step, so
rows with different masks (one block per model component) share one batched pass. The
loss trace stays on the device until the end, so a GPU run never waits on the host. Each
row draws its noise from its own generator, so a chain's path does not depend on how many
chains run beside it. A chain whose loss turns non-finite is flagged, not stopped: its NaNs
never reach the others. Models with operations vmap cannot batch fall back to a loop over
chains. ``Sampler.run`` can be called again to continue the same chains.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from ..data import Data
from ._masks import VmapFallbackWarning, catch_vmap_fallback, prepare_for_vmap
from ._precondition import RMSpropRule, SGLDRule


class _LossModule(nn.Module):
    """Wraps model + data so that functional_call can swap the model's parameters."""

    def __init__(self, model: nn.Module, data: Data) -> None:
        super().__init__()
        self.model = model
        self._data = data

    def forward(self, batch: tuple[Tensor, ...]) -> Tensor:
        return self._data.per_example_loss(self.model, batch).mean()


@dataclass
class Trace:
    losses: Tensor  # (chains, steps) float64 on the CPU: minibatch loss at each step, before its update
    diverged: Tensor  # (chains,) bool: the chain's loss was non-finite at some step
    vectorized: bool
    note: str | None = None  # what was changed so that vmap could run the model (eager attention)


class _Chains:
    """The chains' weights: one flat (rows, numel) buffer per dtype, and per-name views.

    ``masks`` (name -> bool tensor of shape (rows, *param.shape) or None) marks the sampled
    entries; all other entries of a row stay at the checkpoint."""

    def __init__(self, named: list[tuple[str, Tensor]], rows: int, masks: dict[str, Tensor | None]) -> None:
        self.groups: list[tuple[Tensor, Tensor, list[str], Tensor | None]] = []  # (state, center, names, mask)
        self.params: dict[str, Tensor] = {}
        for dtype in dict.fromkeys(p.dtype for _, p in named):
            members = [(n, p) for n, p in named if p.dtype == dtype]
            center = torch.cat([p.detach().reshape(-1) for _, p in members])
            state = center.repeat(rows, 1)
            offset = 0
            for name, p in members:
                self.params[name] = state[:, offset : offset + p.numel()].view(rows, *p.shape)
                offset += p.numel()
            mask = None
            if any(masks.get(n) is not None for n, _ in members):
                whole = [masks[n] if masks.get(n) is not None else torch.ones(rows, *p.shape, dtype=torch.bool)
                         for n, p in members]
                mask = torch.cat([m.reshape(rows, -1) for m in whole], dim=1).to(state.device)
            self.groups.append((state, center, [n for n, _ in members], mask))


class _Batches:
    """Minibatch indices: shuffled epochs, a new shuffle when one runs out; resumable."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator) -> None:
        self.n, self.batch_size, self.gen = n, batch_size, gen
        self.order, self.pos = torch.randperm(n, generator=gen), 0

    def take(self, num_steps: int) -> Tensor:
        rows = []
        for _ in range(num_steps):
            if self.pos + self.batch_size > self.n:
                self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
            rows.append(self.order[self.pos : self.pos + self.batch_size])
            self.pos += self.batch_size
        return torch.stack(rows)


class Sampler:
    """``rows`` chains around the model's weights; ``run(k)`` advances them ``k`` steps.

    ``sampled`` names the parameters that move (all when None); ``masks`` restricts some of
    them to elements, per row (name -> (rows, *shape) bool). ``rule`` is "sgld" or "rmsprop"."""

    def __init__(self, model: nn.Module, data: Data, *, lr: float, n_beta: float, localization: float,
                 weight_decay: float, rows: int, batch_size: int, seed: int, rule: str = "sgld",
                 rule_kwargs: dict | None = None, sampled: list[str] | None = None,
                 masks: dict[str, Tensor | None] | None = None) -> None:
        self.device = next(model.parameters()).device
        copied = copy.deepcopy(model).eval()
        self.note = prepare_for_vmap(copied)
        self.wrapper = _LossModule(copied, data)
        named = [(n, p) for n, p in model.named_parameters() if sampled is None or n in sampled]
        self.frozen = {f"model.{n}": p.detach() for n, p in model.named_parameters()
                       if sampled is not None and n not in sampled}
        self.chains = _Chains([(f"model.{n}", p) for n, p in named], rows,
                              {f"model.{n}": m for n, m in (masks or {}).items()})
        self.buffers = {f"model.{n}": b for n, b in self.wrapper.model.named_buffers()}
        self.rows = rows
        chain_seeds = np.random.SeedSequence(seed).generate_state(rows, dtype=np.uint64)
        self.gens = [torch.Generator(device=self.device).manual_seed(int(s)) for s in chain_seeds]
        # Every tensor of an example (x, y; or input_ids, labels, attention_mask) goes to the loss.
        self.examples = tuple(t.to(self.device) for t in data.tensors("train"))
        self.batches = _Batches(self.examples[0].shape[0], batch_size, torch.Generator().manual_seed(seed))
        centers = [center for _, center, _, _ in self.chains.groups]
        kw = dict(lr=lr, n_beta=n_beta, localization=localization, weight_decay=weight_decay)
        if rule == "rmsprop":
            self.rule = RMSpropRule(centers, [s for s, _, _, _ in self.chains.groups], **kw, **(rule_kwargs or {}))
        else:
            self.rule = SGLDRule(centers, **kw)
        self.noises = [torch.empty_like(state) for state, _, _, _ in self.chains.groups]
        self.grad_bufs = [torch.empty_like(state) for state, _, _, _ in self.chains.groups]
        self.step_fn = vmap(grad_and_value(self._loss_of), in_dims=(0, None, None))
        self.vectorized, self._first = True, True

    def _loss_of(self, params: dict[str, Tensor], frozen: dict[str, Tensor], batch: tuple[Tensor, ...]) -> Tensor:
        return functional_call(self.wrapper, (params, frozen, self.buffers), (batch,))

    def run(self, num_steps: int) -> Tensor:
        """Advance every row ``num_steps`` steps: the (rows, num_steps) float64 minibatch
        losses, on the device, each before its step's update."""
        batches = self.batches.take(num_steps).to(self.device)
        losses = torch.empty(self.rows, num_steps, dtype=torch.float64, device=self.device)
        for t in range(num_steps):
            batch = tuple(e[batches[t]] for e in self.examples)
            if self.vectorized:
                try:
                    args = (self.chains.params, self.frozen, batch)
                    if self._first:  # a torch fallback warning becomes one library warning
                        grads, loss = catch_vmap_fallback(self.step_fn, *args)
                        self._first = False
                    else:
                        grads, loss = self.step_fn(*args)
                except (RuntimeError, NotImplementedError) as e:
                    self.vectorized = False
                    warnings.warn(f"vmap cannot batch this model ({str(e).splitlines()[0][:200]}); the chains "
                                  "run one after another (slower, same law).", VmapFallbackWarning, stacklevel=3)
            if not self.vectorized:
                grads, loss = _loop(self._loss_of, self.chains.params, self.frozen, batch, self.rows)
            with torch.no_grad():
                losses[:, t] = loss
                for i, ((state, center, names, mask), noise, g) in enumerate(
                        zip(self.chains.groups, self.noises, self.grad_bufs)):
                    torch.cat([grads[n].reshape(self.rows, -1) for n in names], dim=1, out=g)
                    for row, gen in zip(noise, self.gens):
                        row.normal_(generator=gen)
                    self.rule.update(i, state, g, noise)
                    if mask is not None:
                        state.copy_(torch.where(mask, state, center))
        return losses


def sample(model: nn.Module, data: Data, *, num_chains: int, num_steps: int, **kwargs) -> Trace:
    """Run ``num_chains`` chains for ``num_steps`` steps from the model's weights (settings
    as :class:`Sampler`'s)."""
    sampler = Sampler(model, data, rows=num_chains, **kwargs)
    losses = sampler.run(num_steps).cpu()
    return Trace(losses, ~torch.isfinite(losses).all(dim=1), sampler.vectorized, sampler.note)


def _loop(loss_of, params: dict[str, Tensor], frozen: dict[str, Tensor], batch: tuple[Tensor, ...], rows: int):
    grads = {n: torch.empty_like(w) for n, w in params.items()}
    losses = torch.empty(rows, dtype=torch.float64, device=batch[0].device)
    fn = grad_and_value(loss_of)
    for c in range(rows):
        g, loss = fn({n: w[c] for n, w in params.items()}, frozen, batch)
        for n in grads:
            grads[n][c] = g[n]
        losses[c] = loss
    return grads, losses
