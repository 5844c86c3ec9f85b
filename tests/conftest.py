"""Shared fixtures: small models, data and run folders built on the spot."""

from __future__ import annotations

import functools
import os

# Tests never download: Hugging Face libraries read this once, when first imported.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch

from complexity_zoo import Trajectory, registry
from complexity_zoo.testing import mlp, tiny_classifier


@pytest.fixture
def model_and_data():
    return tiny_classifier(seed=0)


@pytest.fixture
def trajectory():
    """Five checkpoints of a tiny MLP trained with SGD, with logged metrics."""
    model, data = tiny_classifier(seed=1)
    torch.manual_seed(1)
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.3)
    states, rows = {}, []
    x, y = data.train
    for step in range(0, 50):
        if step % 10 == 0:
            states[step] = {k: v.clone() for k, v in net.state_dict().items()}
            ev = data.evaluate(net, "train")
            rows.append({"step": step, "train_loss": ev["loss"], "train_acc": ev["acc"]})
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    import pandas as pd

    return Trajectory.from_state_dicts(
        states, model=functools.partial(mlp), metrics=pd.DataFrame(rows), name="tiny"
    )


@pytest.fixture
def scratch_registry():
    """Register throwaway measures in a test; they are removed afterwards."""
    registry._load_builtins()  # so that restoring the snapshot keeps the built-ins and plugins
    registry._load_plugins()
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def _rebuild_coarse(model: torch.nn.Module, extras: dict) -> torch.nn.Module:
    """The model a Kolmogorov result describes, rebuilt by plain torch from its recorded Δ,
    ranks and S sides (an independent reconstruction for the tests)."""
    import copy

    coarse = copy.deepcopy(model)
    if extras["stored_exactly"]:
        return coarse
    delta = extras["delta"]
    with torch.no_grad():
        for name, p in coarse.named_parameters():
            k = extras["ranks"].get(name)
            if k is None:
                p.copy_(torch.round(p.double() / delta) * delta)
                continue
            u, s, vh = torch.linalg.svd(p.reshape(p.shape[0], -1).double(), full_matrices=False)
            a = {"left": 1.0, "right": 0.0, "split": 0.5}[extras["s_side"][name]]
            left = torch.round(u[:, :k] * s[:k] ** a / delta) * delta
            right = torch.round(s[:k, None] ** (1 - a) * vh[:k] / delta) * delta
            p.copy_((left @ right).reshape(p.shape))
    return coarse


@pytest.fixture
def rebuild_coarse():
    return _rebuild_coarse
