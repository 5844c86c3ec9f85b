"""Language-model Data for the Hugging Face adapter: token ids with ``loss="causal_lm"``."""

from __future__ import annotations

import torch
from torch import Tensor

from complexity_zoo._causal_lm import IGNORE_INDEX
from complexity_zoo.data import Data
from complexity_zoo.errors import DataError


def _split(ids: Tensor, split: str, pad_token_id: int | None) -> tuple[Tensor, Tensor]:
    ids = torch.as_tensor(ids)
    if ids.ndim != 2 or ids.shape[1] < 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise DataError(
            f"The {split!r} token ids must be an integer tensor of shape (N, T) with T >= 2; got "
            f"{ids.dtype} of shape {tuple(ids.shape)}."
        )
    ids = ids.long()
    labels = ids if pad_token_id is None else ids.masked_fill(ids == int(pad_token_id), IGNORE_INDEX)
    return ids, labels


def lm_data(
    train_ids: Tensor,
    test_ids: Tensor | None = None,
    *,
    batch_size: int = 32,
    pad_token_id: int | None = None,
) -> Data:
    """Data for a causal language model from token ids of shape (N, T).

    Each sequence is one example, ``(input_ids, labels)`` with ``loss="causal_lm"``: its mean
    next-token cross-entropy (nats) over positions, labels unshifted as in transformers. Pad on
    the right; ``pad_token_id`` sets the pads' labels to -100, which keeps them out of the mean.
    """
    train = _split(train_ids, "train", pad_token_id)
    test = _split(test_ids, "test", pad_token_id) if test_ids is not None else None
    return Data(train=train, test=test, loss="causal_lm", batch_size=batch_size)
