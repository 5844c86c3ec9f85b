"""The spectral-entropy regularizer and the weight-noise context, against closed forms,
finite differences and exact restoration."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from complexity_zoo.errors import InvalidSettingError, ModelError
from complexity_zoo.regularizers import spectral_entropy, weight_noise


def _with_singular_values(s: list[float], m: int, n: int, seed: int = 0) -> torch.Tensor:
    """An m x n matrix with the given singular values (random orthonormal frames)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    k = len(s)
    return u[:, :k] @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v[:, :k].T


class _Holder(nn.Module):
    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__()
        self.ws = nn.ParameterList(nn.Parameter(t.clone()) for t in tensors)


def _closed_form(s: list[float], eps: float = 1e-10) -> float:
    total = sum(s)
    return -sum((x / total) * math.log(x / total + eps) for x in s)


def test_value_matches_closed_form_on_known_spectra():
    spectra = [[3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0], [5.0, 0.5]]
    mats = [_with_singular_values(s, 6, 5, seed=i) for i, s in enumerate(spectra)]
    model = _Holder(*mats)
    expected = sum(_closed_form(s) for s in spectra) / len(spectra)
    assert spectral_entropy(model).item() == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # four equal singular values: entropy ln 4 (effective rank 4)
    assert spectral_entropy(_Holder(mats[1])).item() == pytest.approx(math.log(4), abs=1e-8)


def test_singular_values_not_squared():
    # p = (3/4, 1/4) from s = (3, 1); squaring would give (9/10, 1/10).
    model = _Holder(torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64)))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert spectral_entropy(model).item() == pytest.approx(h, abs=1e-8)


def test_only_matrices_count_and_tensors_are_reshaped():
    conv = torch.zeros(2, 1, 2, 2, dtype=torch.float64)  # read as 2 x 4
    conv[0, 0, 0, 0], conv[1, 0, 1, 1] = 2.0, 1.0  # singular values 2, 1
    model = _Holder(conv, torch.ones(7, dtype=torch.float64))  # the vector is ignored
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert spectral_entropy(model).item() == pytest.approx(h, abs=1e-8)


def test_embeddings_are_included():
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2))
    s_emb = torch.linalg.svdvals(model[0].weight.detach())
    s_lin = torch.linalg.svdvals(model[1].weight.detach())
    expected = (_closed_form(s_emb.tolist()) + _closed_form(s_lin.tolist())) / 2
    assert spectral_entropy(model).item() == pytest.approx(expected, rel=1e-5)


def test_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)  # read as 2 x 6
    assert torch.autograd.gradcheck(
        lambda a, b, c: spectral_entropy(_View(a, b, c)), (a, b, c), eps=1e-6, atol=1e-6
    )


class _View(nn.Module):
    """A module whose 'parameters' are given tensors, so gradcheck can differentiate through."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__()
        self._tensors = tensors

    def named_parameters(self, *args, **kwargs):  # type: ignore[override]
        return ((f"w{i}", t) for i, t in enumerate(self._tensors))


def test_zero_matrices_are_skipped_and_no_matrices_is_an_error():
    model = _Holder(torch.zeros(3, 3), torch.diag(torch.tensor([1.0, 1.0])))
    assert spectral_entropy(model).item() == pytest.approx(math.log(2), abs=1e-6)
    with pytest.raises(ModelError):
        spectral_entropy(nn.LayerNorm(4))


def test_weight_noise_restores_exactly_and_perturbs_inside():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    with weight_noise(model, 1e-2, generator=g):
        inside = {k: v.clone() for k, v in model.state_dict().items()}
    for k in before:
        assert torch.equal(model.state_dict()[k], before[k])  # bit-exact
        diff = inside[k] - before[k]
        assert diff.abs().max() > 0  # every parameter, biases and norms included
    d = torch.cat([(inside[k] - before[k]).flatten() for k in before])
    assert d.std().item() == pytest.approx(1e-2, rel=0.2)  # ~150 draws of N(0, 1e-4)


def test_weight_noise_restores_on_error_and_is_reproducible():
    model = nn.Linear(3, 3)
    before = model.weight.detach().clone()
    with pytest.raises(RuntimeError), weight_noise(model, 0.1):
        raise RuntimeError("boom")
    assert torch.equal(model.weight, before)
    draws = []
    for _ in range(2):
        with weight_noise(model, 0.1, generator=torch.Generator().manual_seed(5)):
            draws.append(model.weight.detach().clone())
    assert torch.equal(draws[0], draws[1])


def test_weight_noise_gradient_is_taken_at_the_noisy_point():
    # loss = sum(w^2)/2 has gradient w: taken inside, it equals the perturbed weights.
    model = nn.Linear(2, 2, bias=False)
    clean = model.weight.detach().clone()
    with weight_noise(model, 0.5, generator=torch.Generator().manual_seed(0)):
        noisy = model.weight.detach().clone()
        (model.weight.pow(2).sum() / 2).backward()
    assert torch.allclose(model.weight.grad, noisy)
    assert not torch.allclose(model.weight.grad, clean)
    assert torch.equal(model.weight.detach(), clean)


def test_weight_noise_rejects_bad_std_and_zero_is_a_no_op():
    model = nn.Linear(2, 2)
    with pytest.raises(InvalidSettingError):
        with weight_noise(model, -1.0):
            pass
    before = model.weight.detach().clone()
    with weight_noise(model, 0.0):
        assert torch.equal(model.weight, before)
