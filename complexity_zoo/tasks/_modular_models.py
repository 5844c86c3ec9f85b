"""The models of the modular task: the paper's post-LN transformer and a small MLP.

The transformer follows the authors' ``model.py`` (Flax) of DeMoss et al. 2024
(github.com/brantondemoss/GrokkingComplexity), including what only the code says:
- the positional embedding table has ``vocab_size`` rows (115 at p = 113) although only 4
  positions are used; that is what makes the paper's 242,547 / 440,819 parameters;
- q, k, v and output projections are separate matrices with biases (so the spectral
  penalty sees four 128x128 matrices, not one fused 384x128 one);
- Flax defaults: LeCun-normal (truncated) weights and zero biases in Dense layers,
  embeddings with variance 1/d_model, LayerNorm eps 1e-6, tanh-approximated GELU.

One thing we do not copy: their attention output is ``einsum('bhqk,bhvd->bhqd', weights, v)``,
whose distinct k and v indices make it the plain sum of the values over positions (the
softmax weights sum to 1 and drop out). This module computes ordinary softmax attention, so
it is the paper's architecture as described, not the function their published code computes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DataError, InvalidSettingError

# The task holds all p^2 pairs as int64 token tensors (4 per pair): p <= 8192 keeps them <= 2 GiB.
MAX_P = 8192
# A model a run folder's settings may ask for: 2**31 float32 parameters (8 GiB), checked before allocation.
MAX_PARAMETERS = 2**31


def _check_sizes(what: str, sizes: dict, count) -> None:
    """Positive integer sizes, p within the task's bound, and ``count()`` parameters within bound."""
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidSettingError(f"{what}: '{name}' must be a positive integer; got {v!r}.")
    if sizes["p"] > MAX_P:
        raise InvalidSettingError(f"{what}: p={sizes['p']} is over the modular task's bound {MAX_P}.")
    parameters = count()
    if parameters > MAX_PARAMETERS:
        raise InvalidSettingError(f"{what}: the sizes {sizes} make {parameters:.3g} parameters, over the bound "
                                  f"{MAX_PARAMETERS} (checked before allocating).")

# Flax's lecun_normal draws a normal truncated at +-2 sd and rescales by this constant so
# that the truncated draw has variance 1/fan_in (jax.nn.initializers.variance_scaling).
_TRUNC_STD_CORRECTION = 0.87962566103423978


def _flax_variance_scaling_(weight: Tensor, fan_in: int) -> None:
    std = math.sqrt(1.0 / fan_in) / _TRUNC_STD_CORRECTION
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def _flax_dense(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    _flax_variance_scaling_(layer.weight, fan_in=d_in)
    nn.init.zeros_(layer.bias)
    return layer


def _flax_embed(n: int, d: int) -> nn.Embedding:
    emb = nn.Embedding(n, d)
    _flax_variance_scaling_(emb.weight, fan_in=d)  # Flax Embed: variance_scaling, fan_in = d
    return emb


class SelfAttention(nn.Module):
    """Multi-head self-attention without a mask; separate q/k/v/out projections with biases."""

    def __init__(self, d_model: int, n_heads: int, d_head: int) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.q = _flax_dense(d_model, n_heads * d_head)
        self.k = _flax_dense(d_model, n_heads * d_head)
        self.v = _flax_dense(d_model, n_heads * d_head)
        self.out = _flax_dense(n_heads * d_head, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape

        def heads(z: Tensor) -> Tensor:
            return z.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        att = scores.softmax(dim=-1) @ v
        return self.out(att.transpose(1, 2).reshape(b, t, self.n_heads * self.d_head))


class Block(nn.Module):
    """Post-LayerNorm block: x = LN(x + MHA(x)); x = LN(x + FFN(x)), FFN with GELU."""

    def __init__(self, d_model: int, n_heads: int, d_head: int, d_mlp: int) -> None:
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, d_head)
        self.ln1 = nn.LayerNorm(d_model, eps=1e-6)
        self.ff1 = _flax_dense(d_model, d_mlp)
        self.ff2 = _flax_dense(d_mlp, d_model)
        self.ln2 = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x), approximate="tanh")))


