"""The per-checkpoint context: work that the measures of one job share.

compare() runs a checkpoint's pending measures as one job (see ``compare.run_checkpoint``); the
job opens a :class:`CheckpointContext` and every measure of the job reads shared work from it
instead of redoing it: the singular values of each weight matrix (taken once, by the policy
of :func:`~complexity_zoo.measures._weights.singular_values`, and read by the spectral, norm,
margin and heavy-tail measures), the power-law fit of each layer's eigenvalues (kind "power-law
fit", read by ``alpha`` and ``alpha_weighted``; keyed by the eigenvalues' bytes), and outputs of
the model on the data (:func:`shared_forward`: the training margins the margin family reads).
Entries are keyed by what produced them, so a measure in a job
gets exactly the tensor it would have computed alone. Further kinds of shared work (e.g. folded
weights, kind "folded") are further ``kind`` names of :meth:`CheckpointContext.get`.

Scope: one context per job, in a :class:`contextvars.ContextVar`, so jobs running at once in
threads each see their own; it is dropped when the job ends. A context belongs to one
checkpoint: entries are keyed by parameter name (plus shape, dtype and device), which only
identifies a tensor within one checkpoint, so never hold a context across two.

Memory: an entry is kept only while the context's total stays under ``max_bytes`` (default
:data:`MAX_BYTES`); past it, work is done as if no context were open. Singular values are small
next to their matrix (min(n, m) numbers for an n x m matrix, at most 1/max(n, m) of it), so the
streaming path's bound (about the largest tensor) is kept.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch

#: Bytes of shared results a context keeps (64 MiB).
MAX_BYTES = 64 << 20

_CURRENT: contextvars.ContextVar[CheckpointContext | None] = contextvars.ContextVar("complexity_zoo_context",
                                                                                    default=None)
_SPECTRUM_KIND: contextvars.ContextVar[str] = contextvars.ContextVar("complexity_zoo_spectrum_kind",
                                                                    default="spectrum")


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 64


class CheckpointContext:
    """Results shared by the measures of one job, by (kind, key); see the module docstring."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: dict[tuple[str, Hashable], Any] = {}

    def lookup(self, kind: str, key: Hashable) -> Any | None:
        """The stored result of (kind, key), or None."""
        out = self._entries.get((kind, key))
        if out is None:
            self.misses += 1
        else:
            self.hits += 1
        return out

    def store(self, kind: str, key: Hashable, value: Any) -> None:
        """Keep ``value`` unless that would pass ``max_bytes``."""
        size = _nbytes(value)
        if (kind, key) not in self._entries and self.nbytes + size <= self.max_bytes:
            self._entries[(kind, key)] = value
            self.nbytes += size

    def get(self, kind: str, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The result of (kind, key): stored, or computed now by ``compute()`` (and stored)."""
        out = self.lookup(kind, key)
        if out is None:
            out = compute()
            self.store(kind, key, out)
        return out


def current() -> CheckpointContext | None:
    """The context of the job running in this thread, or None outside a job."""
    return _CURRENT.get()


@contextlib.contextmanager
def checkpoint_context(max_bytes: int = MAX_BYTES) -> Iterator[CheckpointContext]:
    """Open a context for one checkpoint's measures (nested: the outer one is used)."""
    outer = _CURRENT.get()
    if outer is not None:
        yield outer
        return
    ctx = CheckpointContext(max_bytes)
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def matrix_key(name: str, w: torch.Tensor) -> tuple:
    """The key of a parameter's matrix within one checkpoint: its name, shape, dtype and device."""
    return (name, tuple(w.shape), w.dtype, str(w.device))


def model_state(model: torch.nn.Module) -> tuple:
    """The version counters of the model's parameters and buffers: part of the key of work derived
    from the model, so a model changed in place within a job is computed anew."""
    return tuple(t._version for t in (*model.parameters(), *model.buffers()))


def shared_forward(kind: str, model: torch.nn.Module, data: Any, split: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, the ``kind`` of output of ``model`` on ``data``'s ``split``, shared within a
    job while the model's parameters and buffers are unchanged (their version counters are part of
    the key) and the split is a fixed tuple of tensors (a DataLoader may shuffle or augment: not
    shared). The result is the stored object: read it, never modify it in place."""
    ctx = current()
    if ctx is None or not isinstance(getattr(data, split, None), tuple):
        return compute()
    key = (kind, id(model), id(data), split, model.training, model_state(model))
    entry = ctx.lookup("forward", key)
    if entry is not None and entry[0]() is model and entry[1] is data:  # ids are reused only after death
        return entry[2]
    out = compute()
    ctx.store("forward", key, (weakref.ref(model), data, out))
    return out


def spectrum_kind() -> str:
    """The kind under which this thread's spectra are shared: "spectrum" for the stored weights,
    "folded spectrum" inside :func:`folded_weights` (same names, other values)."""
    return _SPECTRUM_KIND.get()


@contextlib.contextmanager
def folded_weights() -> Iterator[None]:
    """Within the block, the matrices measures read are BatchNorm-folded weights: they carry
    their parameters' names (and in a float64 network their dtype and shape too), so their
    spectra are shared among folding measures only, never with the stored weights'."""
    token = _SPECTRUM_KIND.set("folded spectrum")
    try:
        yield
    finally:
        _SPECTRUM_KIND.reset(token)
