"""Weight restrictions for the LLC: which parameters (or elements) a sampler may move.

A restriction is resolved to ``{parameter name: None | bool mask}`` (None: the whole
parameter), devinterp's ``ParamMasks`` convention; parameters not named stay frozen at the
checkpoint. Also: the components of a model for per-layer estimates, per-head element masks
for Hugging Face attention layouts, and the switch to eager attention that vmap needs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import warnings

import torch
from torch import Tensor, nn

from ..errors import ComplexityZooWarning, InvalidSettingError

COMPONENT_MODES = ("layer", "parameter")


class VmapFallbackWarning(ComplexityZooWarning):
    """The model needed a change (or a slower path) to run its chains batched under vmap."""


class ParamMasks:
    """Element masks as an LLC setting: name -> bool tensor (or None for the whole parameter).

    Wraps the dict so that the measure's cache key sees a digest of the masks' contents
    (a tensor's repr elides its middle)."""

    def __init__(self, masks: dict[str, Tensor | None]) -> None:
        self.masks = {str(k): (None if v is None else torch.as_tensor(v).bool().cpu()) for k, v in masks.items()}
        h = hashlib.sha1()
        for k, v in sorted(self.masks.items()):
            h.update(k.encode())
            if v is not None:
                h.update(str(tuple(v.shape)).encode() + v.numpy().tobytes())
        self.digest = h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ParamMasks({len(self.masks)} parameters, sha1 {self.digest})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamMasks) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)


def resolve_restriction(model: nn.Module, restrict) -> dict[str, Tensor | None]:
    """``restrict`` -> {name: None | bool mask}. A string or list of strings selects
    parameters by name: a glob (``fnmatch``), or a regular expression after ``re:``
    (``re.fullmatch``); a dict (or :class:`ParamMasks`) maps names to element masks."""
    params = dict(model.named_parameters())
    if isinstance(restrict, (dict, ParamMasks)):
        masks = restrict.masks if isinstance(restrict, ParamMasks) else restrict
        out = {}
        for name, m in masks.items():
            if name not in params:
                raise InvalidSettingError(f"restrict names {name!r}, which is not a parameter of the model.")
            if m is not None:
                m = torch.as_tensor(m).bool()
                if m.shape != params[name].shape:
                    raise InvalidSettingError(f"restrict mask for {name!r} has shape {tuple(m.shape)}, "
                                              f"the parameter {tuple(params[name].shape)}.")
            out[name] = m
        return {n: out[n] for n in params if n in out}  # model order
    patterns = [restrict] if isinstance(restrict, str) else list(restrict)
    chosen = [n for n in params if any(_matches(p, n) for p in patterns)]
    if not chosen:
        raise InvalidSettingError(f"restrict={restrict!r} selects no parameter; the model has {list(params)}.")
    return dict.fromkeys(chosen)


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def components(model: nn.Module, mode: str, within: dict[str, Tensor | None]) -> dict[str, dict[str, Tensor | None]]:
    """The model's components among the sampled parameters ``within``: ``"layer"`` groups the
    parameters of each module (the name without its last part: ``0.weight`` and ``0.bias`` ->
    ``0``), ``"parameter"`` takes each parameter on its own."""
    out: dict[str, dict[str, Tensor | None]] = {}
    for name, mask in within.items():
        key = name.rsplit(".", 1)[0] if mode == "layer" and "." in name else name
        out.setdefault(key, {})[name] = mask
    return out


def prepare_for_vmap(model: nn.Module) -> str | None:
    """Hugging Face models default to SDPA attention, which vmap has no batching rule for on
    the CPU (a per-example fallback, with a torch warning): switch the (copied) model to
    eager attention, the same computation, and say so."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if impl in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        return None
    model.set_attn_implementation("eager")
    return f"attention implementation switched from {impl!r} to 'eager' so that vmap can batch the chains"


def catch_vmap_fallback(fn, *args):
    """Call ``fn``; a torch warning that vmap fell back to a slow path comes back as one
    :class:`VmapFallbackWarning` naming the operations."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args)
    ops = sorted({m for w in caught for m in re.findall(r"batching rule for (\S+?)\.", str(w.message))})
    for w in caught:
        if "batching rule" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if ops:
        warnings.warn(f"vmap has no batching rule for {', '.join(ops)}: these run per example (slower, "
                      "same numbers).", VmapFallbackWarning, stacklevel=4)
    return out


