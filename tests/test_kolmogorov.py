"""The rate–distortion Kolmogorov estimator on cases with a known answer."""

from __future__ import annotations

import copy
import lzma
import math
import struct

import numpy as np
import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.errors import InvalidSettingError
from complexity_zoo.measures.kolmogorov import rate_distortion
from complexity_zoo.testing import tiny_classifier


def regression_data(n_in, n_out, weight, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    return cz.Data.from_tensors(train=(x, x @ weight.T), loss="mse")


def linear(weight):
    model = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        model.weight.copy_(weight)
    return model


def lzma_bits(*parts):
    """The documented lzma-codes container: raw LZMA2 at preset 9 (default 64 MiB dictionary)."""
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9}]
    return 8 * len(lzma.compress(b"".join(parts), format=lzma.FORMAT_RAW, filters=filters))


def test_weights_already_on_a_grid_are_stored_exactly_as_integer_codes():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-6, 7, (5, 4), generator=g)
    weight = codes.float() * 0.25  # every weight a multiple of 0.25, full rank
    data = regression_data(4, 5, weight)
    result = cz.get_measure("kolmogorov", epsilon=1e-9, delta_range=(0.25, 1.0))(linear(weight), data)
    assert result.extras["delta"] == 0.25 and result.extras["distortion"] <= 1e-9
    expected = lzma_bits(struct.pack("<f", 0.25), struct.pack("<I", 0xFFFFFFFF), struct.pack("<B", 1),
                         codes.numpy().astype(np.int8).tobytes())
    assert result.value == expected


def test_low_rank_weights_are_stored_as_factors():
    a = torch.tensor([0.2, -0.4, 1.0, 0.0, 0.6, -0.2, 0.8, 0.4, -1.0, 0.2, 0.0, 0.6, 0.4, -0.6, 0.2, 1.2])
    b = torch.tensor([0.6, 0.8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # unit norm: U_1 S_1 = ±a, V_1 = ±b
    weight = torch.outer(a, b)
    data = regression_data(12, 16, weight)
    result = cz.get_measure("kolmogorov", epsilon=1e-6, delta_range=(0.2, 1.0))(linear(weight), data)
    assert result.extras["ranks"] == {"weight": 1}
    assert result.extras["delta"] == pytest.approx(0.2) and result.extras["distortion"] < 1e-6
    header = struct.pack("<f", 0.2) + struct.pack("<I", 1) + struct.pack("<B", 1) + struct.pack("<B", 1)
    candidates = [
        lzma_bits(header, (s * a / 0.2).round().numpy().astype(np.int8).tobytes(),
                  (s * b / 0.2).round().numpy().astype(np.int8).tobytes())
        for s in (1, -1)  # the SVD's sign is arbitrary
    ]
    assert result.value in candidates
    assert result.value < result.extras["exact_bits"] / 2


def test_when_every_coarse_graining_breaks_the_bound_the_weights_are_stored_exactly():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=g)
    y = x @ torch.randn(6, 3, generator=g) + 0.1 * torch.randn(40, 3, generator=g)
    w = torch.linalg.lstsq(x, y).solution.T  # the least-squares minimum: any change raises the loss
    data = cz.Data.from_tensors(train=(x, y), loss="mse")
    result = cz.get_measure("kolmogorov", epsilon=0.0)(linear(w), data)
    exact = lzma_bits(w.detach().numpy().astype("<f4").ravel().tobytes())
    assert result.extras["stored_exactly"] and result.value == exact
    assert result.extras["distortion"] == 0.0


def test_complexity_does_not_grow_with_epsilon():
    model, data = tiny_classifier()
    single = [cz.get_measure("kolmogorov", epsilon=e)(model, data).value for e in (0.02, 0.1, 0.5, 2.0)]
    assert single == sorted(single, reverse=True)
    curve = rate_distortion(model, data, epsilons=(4, 2, 1, 0.5, 0.25, 0.125, 0.0625))
    assert curve["epsilon"].tolist() == [4, 2, 1, 0.5, 0.25, 0.125, 0.0625]
    assert curve["bits"].is_monotonic_increasing
    assert (curve["distortion"] <= curve["epsilon"] + 1e-12).all()


def test_extras_describe_the_solution():
    model, data = tiny_classifier()
    r = cz.get_measure("kolmogorov")(model, data)
    naive = cz.get_measure("naive_compression")(model).value
    assert r.extras["naive_bits"] == naive and r.extras["naive_ratio"] == pytest.approx(naive / r.value)
    assert r.extras["two_part_bits"] == pytest.approx(r.value + r.extras["data_bits"])
    assert 0 < r.extras["loss_evaluations"] < 30
    assert set(r.extras["ranks"]) == {"0.weight", "2.weight"}
    full = data.evaluate(model)["loss"]
    assert r.extras["original_loss"] == pytest.approx(full)


def test_paper_search_runs_and_respects_the_bound():
    model, data = tiny_classifier()
    m = cz.get_measure("kolmogorov.paper", bayes_init_points=2, bayes_iterations=3)
    assert (m.search, m.coder, m.max_examples) == ("bayes", "bz2-pickle", 512)
    r = m(model, data)
    assert r.extras["distortion"] <= 1.0 and r.value <= r.extras["exact_bits"]
    assert r.extras["loss_evaluations"] <= 1 + 2 + 2 + 3  # original, probes, random, iterations


@pytest.mark.parametrize("setting, value", [("epsilon", -1.0), ("search", "grid"), ("coder", "zip"),
                                            ("delta_range", (1.0, 0.1)), ("max_examples", 0)])
def test_bad_settings(setting, value):
    with pytest.raises(InvalidSettingError, match=setting):
        cz.get_measure("kolmogorov", **{setting: value})


def rebuild(model, extras):
    """The coarse model, rebuilt from the recorded delta, ranks and S sides by plain torch."""
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
            side = extras["s_side"][name]
            a = {"left": 1.0, "right": 0.0, "split": 0.5}[side]
            left = torch.round(u[:, :k] * s[:k] ** a / delta) * delta
            right = torch.round(s[:k, None] ** (1 - a) * vh[:k] / delta) * delta
            p.copy_((left @ right).reshape(p.shape))
    return coarse


def loss_and_error(model, x, y):
    with torch.no_grad():
        logits = model(x)
    return (nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) != y).double().mean().item())


