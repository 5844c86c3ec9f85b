"""Weight-restricted and per-component LLC: known answers, additivity, devinterp agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.errors import InvalidSettingError
from complexity_zoo.measures._masks import ParamMasks, resolve_restriction
from complexity_zoo.testing import least_squares

SETTINGS = dict(lr=3e-4, localization=1.0, batch_size=500, num_chains=4, num_draws=1500, num_burnin_steps=300,
                seed=0)


def test_restricted_to_k_of_d_parameters_gives_k_over_two():
    """Least squares, d = 5, an element mask keeping k = 2 weights: λ = k/2, with test_llc's
    finite-γ equipartition factor and tolerance."""
    model, data = least_squares()
    mask = torch.tensor([[True, False, False, True, False]])
    m = cz.get_measure("llc", restrict={"weight": mask}, **SETTINGS)
    r = m(model, data)
    expected = 2 / 2 * (m.nbeta * 2) / (m.nbeta * 2 + 1.0)
    assert abs(r.value - expected) < 0.12 * expected, (r.value, r.stderr)
    assert r.extras["num_sampled"] == 2


class TwoBlocks(nn.Module):
    """Two independent least-squares problems side by side: y = (x_a w_a, x_b w_b)."""

    def __init__(self, da: int, db: int) -> None:
        super().__init__()
        self.da = da
        self.a = nn.Linear(da, 1, bias=False)
        self.b = nn.Linear(db, 1, bias=False)

    def forward(self, x):
        return torch.cat([self.a(x[:, : self.da]), self.b(x[:, self.da :])], dim=1)


def two_blocks(n=500, da=2, db=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, da + db, generator=g)
    model = TwoBlocks(da, db)
    y = torch.cat([x[:, :da] @ torch.randn(da, 1, generator=g), x[:, da:] @ torch.randn(db, 1, generator=g)], 1)
    y = y + 0.5 * torch.randn(n, 2, generator=g)
    with torch.no_grad():
        model.a.weight.copy_(torch.linalg.lstsq(x[:, :da], y[:, :1]).solution.T)
        model.b.weight.copy_(torch.linalg.lstsq(x[:, da:], y[:, 1:]).solution.T)
    return model, cz.Data.from_tensors(train=(x, y), loss="mse")


def test_independent_blocks_sum_to_the_whole():
    model, data = two_blocks()
    r = cz.get_measure("llc", per_component="layer", **SETTINGS)(model, data)
    per, se = r.extras["per_layer"], r.extras["per_layer_stderr"]
    assert set(per) == {"a", "b"} and r.extras["per_layer_num_params"] == {"a": 2, "b": 4}
    spread = math.sqrt(se["a"] ** 2 + se["b"] ** 2 + r.stderr**2)
    assert abs(per["a"] + per["b"] - r.value) < 3 * spread, (per, r.value, spread)
    # each block is its own regular model: d_i / 2 (mse averages the 2 outputs: Hessian ~ I)
    nb = r.extras["n_beta"]
    for name, d in (("a", 2), ("b", 4)):
        expected = d / 2 * nb / (nb + 1.0)
        assert abs(per[name] - expected) < 0.12 * expected, (name, per[name])


def test_a_component_run_beside_others_equals_a_restricted_run_in_law():
    """restrict='b.*' alone and the 'b' component of a per-layer run estimate the same thing."""
    model, data = two_blocks()
    alone = cz.get_measure("llc", restrict="b.*", **SETTINGS)(model, data)
    beside = cz.get_measure("llc", per_component="layer", **SETTINGS)(model, data)
    spread = math.hypot(alone.stderr, beside.extras["per_layer_stderr"]["b"])
    assert abs(alone.value - beside.extras["per_layer"]["b"]) < 3 * spread
    assert alone.extras["num_sampled"] == 4


def test_restricting_to_every_parameter_changes_nothing(model_and_data):
    model, data = model_and_data
    kw = dict(num_draws=20, num_chains=2, seed=3)
    plain = cz.get_measure("llc", **kw)(model, data)
    every = cz.get_measure("llc", restrict="*", **kw)(model, data)
    assert every.value == plain.value and every.extras["loss_trace"] == plain.extras["loss_trace"]


def test_restricting_to_a_layer(model_and_data):
    """Restricting to the first layer of an MLP samples its weights only, and changes the estimate."""
    model, data = model_and_data
    kw = dict(num_draws=20, num_chains=2, seed=3)
    first = cz.get_measure("llc", restrict="0.*", **kw)(model, data)
    assert first.extras["num_sampled"] == sum(p.numel() for p in model[0].parameters())
    assert first.value != cz.get_measure("llc", **kw)(model, data).value


@pytest.mark.parametrize("rule", ["sgld", "rmsprop"])
def test_masked_out_elements_stay_at_the_checkpoint(rule):
    """Per-row element masks (two blocks of chains) with weight decay, which would move every
    weight: the masked-out ones equal w* exactly after the run, the others moved."""
    from complexity_zoo.measures._sgld import Sampler

    model, data = least_squares(n=100)
    w = model.weight.detach().clone()
    rows = torch.tensor([[[True, False, True, False, False]], [[False, True, True, True, True]]])
    s = Sampler(model, data, lr=1e-3, n_beta=10.0, localization=1.0, weight_decay=1.0, rows=2, batch_size=50,
                seed=0, rule=rule, sampled=["weight"], masks={"weight": rows})
    s.run(10)
    after = s.chains.params["model.weight"]
    assert torch.equal(after[~rows], w.expand(2, 1, 5)[~rows])
    assert (after[rows] != w.expand(2, 1, 5)[rows]).all()


def test_patterns_globs_and_regexes(model_and_data):
    model, _ = model_and_data
    assert list(resolve_restriction(model, "*.bias")) == ["0.bias", "2.bias"]
    assert list(resolve_restriction(model, "re:2\\.(weight|bias)")) == ["2.weight", "2.bias"]
    assert list(resolve_restriction(model, ["0.weight", "2.bias"])) == ["0.weight", "2.bias"]
    with pytest.raises(InvalidSettingError, match="selects no parameter"):
        resolve_restriction(model, "nope*")
    with pytest.raises(InvalidSettingError, match="shape"):
        resolve_restriction(model, {"0.weight": torch.ones(3, dtype=torch.bool)})


def test_masks_setting_has_a_content_digest():
    a = ParamMasks({"w": torch.tensor([True, False])})
    b = ParamMasks({"w": torch.tensor([True, False])})
    c = ParamMasks({"w": torch.tensor([False, True])})
    assert a == b and a != c and repr(a) != repr(c)
    m1 = cz.get_measure("llc", restrict={"w": torch.tensor([True, False])})
    m2 = cz.get_measure("llc", restrict={"w": torch.tensor([False, True])})
    assert m1.key() != m2.key()


@pytest.mark.parametrize("sampler", ["sgld", "rmsprop"])
def test_restricted_agrees_with_devinterp(sampler):
    """devinterp's param_masks (its MaskPreconditioner) at the same settings and conventions."""
    pytest.importorskip("devinterp")
    model, data = least_squares(n=400, d=5, seed=3)
    mask = torch.tensor([[True, True, False, True, False]])
    kw = dict(sampler=sampler, lr=1e-3 if sampler == "sgld" else 1e-4, localization=100.0, batch_size=400,
              num_chains=4, num_draws=300, num_burnin_steps=50, include_burnin=True, seed=0,
              restrict={"weight": mask})
    ours = cz.get_measure("llc", **kw)(model, data)
    ref = cz.get_measure("llc", backend="devinterp", **kw)(model, data)
    full = cz.get_measure("llc", **{**kw, "restrict": None})(model, data)
    spread = math.hypot(ours.stderr, ref.stderr)
    assert abs(ours.value - ref.value) < 3 * spread, (ours.value, ref.value, spread)
    assert ours.value < full.value  # 3 of 5 weights: about 3/5 of the whole
    assert np.isfinite(ref.value)
