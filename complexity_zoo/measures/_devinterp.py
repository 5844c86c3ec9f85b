"""The LLC through devinterp 2.x, the reference implementation, for any (x, y) data.

devinterp's ``llc()`` is shaped for language models: a dataset with an ``input_ids`` column
(rows of length >= 2) and ``loss_fn(model, input_ids)`` returning a per-token loss of shape
(batch, seq - 1). General data is adapted by making each row ``[example index, 0]`` and
returning each example's loss as its one "token". Conventions of devinterp 2.x that differ
from our torch backend: every step counts, burn-in included; L(w*) is the mean over the
chain's first ``num_init_loss_batches`` minibatches (the whole training set when
``batch_size`` >= n); chains run one after another.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import Data
from ..errors import MissingDependencyError


def run_devinterp(measure, model: nn.Module, data: Data, seed: int,
                  param_masks: dict | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Loss traces (chain, step), diverged chains and the init loss, as devinterp computes them;
    ``param_masks`` is devinterp's restriction (name -> None | element mask), ``measure.sampler``
    picks its SGMCMC.sgld or SGMCMC.rmsprop_sgld."""
    try:
        from datasets import Dataset
        from devinterp.slt.llc import llc
    except ImportError as e:
        raise MissingDependencyError(
            "backend='devinterp' needs devinterp 2.x; install it with: pip install 'complexity-zoo[devinterp]'"
        ) from e
    examples = data.tensors("train")  # (x, y), or a causal LM's (input_ids[, labels[, attention_mask]])
    n = examples[0].shape[0]
    rows = Dataset.from_dict({"input_ids": np.stack([np.arange(n), np.zeros(n, dtype=np.int64)], 1)})
    rows.set_format("torch", columns=["input_ids"])

    def loss_fn(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        idx = input_ids[:, 0].long().cpu()
        device = next(model.parameters()).device
        return data.per_example_loss(model, tuple(e[idx].to(device) for e in examples))[:, None]

    device = str(next(model.parameters()).device)
    method = {}
    if getattr(measure, "sampler", "sgld") == "rmsprop":
        method = dict(sampling_method="rmsprop_sgld", rmsprop_alpha=measure.rmsprop_alpha,
                      rmsprop_eps=measure.rmsprop_eps)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = llc(
            model, rows, {}, lr=measure.lr, n_beta=measure.nbeta, loss_fn=loss_fn,
            num_chains=measure.num_chains, num_draws=measure.num_draws,
            num_burnin_steps=measure.num_burnin_steps, batch_size=min(measure.batch_size, n),
            localization=measure.localization, llc_weight_decay=measure.weight_decay,
            init_seed=seed, device=device, output_path=str(Path(tmp) / "samples.zarr"),
            param_masks=param_masks, **method,
        )
        losses = np.asarray(result["loss_trace"].values, dtype=float)
        init = float(result["init_loss"].values.mean())
    diverged = ~np.isfinite(losses).all(axis=1)
    return losses, diverged, init
