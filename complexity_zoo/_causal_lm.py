"""The causal language-model loss of :class:`Data` (``loss="causal_lm"``), in Hugging Face's convention.

A batch is ``(input_ids,)``, ``(input_ids, labels)`` or ``(input_ids, labels, attention_mask)``,
each of shape (B, T), exactly what ``model(input_ids, labels=labels, attention_mask=mask)`` takes
in transformers: ``labels`` are *not* shifted (they default to ``input_ids``); the loss shifts
them, so the logits at position t are scored on the label at t + 1. Labels equal to -100 are not
counted, nor are positions whose ``attention_mask`` is 0 (padding). A model is called as
``model(input_ids)``, or ``model(input_ids, attention_mask=mask)`` when the batch carries a
mask, and may return logits, an object with ``.logits`` (a transformers ``ModelOutput``), or a
tuple whose first element is the logits.

Per example the loss is the mean next-token cross-entropy (nats) over its counted tokens. This
differs from transformers' ``outputs.loss``, a mean over every counted token of the batch:
the two agree when every example counts as many tokens.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import DataError

IGNORE_INDEX = -100  # transformers' (and torch's) label for "not counted"


def logits_of(out: object) -> Tensor:
    """The logits of a model's output: a tensor, ``out.logits`` (a transformers ``ModelOutput``),
    or the first element of a tuple."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise DataError(
        f"The model returned {type(out).__name__}, which holds no logits: a model must return a tensor, "
        f"an object with a .logits tensor (transformers' ModelOutput), or a tuple whose first element is one."
    )


def unpack(batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor | None]:
    """(input_ids, labels, attention_mask or None) of a causal-LM batch."""
    if not 1 <= len(batch) <= 3:
        raise DataError(
            f"A causal_lm batch is (input_ids,), (input_ids, labels) or (input_ids, labels, attention_mask); "
            f"got {len(batch)} tensors."
        )
    ids = batch[0]
    labels = batch[1] if len(batch) > 1 else ids
    mask = batch[2] if len(batch) > 2 else None
    return ids, labels, mask


def targets(labels: Tensor, mask: Tensor | None) -> Tensor:
    """The labels each position predicts (shifted left by one), -100 where not counted."""
    shifted = labels[:, 1:]
    if mask is not None:
        shifted = shifted.masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
    return shifted


def forward(model: nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """The logits of positions 0..T-2 (B, T-1, V) and the targets they predict (B, T-1)."""
    ids, labels, mask = unpack(batch)
    out = model(ids) if mask is None else model(ids, attention_mask=mask)
    logits = logits_of(out)
    if logits.ndim != 3 or logits.shape[:2] != ids.shape:
        raise DataError(
            f"A causal LM must return logits of shape (B, T, vocab) for input_ids of shape {tuple(ids.shape)}; "
            f"got {tuple(logits.shape)}."
        )
    return logits[:, :-1], targets(labels, mask)


def per_example(logits: Tensor, target: Tensor) -> Tensor:
    """Mean next-token cross-entropy per example (nats) over its counted targets."""
    per_token = F.cross_entropy(logits.transpose(1, 2).float(), target, reduction="none", ignore_index=IGNORE_INDEX)
    counted = (target != IGNORE_INDEX).to(per_token.dtype)
    return (per_token * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1)


def accuracy(logits: Tensor, target: Tensor) -> Tensor:
    """Next-token accuracy per example: the share of counted targets that are the argmax."""
    counted = target != IGNORE_INDEX
    hits = ((logits.argmax(-1) == target) & counted).double().sum(dim=1)
    return hits / counted.double().sum(dim=1).clamp(min=1)


def causal_lm_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """Next-token cross-entropy per sequence, in nats, averaged over its counted tokens."""
    return per_example(*forward(model, batch))


def check_split(split: str, tensors: tuple[Tensor, ...]) -> None:
    """Token ids and labels are integers of shape (N, T >= 2), and every example counts a token."""
    ids, labels, mask = unpack(tensors)
    for what, t in (("input_ids", ids), ("labels", labels), ("attention_mask", mask)):
        if t is None:
            continue
        if t.ndim != 2 or t.shape != ids.shape or t.is_floating_point() or t.is_complex():
            raise DataError(
                f"The {split!r} split's {what} must be an integer tensor of shape (N, T) like input_ids "
                f"{tuple(ids.shape)}; got {t.dtype} of shape {tuple(t.shape)}."
            )
    if ids.shape[1] < 2:
        raise DataError(f"The {split!r} split's sequences have {ids.shape[1]} token; causal_lm needs T >= 2.")
    empty = (targets(labels, mask) == IGNORE_INDEX).all(dim=1)
    if bool(empty.any()):
        first = int(empty.nonzero()[0, 0])
        raise DataError(
            f"Example {first} of the {split!r} split has no token to predict (every label after the first is "
            f"-100 or masked): its loss is undefined. Drop such examples."
        )


def token_margins(logits: Tensor, target: Tensor) -> Tensor:
    """Per counted token, the output margin of the next-token prediction, float64:
    logit of the true next token − the largest other logit (positions labelled -100 left out)."""
    counted = target != IGNORE_INDEX
    scores, y = logits[counted].double(), target[counted]
    idx = torch.arange(len(y), device=scores.device)
    correct = scores[idx, y].clone()
    scores[idx, y] = -math.inf
    return correct - scores.max(dim=1).values


@contextlib.contextmanager
def double_backward_attention() -> Iterator[None]:
    """Scaled-dot-product attention through its math backend for the duration, then as before.

    torch's fused SDPA kernels (flash, memory-efficient; on the CPU the flash kernel transformers
    picks by default) have no double backward and no forward-mode derivative, which Hessian-vector
    products and JVPs need; the math backend is plain differentiable tensor algebra, equal to them
    up to float rounding. The setting is process-wide while it lasts (torch keeps one), so other
    threads' attention also takes the math path meanwhile: slower, not different.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield
