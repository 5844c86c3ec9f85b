"""Named conventions that reproduce the reference code (Jiang et al. 2020 / Dziugaite et al. 2020,
github nitarshan/robust-generalization-measures): the PAC-Bayes σ draw and PARAMS."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.cli import main
from complexity_zoo.measure import NO_REFERENCE_RUN
from complexity_zoo.registry import conventions_table

BIG_NUMBER = 10348628753  # the reference code seeds its generator with this + seed


def trained_mlp(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(300, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net, x, y


@torch.no_grad()
def reference_search(model, x, y, seed, mag_eps=None, depth=15, samples=10, target=0.1, tol=1e-2):
    """The reference code's σ search restated: bisection on [0, 2]; each parameter perturbed by
    torch.normal(0, σ²) (magnitude-aware: std σ²|p|² + ε²) from one CPU generator seeded with
    BIG_NUMBER + seed; mean accuracy over the draws compared with the clean accuracy."""
    clean = float((model(x).argmax(1) == y).float().mean())
    gen = torch.Generator().manual_seed(BIG_NUMBER + seed)
    lower, upper, sigma, sigmas = 0.0, 2.0, 1.0, []
    for _ in range(depth):
        sigma = (lower + upper) / 2
        sigmas.append(sigma)
        accs = []
        for _ in range(samples):
            noisy = copy.deepcopy(model)
            for p in noisy.parameters():
                if mag_eps is None:
                    p.add_(torch.normal(0, sigma**2, p.shape, generator=gen))
                else:
                    p.add_(torch.normal(0, sigma**2 * p.abs() ** 2 + mag_eps**2, generator=gen))
            accs.append(float((noisy(x).argmax(1) == y).float().mean()))
        shift = abs(sum(accs) / len(accs) - clean)
        if abs(shift - target) < tol:
            break
        upper, lower = (sigma, lower) if shift > target else (upper, sigma)
    return sigma, sigmas


@pytest.mark.parametrize("name, eps", [("pacbayes_flatness", None), ("pacbayes_mag_flatness", 1e-3)])
def test_reference_code_sigma_reproduces_the_reference_search(name, eps):
    model, x, y = trained_mlp()
    data = cz.Data.from_tensors(train=(x, y))
    want, path = reference_search(model, x, y, seed=0, mag_eps=eps)
    got = cz.get_measure(name, sigma_convention="reference_code", seed=0)(model, data)
    assert [t["sigma"] for t in got.extras["search"]] == path
    assert got.extras["sigma"] == want
    assert got.value == pytest.approx(1 / want**2, rel=1e-12)
    paper = cz.get_measure(name, seed=0)(model, data)
    assert paper.extras["sigma"] != want  # the conventions differ on this case


def test_sigma_convention_is_checked():
    with pytest.raises(ValueError, match="sigma_convention"):
        cz.get_measure("pacbayes_orig", sigma_convention="code")


def test_param_count_weights_only_is_the_reference_params():
    model, _, _ = trained_mlp()
    assert cz.get_measure("param_count")(model).value == 6 * 16 + 16 + 16 * 3 + 3
    assert cz.get_measure("param_count", weights_only=True)(model).value == 6 * 16 + 16 * 3


def test_every_row_of_the_conventions_table_is_backed_by_a_test_or_says_no_reference_run():
    table = conventions_table()
    assert set(table["name"]) == set(cz.list_measures()["name"])
    root = Path(__file__).parent.parent
    defined: dict[str, set[str]] = {}
    for _, row in table.iterrows():
        if row["agreement"] == NO_REFERENCE_RUN:
            continue
        assert row["tests"], row["name"]
        for ref in row["tests"].split(", "):
            path, _, func = ref.partition("::")
            if path not in defined:
                tree = ast.parse((root / path).read_text())
                defined[path] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            assert func in defined[path], (row["name"], ref)
    declared = table[table["agreement"] != NO_REFERENCE_RUN]["name"]
    assert {"param_norm", "log_prod_spectral", "frobenius_distance", "pacbayes_flatness", "alpha",
            "hessian_trace", "param_count"} <= set(declared)


def test_measures_conventions_prints_the_table(capsys):
    assert main(["measures", "--conventions", "pacbayes*"]) == 0
    out = capsys.readouterr().out
    assert "sigma_convention='reference_code'" in out and "pacbayes_mag_orig" in out and "alpha " not in out
