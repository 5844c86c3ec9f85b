"""Comparison.layers: the per-layer table over runs and steps, and its figure."""

from __future__ import annotations

import pytest
import torch

import complexity_zoo as cz
from complexity_zoo.analysis.layers import plot_layers
from complexity_zoo.errors import InvalidSettingError
from complexity_zoo.testing import mlp


def test_layers_table_holds_every_layer_at_every_step(trajectory):
    result = cz.compare(trajectory, ["log_prod_spectral", "param_count", "stable_rank"], progress=False, strict=True)
    table = result.layers("log_prod_spectral")
    assert list(table.columns) == ["run", "step", "layer", "value"]
    assert len(table) == len(trajectory.steps) * 2
    step = trajectory.steps[-1]
    model = mlp()
    model.load_state_dict(trajectory.checkpoint(step).state_dict())
    w = model[2].weight.detach().double()
    row = table[(table["step"] == step) & (table["layer"] == "2.weight")]
    assert float(row["value"].iloc[0]) == pytest.approx(float(2 * torch.log(torch.linalg.svdvals(w)[0])), rel=1e-9)
    per_step = table.groupby("step")["value"].sum()
    assert per_step.to_numpy() == pytest.approx(result.dataset["log_prod_spectral"].sel(run="tiny").values, rel=1e-12)
    assert set(result.layers("stable_rank")["layer"]) == {"0.weight", "2.weight"}
    with pytest.raises(InvalidSettingError, match="per_layer"):
        result.layers("param_count")
    with pytest.raises(InvalidSettingError, match="No measure"):
        result.layers("nope")


def test_plot_layers_writes_a_png(trajectory, tmp_path):
    result = cz.compare(trajectory, ["param_norm"], progress=False, strict=True)
    path = plot_layers(result.layers("param_norm"), tmp_path / "layers.png", "param_norm")
    assert path.stat().st_size > 1000