class ModularTransformer(nn.Module):
    """The paper's transformer: token + learned positional embedding, post-LN blocks.

    Input: token ids (B, T), T <= ``n_positions``. Output: logits over the ``p + 2`` tokens
    at the last position, shape (B, p + 2); the label is a token in ``range(p)``.
    """

    def __init__(
        self,
        p: int = 113,
        n_layers: int = 1,
        d_model: int = 128,
        n_heads: int = 4,
        d_head: int = 32,
        d_mlp: int = 512,
        n_positions: int | None = None,
    ) -> None:
        super().__init__()
        sizes = dict(p=p, n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_head, d_mlp=d_mlp,
                     n_positions=p + 2 if n_positions is None else n_positions)
        _check_sizes("transformer", sizes, lambda: (2 * (p + 2) + sizes["n_positions"]) * d_model + n_layers * (
            4 * d_model * n_heads * d_head + 2 * d_model * d_mlp))
        self.vocab_size = p + 2
        self.n_positions = self.vocab_size if n_positions is None else int(n_positions)
        self.embed = _flax_embed(self.vocab_size, d_model)
        self.pos_embed = _flax_embed(self.n_positions, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_head, d_mlp) for _ in range(n_layers))
        self.unembed = _flax_dense(d_model, self.vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] > self.n_positions:
            raise DataError(
                f"The transformer reads token sequences of shape (B, T) with T <= {self.n_positions}; "
                f"got {tuple(x.shape)}. Build the data with dataset(..., tokens=True)."
            )
        h = self.embed(x) + self.pos_embed(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            h = block(h)
        return self.unembed(h[:, -1])


class ModularMLP(nn.Module):
    """Shared embedding of a and b, concatenated, one ReLU hidden layer, logits over p classes.

    Reads ``[a, op, b, =]`` token rows (op and '=' ignored) or ``[a, b]`` pairs, so one
    ``dataset()`` serves both models. PyTorch's default initialization.
    """

    def __init__(self, p: int = 97, d_embed: int = 128, d_hidden: int = 512) -> None:
        super().__init__()
        sizes = dict(p=p, d_embed=d_embed, d_hidden=d_hidden)
        _check_sizes("mlp", sizes, lambda: p * d_embed + 2 * d_embed * d_hidden + d_hidden * p)
        self.p = p
        self.embed = nn.Embedding(p, d_embed)
        self.hidden = nn.Linear(2 * d_embed, d_hidden)
        self.out = nn.Linear(d_hidden, p)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] not in (2, 4):
            raise DataError(
                f"The MLP reads rows [a, op, b, =] or [a, b]; got inputs of shape {tuple(x.shape)}."
            )
        a, b = (x[:, 0], x[:, 2]) if x.shape[1] == 4 else (x[:, 0], x[:, 1])
        h = torch.cat([self.embed(a), self.embed(b)], dim=-1)
        return self.out(F.relu(self.hidden(h)))


def transformer(
    p: int = 113,
    n_layers: int = 1,
    d_model: int = 128,
    n_heads: int = 4,
    d_head: int = 32,
    d_mlp: int = 512,
    n_positions: int | None = None,
) -> ModularTransformer:
    """The paper's transformer (1 layer for add/mul, 2 for sub/div); see ModularTransformer.

    ``n_positions=None`` sizes the positional table like the authors' code (p + 2 rows);
    4 is enough for the data and gives 14,208 fewer parameters at p = 113.
    """
    return ModularTransformer(p, n_layers, d_model, n_heads, d_head, d_mlp, n_positions)


def mlp(p: int = 97, d_embed: int = 128, d_hidden: int = 512) -> ModularMLP:
    """A one-hidden-layer MLP over the embeddings of a and b; see ModularMLP."""
    return ModularMLP(p, d_embed, d_hidden)
