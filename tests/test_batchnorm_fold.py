"""BatchNorm folding (the reference code's convention) against a hand-folded computation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.errors import ModelError
from complexity_zoo.measures._batchnorm import fold_batchnorm, unfoldable


def bn_net(seed: int) -> nn.Sequential:
    """A conv net with BatchNorm after a biased conv, an unbiased conv and a linear layer, with
    non-trivial running statistics and affine parameters."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                        nn.Linear(6 * 4 * 4, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 5))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.05, 3.0)
                m.weight.uniform_(0.3, 2.5)
                m.bias.normal_(0, 0.4)
    return net.eval()


def hand_folded(net: nn.Sequential) -> list[np.ndarray]:
    """Each layer's weight times γ/√(var + eps) per output channel, by an explicit loop (numpy)."""
    mods = list(net)
    out = []
    for i, m in enumerate(mods):
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        w = m.weight.detach().double().numpy().copy()
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(nxt, nn.modules.batchnorm._BatchNorm):
            for c in range(w.shape[0]):
                w[c] *= float(nxt.weight.detach()[c]) / math.sqrt(float(nxt.running_var[c]) + nxt.eps)
        out.append(w.reshape(w.shape[0], -1))
    return out


def stored(net: nn.Module) -> list[np.ndarray]:
    return [p.detach().double().numpy().reshape(p.shape[0], -1) for p in net.parameters() if p.ndim >= 2]


def expected(layers, layers0) -> dict[str, float]:
    """Every folding measure of the norms family, in numpy from the given layers."""
    fro = np.array([(w**2).sum() for w in layers])
    spec = np.array([np.linalg.svd(w, compute_uv=False)[0] ** 2 for w in layers])
    dist = [w - w0 for w, w0 in zip(layers, layers0)]
    d = len(layers)
    return {
        "param_norm": fro.sum(),
        "log_prod_spectral": np.log(spec).sum(),
        "frobenius_distance": sum(float((w**2).sum()) for w in dist),
        "spectral_distance": sum(np.linalg.svd(w, compute_uv=False)[0] ** 2 for w in dist),
        "fro_over_spectral": (fro / spec).sum(),
        "log_prod_fro_over_spectral": np.log(fro / spec).sum(),
        "log_sum_spectral": math.log(d) + np.log(spec).sum() / d,
        "log_prod_frobenius": np.log(fro).sum(),
        "log_sum_frobenius": math.log(d) + np.log(fro).sum() / d,
        "dist_over_spec": (np.array([(w**2).sum() for w in dist]) / spec).sum(),
    }


def test_default_equals_hand_folded_and_false_gives_stored_tensors():
    model, init = bn_net(0), bn_net(1)
    folded, stored_ = expected(hand_folded(model), hand_folded(init)), expected(stored(model), stored(init))
    for name in set(folded) - {"dist_over_spec"}:
        kw = {"init": init} if cz.get_measure(name).needs_init else {}
        got = cz.get_measure(name)(model, **kw).value
        assert got == pytest.approx(folded[name], rel=1e-6), name
        raw = cz.get_measure(name, fold_batchnorm=False)(model, **kw).value
        assert raw == pytest.approx(stored_[name], rel=1e-6), name
        assert abs(raw - folded[name]) > 1e-3 * abs(folded[name]), name  # the case tells them apart


def test_folding_preserves_the_function_and_leaves_the_model_alone():
    model = bn_net(2)
    before = copy.deepcopy(model.state_dict())
    params = fold_batchnorm(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    twin = copy.deepcopy(model).double()
    with torch.no_grad():
        for name, p in twin.named_parameters():
            p.copy_(params[name])
        for m in twin.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
                m.running_var.fill_(1 - m.eps)  # so that BN(x) = x exactly: identity after folding
    x = torch.randn(7, 3, 8, 8, dtype=torch.float64)
    want = model.double()(x)
    assert torch.allclose(twin(x), want, rtol=1e-10, atol=1e-10)
    assert unfoldable(model) == []


def test_the_initialization_folds_with_its_own_statistics_and_needs_them():
    model, init = bn_net(3), bn_net(4)
    params_only = {k: v for k, v in init.state_dict().items() if "running" not in k and "batches" not in k}
    with pytest.raises(ModelError, match="running_mean"):
        cz.get_measure("frobenius_distance")(model, init=params_only)
    assert cz.get_measure("frobenius_distance", fold_batchnorm=False)(model, init=params_only).value > 0


def test_margin_normalized_measures_fold_the_norms_not_the_margin():
    model = bn_net(5)
    x = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    data = cz.Data.from_tensors(train=(x, y))
    init = bn_net(8)
    gamma = cz.get_measure("inverse_margin")(model, data).extras["margin"]
    e, lg, d = expected(hand_folded(model), hand_folded(init)), 2 * math.log(gamma), 4
    want = {
        "log_prod_spectral_over_margin": e["log_prod_spectral"] - lg,
        "log_sum_spectral_over_margin": math.log(d) + (e["log_prod_spectral"] - lg) / d,
        "log_prod_frobenius_over_margin": e["log_prod_frobenius"] - lg,
        "log_sum_frobenius_over_margin": math.log(d) + (e["log_prod_frobenius"] - lg) / d,
        "spec_orig": e["log_prod_spectral"] - lg + math.log(e["fro_over_spectral"]),
        "spec_init": e["log_prod_spectral"] - lg + math.log(e["dist_over_spec"]),
    }
    for name, value in want.items():
        got = cz.get_measure(name)(model, data, init=init)
        assert got.extras["margin"] == gamma
        assert got.value == pytest.approx(value, rel=1e-6), name


def test_batchnorm_before_any_layer_is_left_unfolded():
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3), nn.LayerNorm(3), nn.BatchNorm1d(3))
    assert unfoldable(net) == ["0", "3"]
    params = fold_batchnorm(net)
    for name, p in net.named_parameters():
        assert torch.equal(params[name], p.detach()), name


def test_compare_takes_the_model_path_for_a_batchnorm_checkpoint():
    model, init = bn_net(6), bn_net(7)
    traj = cz.Trajectory.from_state_dicts({0: init.state_dict(), 1: model.state_dict()},
                                          model=lambda: bn_net(0))
    result = cz.compare(traj, ["param_norm", "frobenius_distance"], progress=False, strict=True)
    folded = expected(hand_folded(model), hand_folded(init))
    for name in ("param_norm", "frobenius_distance"):
        got = result.dataset[name].sel(run=traj.name, step=1).item()
        assert got == pytest.approx(folded[name], rel=1e-6), name