@pytest.mark.parametrize("name", ["kolmogorov", "kolmogorov.paper"])
def test_errors_of_the_described_model_are_recorded(name):
    model, data = tiny_classifier()
    # The paper preset searches on a subset; the recorded errors are on the whole splits.
    settings = {"max_examples": 64, "bayes_init_points": 2, "bayes_iterations": 3} if name.endswith("paper") else {}
    r = cz.get_measure(name, epsilon=0.5, **settings)(model, data)
    ex = r.extras
    assert not ex["stored_exactly"]  # a coarse model, so the check below means something
    coarse = rebuild(model, ex)
    (xtr, ytr), (xte, yte) = data.train, data.test
    train_loss, train_err = loss_and_error(coarse, xtr, ytr)
    test_loss, test_err = loss_and_error(coarse, xte, yte)
    assert ex["n_train"] == 128
    assert ex["coarse_train_loss"] == pytest.approx(train_loss, rel=1e-5)
    assert ex["coarse_train_error"] == pytest.approx(train_err, abs=1e-12)
    assert ex["coarse_test_loss"] == pytest.approx(test_loss, rel=1e-5)
    assert ex["coarse_test_error"] == pytest.approx(test_err, abs=1e-12)
    assert ex["data_bits"] == pytest.approx(128 * train_loss / math.log(2), rel=1e-5)
    assert r.value + ex["data_bits"] == pytest.approx(ex["two_part_bits"])


def test_errors_are_none_without_a_test_split_or_a_classifier():
    w = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    r = cz.get_measure("kolmogorov")(linear(w), regression_data(2, 2, w))
    ex = r.extras
    assert ex["coarse_train_error"] is None and ex["coarse_test_loss"] is None and ex["coarse_test_error"] is None
    assert ex["n_train"] == 64 and ex["coarse_train_loss"] >= 0


def test_rate_distortion_rows_carry_the_described_errors():
    model, data = tiny_classifier()
    curve = rate_distortion(model, data, epsilons=(1, 0.1))
    for col in ("coarse_train_loss", "coarse_train_error", "coarse_test_loss", "coarse_test_error", "n_train"):
        assert curve[col].notna().all()