def attention_head_masks(model: nn.Module, layer: int, head: int) -> dict[str, Tensor]:
    """Element masks of attention head ``head`` in layer ``layer`` of a Hugging Face GPT-2,
    GPT-NeoX (Pythia) or Llama-style (Llama, Mistral, Qwen2: separate q/k/v/o, grouped-query
    attention) model: its query, key and value rows/columns (and biases) and the input columns
    of the output projection. With grouped-query attention the key and value of the head's
    group are included (shared with the group's other heads)."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    n_heads = getattr(cfg, "num_attention_heads", None)
    if kind is None or n_heads is None:
        raise InvalidSettingError("attention_head_masks needs a Hugging Face model (model.config).")
    hidden = cfg.hidden_size
    hd = getattr(cfg, "head_dim", None) or hidden // n_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    if not 0 <= head < n_heads:
        raise InvalidSettingError(f"head {head} out of range: the model has {n_heads} heads.")
    params = dict(model.named_parameters())
    q = torch.zeros(n_heads, hd, dtype=torch.bool)
    q[head] = True
    q = q.reshape(-1)
    kv = torch.zeros(n_kv, hd, dtype=torch.bool)
    kv[head // (n_heads // n_kv)] = True
    kv = kv.reshape(-1)
    if kind == "gpt2":
        pre = f"transformer.h.{layer}.attn."
        fused = torch.cat([q, kv, kv])  # Conv1D c_attn: (in, 3 * hidden), q | k | v along the output axis
        rows = {pre + "c_attn.weight": (fused, 1), pre + "c_attn.bias": (fused, 0), pre + "c_proj.weight": (q, 0)}
    elif kind == "gpt_neox":
        pre = f"gpt_neox.layers.{layer}.attention."
        fused = torch.zeros(n_heads, 3, hd, dtype=torch.bool)  # rows per head: [q | k | v]
        fused[head] = True
        fused = fused.reshape(-1)
        rows = {pre + "query_key_value.weight": (fused, 0), pre + "query_key_value.bias": (fused, 0),
                pre + "dense.weight": (q, 1)}
    elif kind in ("llama", "mistral", "qwen2"):
        pre = f"model.layers.{layer}.self_attn."
        rows = {pre + f"{p}_proj.{w}": (sel, 0)
                for p, sel in (("q", q), ("k", kv), ("v", kv)) for w in ("weight", "bias")}
        rows[pre + "o_proj.weight"] = (q, 1)
    else:
        raise InvalidSettingError(f"attention_head_masks knows gpt2, gpt_neox and llama-style models, not {kind!r}.")
    masks = {}
    for name, (sel, dim) in rows.items():
        if name not in params:
            continue
        p = params[name]
        shape = [1] * p.dim()
        shape[dim] = -1
        masks[name] = sel.view(shape).expand(p.shape).clone()
    if not masks:
        raise InvalidSettingError(f"layer {layer} has no attention parameters in this {kind} model.")
    return masks


def row_masks(params: dict[str, Tensor], blocks: list[dict[str, Tensor | None]], num_chains: int
              ) -> tuple[list[str], dict[str, Tensor | None]]:
    """The sampled names (the union of the blocks) and, per name, a (blocks x chains, *shape)
    bool mask: row b * num_chains + c samples block b's elements (None where every row
    samples the whole parameter)."""
    names = [n for n in params if any(n in b for b in blocks)]
    masks: dict[str, Tensor | None] = {}
    for n in names:
        per_block = [b[n] if n in b else False for b in blocks]
        if all(n in b and b[n] is None for b in blocks):
            masks[n] = None
            continue
        shape = params[n].shape
        full = [torch.ones(shape, dtype=torch.bool) if m is None else
                (torch.zeros(shape, dtype=torch.bool) if m is False else m.bool().cpu()) for m in per_block]
        masks[n] = torch.stack(full).repeat_interleave(num_chains, dim=0)
    return names, masks
