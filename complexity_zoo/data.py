"""Data: the examples and the per-example loss that data-dependent measures evaluate."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from . import _causal_lm
from ._causal_lm import causal_lm_loss, logits_of
from .errors import DataError

Batch = tuple[Tensor, ...]
LossFn = Callable[[nn.Module, Batch], Tensor]
Split = tuple[Tensor, ...] | DataLoader


def cross_entropy_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Cross-entropy in nats per example; logits (B, C) or (B, T, C) averaged over T."""
    return _cross_entropy(logits_of(model(batch[0])), batch[1])


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    if logits.ndim == 2:
        return F.cross_entropy(logits, y, reduction="none")
    if logits.ndim == 3 and y.shape == logits.shape[:2]:
        per_token = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
        return per_token.mean(dim=1)
    raise DataError(
        f"cross_entropy needs logits of shape (B, C) or (B, T, C) with matching labels; "
        f"got logits {tuple(logits.shape)} and labels {tuple(y.shape)}."
    )


def mse_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Squared error per example, averaged over output dimensions."""
    x, y = batch[0], batch[1]
    out = logits_of(model(x))
    if out.shape != y.shape:
        if out.numel() == y.numel():
            out = out.reshape(y.shape)
        else:
            raise DataError(
                f"mse needs outputs shaped like the targets; got {tuple(out.shape)} "
                f"and {tuple(y.shape)}."
            )
    return (out - y).pow(2).reshape(out.shape[0], -1).mean(dim=1)


LOSSES: dict[str, LossFn] = {"cross_entropy": cross_entropy_loss, "mse": mse_loss, "causal_lm": causal_lm_loss}


def _check_tensors(split: str, tensors: Any) -> tuple[Tensor, ...]:
    if not isinstance(tensors, (tuple, list)) or len(tensors) < 1:
        raise DataError(
            f"The {split!r} split must be a tuple of tensors such as (x, y) or a DataLoader; "
            f"got {type(tensors).__name__}."
        )
    tensors = tuple(torch.as_tensor(t) for t in tensors)
    n = tensors[0].shape[0] if tensors[0].ndim else 0
    if n == 0:
        raise DataError(f"The {split!r} split is empty.")
    for i, t in enumerate(tensors):
        if t.ndim == 0 or t.shape[0] != n:
            raise DataError(
                f"The {split!r} split's tensors must share their first dimension; tensor 0 has "
                f"{n} examples, tensor {i} has shape {tuple(t.shape)}."
            )
    return tensors


@dataclass
class Data:
    """Train and test examples plus ``loss(model, batch) -> per-example loss``.

    Splits are tuples of tensors (``(x, y)``) or DataLoaders yielding such tuples.
    ``loss`` is a callable or one of ``"cross_entropy"`` (nats), ``"mse"`` and ``"causal_lm"``
    (next-token cross-entropy in nats per sequence, batches ``(input_ids[, labels[, attention_mask]])``
    in transformers' convention: labels unshifted, -100 not counted; see ``_causal_lm``).
    A model may return logits, a transformers ``ModelOutput`` (its ``.logits``) or a tuple.
    Evaluation is batched so that at most one batch of activations is alive.
    ``task`` records how a reference task built this data, so it can be rebuilt.
    ``data_id`` names examples that cannot be hashed (a DataLoader) for the result cache.
    """

    train: Split
    test: Split | None = None
    loss: LossFn | str = "cross_entropy"
    batch_size: int = 512
    task: dict | None = field(default=None, repr=False)
    # Names the examples for the result cache where they cannot be hashed (a DataLoader).
    data_id: str | None = None
    # How this Data was drawn from a larger one (see subsample), recorded in results; None: whole.
    sample: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.loss, str):
            if self.loss not in LOSSES:
                raise DataError(
                    f"The 'loss' of Data must be one of {sorted(LOSSES)} or a callable "
                    f"loss(model, batch) -> per-example loss. Got {self.loss!r} instead."
                )
            self.loss_name = self.loss
            self.loss = LOSSES[self.loss]
        elif callable(self.loss):
            self.loss_name = getattr(self.loss, "__qualname__", type(self.loss).__name__)
        else:
            raise DataError(f"The 'loss' of Data must be a string or a callable; got {self.loss!r}.")
        if self.data_id is not None and (not isinstance(self.data_id, str) or not self.data_id):
            raise DataError(f"data_id must be a non-empty string naming the examples; got {self.data_id!r}.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise DataError(f"batch_size must be a positive integer; got {self.batch_size!r}.")
        if not isinstance(self.train, DataLoader):
            self.train = _check_tensors("train", self.train)
        if self.test is not None and not isinstance(self.test, DataLoader):
            self.test = _check_tensors("test", self.test)
        if self.loss_name == "causal_lm":
            for name in ("train", "test"):
                split = getattr(self, name)
                if isinstance(split, tuple):
                    _causal_lm.check_split(name, split)

    @classmethod
    def from_tensors(
        cls,
        train: tuple[Tensor, ...],
        test: tuple[Tensor, ...] | None = None,
        loss: LossFn | str = "cross_entropy",
        batch_size: int = 512,
        task: dict | None = None,
    ) -> Data:
        """Data from ``(x, y)`` tensor tuples."""
        return cls(train=train, test=test, loss=loss, batch_size=batch_size, task=task)

    @classmethod
    def from_file(cls, path: str | os.PathLike, loss: LossFn | str | None = None, batch_size: int = 512) -> Data:
        """Data from one ``.safetensors`` (or weights-only torch) file of tensors named ``{split}.{field}``.

        Splits are ``train`` (required) and ``test``. Fields: ``input_ids`` with optional ``labels``
        and ``attention_mask`` for ``loss="causal_lm"`` (the default when ``train.input_ids`` is
        there); ``x`` and ``y`` otherwise (default ``"cross_entropy"``). Reading runs no code.
        """
        from ._io import load_state_dict_file

        tensors = load_state_dict_file(path)
        lm = "train.input_ids" in tensors
        loss = loss or ("causal_lm" if lm else "cross_entropy")
        fields = ("input_ids", "labels", "attention_mask") if loss == "causal_lm" else ("x", "y")
        splits: dict[str, tuple[Tensor, ...] | None] = {}
        for split in ("train", "test"):
            have = [f for f in fields if f"{split}.{f}" in tensors]
            if not have:
                splits[split] = None
                continue
            if have != list(fields[: len(have)]):
                raise DataError(f"{str(path)!r}: the {split!r} fields must be a prefix of {list(fields)}; got {have}.")
            splits[split] = tuple(tensors[f"{split}.{f}"] for f in have)
        unused = sorted(k for k in tensors if k.partition(".")[2] not in fields or k.partition(".")[0] not in splits)
        if splits["train"] is None or unused:
            raise DataError(
                f"{str(path)!r} must hold tensors named {{train,test}}.{{{','.join(fields)}}} for loss {loss!r}; "
                f"it holds {sorted(tensors)}."
            )
        return cls(train=splits["train"], test=splits["test"], loss=loss, batch_size=batch_size)

    def subsample(self, max_examples: int | None, *, seed: int,
                  splits: tuple[str, ...] = ("train", "test")) -> Data:
        """At most ``max_examples`` of each split, drawn uniformly without replacement by ``seed``.

        The data budget of data-dependent measures at scale. The draw is recorded in ``sample``
        (budget, seed, and per split the examples kept and the total) so a result says what it
        was computed on; ``None`` or a budget at least the split's size keeps the split whole.
        """
        if max_examples is None:
            return self
        if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
            raise DataError(f"max_examples must be a positive integer or None; got {max_examples!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise DataError(f"The seed of a subsample must be an integer; got {seed!r}.")
        unknown = [s for s in splits if s not in ("train", "test")]
        if unknown:
            raise DataError(f"splits must name 'train' and/or 'test'; got {unknown}.")
        kept: dict[str, Split | None] = {"train": self.train, "test": self.test}
        record = {"max_examples": max_examples, "seed": seed, "splits": {}}
        for i, name in enumerate(splits):
            split = kept[name]
            if split is None:
                continue
            total = self.n(name)
            if total <= max_examples:
                record["splits"][name] = {"kept": total, "total": total}
                continue
            gen = torch.Generator().manual_seed(seed * 2 + i)  # train and test draw independently
            idx = torch.randperm(total, generator=gen)[:max_examples].sort().values
            if isinstance(split, DataLoader):
                kept[name] = DataLoader(Subset(split.dataset, idx.tolist()), batch_size=split.batch_size,
                                        collate_fn=split.collate_fn, num_workers=split.num_workers)
            else:
                kept[name] = tuple(t[idx] for t in split)
            record["splits"][name] = {"kept": max_examples, "total": total}
        data_id = None if self.data_id is None else f"{self.data_id}|sample:{max_examples}:{seed}"
        loss = self.loss_name if self.loss is LOSSES.get(self.loss_name) else self.loss
        return Data(train=kept["train"], test=kept["test"], loss=loss, batch_size=self.batch_size,
                    task=self.task, data_id=data_id, sample=record)

    def _split(self, split: str) -> Split:
        if split == "train":
            return self.train
        if split == "test":
            if self.test is None:
                raise DataError("This Data has no test split; pass test=(x, y) to build one.")
            return self.test
        raise DataError(f"split must be 'train' or 'test'; got {split!r}.")

    def n(self, split: str = "train") -> int:
        """Number of examples in a split."""
        s = self._split(split)
        if isinstance(s, DataLoader):
            return len(s.dataset)  # type: ignore[arg-type]
        return int(s[0].shape[0])

    def tensors(self, split: str = "train") -> tuple[Tensor, ...]:
        """A whole split as tensors (a DataLoader's batches concatenated)."""
        s = self._split(split)
        if isinstance(s, tuple):
            return s
        batches = list(self.batches(split))
        return tuple(torch.cat([b[i] for b in batches]) for i in range(len(batches[0])))

    def take(self, split: str, indices: Tensor) -> tuple[Tensor, ...]:
        """The examples at ``indices`` of a split; from a DataLoader only those are read."""
        s = self._split(split)
        if isinstance(s, tuple):
            return tuple(t[indices] for t in s)
        loader = DataLoader(Subset(s.dataset, indices.tolist()), batch_size=len(indices), collate_fn=s.collate_fn)
        batch = next(iter(loader))
        return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)

    def batches(
        self,
        split: str = "train",
        *,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[Batch]:
        """Yield batches (tuples of tensors) of a split, moved to ``device``."""
        s = self._split(split)
        if isinstance(s, DataLoader):
            for batch in s:
                batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
                yield tuple(t.to(device) if device is not None else t for t in batch)
            return
        n = s[0].shape[0]
        bs = batch_size or self.batch_size
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, bs):
            idx = order[start : start + bs] if order is not None else slice(start, start + bs)
            yield tuple(t[idx].to(device) if device is not None else t[idx] for t in s)

    def per_example_loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The loss of each example of ``batch``, shape (B,)."""
        out = self.loss(model, batch)  # type: ignore[operator]
        if not isinstance(out, Tensor) or out.ndim != 1 or out.shape[0] != batch[0].shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise DataError(
                f"The loss {self.loss_name!r} must return one value per example, shape "
                f"({batch[0].shape[0]},); it returned {shape}."
            )
        return out

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str = "train",
        *,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
    ) -> dict[str, float]:
        """Mean loss (and accuracy for cross-entropy) of ``model`` over a whole split.

        Both are means over examples of per-example values; for ``causal_lm`` the accuracy is
        next-token accuracy, each sequence's share of correctly predicted counted tokens.
        """
        if device is None:
            device = _model_device(model)
        total = correct = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        classify = self.loss_name in ("cross_entropy", "causal_lm")
        for batch in self.batches(split, batch_size=batch_size, device=device):
            if self.loss_name == "causal_lm":  # one forward pass gives both loss and accuracy
                logits, target = _causal_lm.forward(model, batch)
                losses = _causal_lm.per_example(logits, target)
                correct = correct + _causal_lm.accuracy(logits, target).sum()
            elif classify:
                logits = logits_of(model(batch[0]))
                losses = _cross_entropy(logits, batch[1])
                hits = (logits.argmax(-1) == batch[1]).double()
                correct = correct + hits.reshape(hits.shape[0], -1).mean(dim=1).sum()
            else:
                losses = self.per_example_loss(model, batch)
            total = total + losses.double().sum()  # summed on the device: one sync at the end
            count += losses.shape[0]
        out = {"loss": float(total) / count}
        if classify:
            out["acc"] = float(correct) / count
        return out

    def num_classes(self) -> int | None:
        """Number of classes of a cross-entropy task with tensor labels (max label + 1), else None.

        None for ``causal_lm`` too: a sequence has no single class, and the vocabulary is the
        model's, not readable from the token ids seen.
        """
        if self.loss_name != "cross_entropy" or not isinstance(self.train, tuple) or len(self.train) < 2:
            return None
        labels = [self.train[1]] + ([self.test[1]] if isinstance(self.test, tuple) else [])
        if any(t.is_floating_point() for t in labels):
            return None
        return int(max(int(t.max()) for t in labels)) + 1

    def fingerprint(self) -> str:
        """A digest of the examples, the loss and the batch size, so cached results follow the data.

        Tensor splits are hashed by content. A DataLoader cannot be (its order, transforms and
        files are not visible), so it needs an explicit ``data_id`` naming the examples; the
        loss contributes its name or, for a callable, its code and bound values.
        """
        from ._trust import identity_digest

        h = hashlib.sha256()
        loss_id = self.loss_name if self.loss is LOSSES.get(self.loss_name) else identity_digest(self.loss)
        h.update(f"loss:{loss_id}:batch_size:{self.batch_size}".encode())
        if self.data_id is not None:
            h.update(f"data_id:{self.data_id}".encode())
        for name, split in (("train", self.train), ("test", self.test)):
            if split is None:
                h.update(b"none")
            elif isinstance(split, DataLoader):
                if self.data_id is None:
                    raise DataError(
                        f"The {name!r} split is a DataLoader, whose examples cannot be identified for the "
                        f"result cache; pass Data(..., data_id='a name that changes when the examples do'), "
                        f"or compare without cache=."
                    )
                h.update(b"loader")
            else:
                for t in split:
                    t = t.detach().cpu().contiguous()
                    h.update(str((t.dtype, tuple(t.shape))).encode())
                    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
