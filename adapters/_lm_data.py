"""Language-model Data for the Hugging Face adapter: next-token loss per sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from complexity_zoo.data import Batch, Data
from complexity_zoo.errors import DataError


# -- data ------------------------------------------------------------------------------------
class CausalLMLoss:
    """Next-token cross-entropy per sequence, in nats, averaged over its predicted positions.

    A batch is ``(inputs, targets)`` with targets the inputs shifted by one token (``lm_data``
    builds them). The model's forward takes token ids and returns logits or an object with
    ``.logits`` (transformers models). Targets equal to ``pad_token_id`` are not counted.
    """

    def __init__(self, pad_token_id: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.__qualname__ = f"causal_lm_loss(pad_token_id={pad_token_id})"  # names it in Data

    def __call__(self, model: nn.Module, batch: Batch) -> Tensor:
        inputs, targets = batch[0], batch[1]
        out = model(inputs)
        logits = getattr(out, "logits", out)
        if not isinstance(logits, Tensor) or logits.shape[:2] != targets.shape:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise DataError(
                f"A causal LM must return logits of shape (B, T, vocab) for inputs {tuple(inputs.shape)}; "
                f"got {shape}."
            )
        ignore = -100 if self.pad_token_id is None else int(self.pad_token_id)
        per_token = F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none", ignore_index=ignore)
        counted = (targets != ignore).to(per_token.dtype)
        return (per_token * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1)


def _shifted(ids: Tensor, split: str) -> tuple[Tensor, Tensor]:
    ids = torch.as_tensor(ids)
    if ids.ndim != 2 or ids.shape[1] < 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise DataError(
            f"The {split!r} token ids must be an integer tensor of shape (N, T) with T >= 2; got "
            f"{ids.dtype} of shape {tuple(ids.shape)}."
        )
    ids = ids.long()
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def lm_data(
    train_ids: Tensor,
    test_ids: Tensor | None = None,
    *,
    batch_size: int = 32,
    pad_token_id: int | None = None,
) -> Data:
    """Data for a causal language model from token ids of shape (N, T).

    Each sequence is one example: the input is its first T-1 tokens, the target the last T-1,
    and the loss is its next-token cross-entropy averaged over positions (nats; see
    ``CausalLMLoss``). Pad on the right; ``pad_token_id`` keeps pads out of the average.
    """
    train = _shifted(train_ids, "train")
    test = _shifted(test_ids, "test") if test_ids is not None else None
    return Data(train=train, test=test, loss=CausalLMLoss(pad_token_id), batch_size=batch_size)
