"""Which of a checkpoint's tensors are the model's parameters, without building the model.

A checkpoint holds more than ``named_parameters()``: buffers (BatchNorm's running statistics and
``num_batches_tracked``; persistent masks such as old GPT-2 files' ``attn.bias`` and
``attn.masked_bias``), and tied weights are stored once (Hugging Face's ``save_pretrained``
keeps ``transformer.wte.weight`` and drops ``lm_head.weight``), twice (a torch state dict, or
this library's run folders, which copy them) or under either name. The rule that makes a
streamed measure equal to the measure on the model:

1. The trajectory's model factory is called on the ``meta`` device (no memory, no weights):
   its ``named_parameters()`` give the names, order and shapes (each tied parameter once,
   under its first name, exactly as the model path sees them), and ``remove_duplicate=False``
   gives every other name of a tied parameter. Each parameter is read under its own name, or
   else under one of its other names; buffers are never read. A parameter that is absent
   under every name, or has another shape, is a :class:`CheckpointError` (as strict loading is).
2. A factory that cannot run on ``meta`` is built once for real on the CPU (one model's memory,
   once per trajectory, for the names only).
3. Only if the factory fails outright: a heuristic on the checkpoint's own names. Every
   floating-point tensor, except names ending in ``running_mean``, ``running_var`` or
   ``masked_bias``, and except a second name for storage a torch file shares (a tie). It cannot
   see ties a file stores as two copies (this library's run folders), nor buffers under other
   names: give a factory that builds on ``meta`` for exact results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._stream import TensorReader
from .errors import CheckpointError

BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "masked_bias")


@dataclass(frozen=True)
class ParameterPlan:
    """The model's parameters: names in ``named_parameters()`` order, shapes, tied aliases."""

    names: tuple[str, ...]
    shapes: Mapping[str, tuple[int, ...]]
    aliases: Mapping[str, tuple[str, ...]]


def parameter_plan(factory: Callable[[], nn.Module]) -> ParameterPlan | None:
    """The plan of the model ``factory`` builds (on ``meta``, else on the CPU); None if it fails."""
    model = None
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = factory()
            break
        except Exception:
            continue
    if not isinstance(model, nn.Module):
        return None
    by_tensor: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(p), []).append(name)
    named = list(model.named_parameters())
    aliases = {n: tuple(a for a in by_tensor[id(p)] if a != n) for n, p in named}
    return ParameterPlan(tuple(n for n, _ in named), {n: tuple(p.shape) for n, p in named},
                         {n: a for n, a in aliases.items() if a})


def parameters(reader: TensorReader, plan: ParameterPlan | None) -> Iterator[tuple[str, Tensor]]:
    """(name, tensor) for each parameter the plan names, read one at a time (see the rule above)."""
    if plan is None:
        yield from _heuristic(reader)
        return
    keys = set(reader.keys())
    for name in plan.names:
        yield name, _read(reader, plan, name, keys)


def _read(reader: TensorReader, plan: ParameterPlan, name: str, keys: set[str]) -> Tensor:
    key = next((k for k in (name, *plan.aliases.get(name, ())) if k in keys), None)
    if key is None:
        tied = f" (nor under its tied names {list(plan.aliases[name])})" if name in plan.aliases else ""
        raise CheckpointError(
            f"The checkpoint {reader.where} has no tensor for the parameter {name!r}{tied}. Check that "
            f"the model factory builds the architecture that was trained."
        )
    t = reader.get(key)
    if tuple(t.shape) != tuple(plan.shapes[name]):
        raise CheckpointError(
            f"The checkpoint {reader.where} holds {key!r} with shape {tuple(t.shape)}; the model's "
            f"parameter {name!r} has shape {tuple(plan.shapes[name])}."
        )
    return t


def _heuristic(reader: TensorReader) -> Iterator[tuple[str, Tensor]]:
    seen = set()
    for key in reader.keys():
        if key.rsplit(".", 1)[-1] in BUFFER_SUFFIXES:
            continue
        ident = reader.identity(key)
        if ident is not None:
            if ident in seen:
                continue
            seen.add(ident)
        t = reader.get(key)
        if t.is_floating_point():
            yield key, t


class LazyParameters(Mapping):
    """The parameters of a checkpoint as a mapping whose values are read when looked up
    (the run's initial weights for measures with ``needs_init``: two tensors in memory, not two models)."""

    def __init__(self, reader: TensorReader, plan: ParameterPlan | None) -> None:
        self.reader, self.plan = reader, plan
        self._keys = set(reader.keys())
        if plan is not None:
            self._names = list(plan.names)
        else:
            self._names = [k for k in reader.keys() if k.rsplit(".", 1)[-1] not in BUFFER_SUFFIXES]
        self._known = set(self._names)

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._known:
            raise KeyError(name)
        if self.plan is None:
            return self.reader.get(name)
        return _read(self.reader, self.plan, name, self._keys)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
