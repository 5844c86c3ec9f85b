"""The per-checkpoint context: a measure in a job gives exactly what it gives alone, each matrix's
SVD is taken once per job, the context's memory is bounded, and the vectorized power-law fit
equals the per-candidate scan it replaced."""

from __future__ import annotations

import concurrent.futures as cf
import math

import numpy as np
import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo._context import checkpoint_context, current
from complexity_zoo.errors import UndefinedMeasureError
from complexity_zoo.measures.heavy_tail import power_law_fit
from complexity_zoo.testing import mlp

SHARED = ["effective_rank", "spectral_entropy", "stable_rank", ("alpha", {"min_eigenvalues": 3}),
          ("alpha_weighted", {"min_eigenvalues": 3}), "fro_over_spectral", "log_prod_fro_over_spectral",
          "log_prod_spectral", "log_sum_spectral"]


def _measure(spec) -> cz.Measure:
    return cz.get_measure(spec) if isinstance(spec, str) else cz.get_measure(spec[0], **spec[1])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 7),
                         nn.Conv2d(3, 6, 3))


@pytest.fixture
def svd_calls(monkeypatch):
    """Every matrix whose singular values are taken (by _weights.singular_values, the one route
    of spectra() on the CPU: Gram eigenvalues or SVD)."""
    from complexity_zoo.measures import _weights

    calls = []
    real = _weights.singular_values

    def counted(w):
        calls.append(tuple(w.shape))
        return real(w)

    monkeypatch.setattr(_weights, "singular_values", counted)
    return calls


def _spectrum_bytes(ctx) -> int:
    return sum(v.numel() * v.element_size() for (kind, _), v in ctx._entries.items() if kind == "spectrum")


def test_measures_in_one_context_equal_each_alone_and_share_each_svd(svd_calls):
    model = _model()
    alone = {str(s): _measure(s)(model) for s in SHARED}
    n_alone = len(svd_calls)
    svd_calls.clear()
    with checkpoint_context() as ctx:
        together = {str(s): _measure(s)(model) for s in SHARED}
    for k, want in alone.items():
        assert together[k].value == want.value, k
        assert together[k].extras == want.extras, k
    assert len(svd_calls) == 4 < n_alone  # one per weight matrix (3 Linear + 1 conv), not one per measure
    assert ctx.hits > 0 and _spectrum_bytes(ctx) == sum(min(s) * 8 for s in svd_calls)
    assert current() is None  # closed with the block


def test_a_context_past_its_byte_budget_computes_as_without_one(svd_calls):
    model = _model()
    want = [_measure(s)(model).value for s in SHARED]
    svd_calls.clear()
    with checkpoint_context(max_bytes=0) as ctx:
        got = [_measure(s)(model).value for s in SHARED]
    assert got == want
    assert ctx.nbytes == 0 and ctx.hits == 0 and len(svd_calls) > 4


def test_spectra_of_differences_from_init_are_not_shared():
    model, init = _model(), _model()
    for p in init.parameters():
        p.data.mul_(0.5)
    want = cz.get_measure("spectral_distance")(model, init=init).value
    with checkpoint_context():
        cz.get_measure("stable_rank")(model)  # fills the context with W's spectra
        got = cz.get_measure("spectral_distance")(model, init=init).value
    assert got == want and got > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_weights_never_share_their_parameters_spectra(dtype):
    """A BatchNorm-folded conv weight keeps its parameter's name (and, in a float64 network, its
    dtype and shape): measures that fold and measures that read the stored weights must not see
    each other's spectra, in either order."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5))
    model.train()
    model(torch.randn(16, 3, 8, 8))  # running statistics away from (0, 1)
    model = model.eval().to(dtype)
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 3.0)
    names = ["stable_rank", "log_prod_spectral", "effective_rank", "fro_over_spectral"]
    alone = {n: cz.get_measure(n)(model).value for n in names}
    assert alone["log_prod_spectral"] != cz.get_measure("log_prod_spectral", fold_batchnorm=False)(model).value
    for order in (names, names[::-1]):
        with checkpoint_context():
            together = {n: cz.get_measure(n)(model).value for n in order}
        assert together == alone, order


def test_a_job_folds_batchnorm_once_and_shares_the_folded_spectra(monkeypatch, svd_calls):
    from complexity_zoo.measures import _batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5))
    model(torch.randn(16, 3, 8, 8))
    model.eval()
    folding = ["log_prod_spectral", "fro_over_spectral", "log_sum_spectral", "param_norm"]
    alone = {n: cz.get_measure(n)(model).value for n in folding}
    folds = []
    real = _batchnorm.fold_batchnorm
    monkeypatch.setattr(_batchnorm, "fold_batchnorm", lambda *a, **k: folds.append(1) or real(*a, **k))
    svd_calls.clear()
    with checkpoint_context():
        together = {n: cz.get_measure(n)(model).value for n in folding}
        cz.get_measure("stable_rank")(model)  # the stored weights: their own spectra
    assert together == alone
    assert len(folds) == 1  # one fold for the job
    assert len(svd_calls) == 4  # 2 folded matrices once for the folding measures, 2 stored for stable_rank


def test_threads_see_their_own_context():
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(mlp())

    def job(model):
        with checkpoint_context() as ctx:
            return cz.get_measure("stable_rank")(model).value, ctx

    with cf.ThreadPoolExecutor(2) as pool:
        (v0, c0), (v1, c1) = pool.map(job, models)
    assert c0 is not c1 and v0 != v1
    assert (v0, v1) == tuple(cz.get_measure("stable_rank")(m).value for m in models)


def test_compare_takes_each_matrix_svd_once_per_checkpoint(svd_calls):
    torch.manual_seed(0)
    models = [mlp(), mlp()]
    traj = cz.Trajectory.from_state_dicts({10: models[0].state_dict(), 20: models[1].state_dict()}, model=mlp)
    names = ["effective_rank", "stable_rank", "log_prod_spectral"]
    result = cz.compare(traj, names, progress=False, strict=True)
    matrices = sum(p.ndim >= 2 for p in models[0].parameters())
    assert len(svd_calls) == 2 * matrices
    for step, model in zip((10, 20), models):
        for name in names:
            assert result.dataset[name].sel(step=step).item() == cz.get_measure(name)(model).value


# -- the power-law fit: vectorized, against the per-candidate scan it replaced ------------------
def scan_fit(eigenvalues):
    """The former implementation: one candidate x_min at a time, strict '<' on the KS distance."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    lam = lam[lam > 0]
    best = None
    logs = np.log(lam)
    suffix = np.cumsum(logs[::-1])[::-1]
    for i in range(len(lam) - 1):
        if i > 0 and lam[i] == lam[i - 1]:
            continue
        n = len(lam) - i
        denom = suffix[i] - n * logs[i]
        if denom <= 0:
            continue
        alpha = 1 + n / denom
        tail = lam[i:]
        cdf_fit = 1 - (tail / lam[i]) ** (1 - alpha)
        ks = float(max(np.abs(np.arange(1, n + 1) / n - cdf_fit).max(), np.abs(cdf_fit - np.arange(0, n) / n).max()))
        if best is None or ks < best["ks"]:
            best = {"alpha": float(alpha), "xmin": float(lam[i]), "n_tail": n, "ks": ks,
                    "alpha_stderr": float((alpha - 1) / math.sqrt(n))}
    return best


def _spectra():
    rng = np.random.default_rng(0)
    for n in (3, 4, 10, 57, 300, 1500):
        yield rng.pareto(2.5, n) + 1  # heavy tail
        yield rng.standard_normal((2 * n, n)).T @ rng.standard_normal((2 * n, n)) @ np.ones(n) ** 2  # anything
        w = rng.standard_normal((3 * n, n))
        yield np.linalg.eigvalsh(w.T @ w)  # Marchenko-Pastur
        yield np.round(rng.exponential(size=n) * 4) + 1  # many ties


@pytest.mark.parametrize("block", [None, 7])
def test_the_vectorized_fit_equals_the_scan(block, monkeypatch):
    import complexity_zoo.measures.heavy_tail as ht

    if block is not None:
        monkeypatch.setattr(ht, "KS_BLOCK", block)  # many blocks, and blocks of one candidate
    for lam in _spectra():
        lam = np.abs(lam)
        want, got = scan_fit(lam), power_law_fit(lam)
        assert got["xmin"] == want["xmin"] and got["n_tail"] == want["n_tail"]
        for k in ("alpha", "ks", "alpha_stderr"):
            assert math.isclose(got[k], want[k], rel_tol=1e-12, abs_tol=1e-15), k


def test_a_fit_without_candidates_still_raises():
    with pytest.raises(UndefinedMeasureError, match="all eigenvalues equal"):
        power_law_fit(np.ones(20))


MARGINS = ["inverse_margin", "log_prod_spectral_over_margin", "log_sum_frobenius_over_margin", "spec_orig"]


def test_margin_measures_share_one_forward_pass_and_equal_each_alone(trajectory):
    from complexity_zoo.testing import tiny_classifier

    _, data = tiny_classifier(seed=1)
    model = trajectory.model_at(trajectory.steps[-1])
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    alone = {n: cz.get_measure(n)(model, data).value for n in MARGINS}
    n_alone = len(calls)
    calls.clear()
    with checkpoint_context():
        together = {n: cz.get_measure(n)(model, data).value for n in MARGINS}
        assert len(calls) == n_alone // len(MARGINS)  # one pass over the training split
        with torch.no_grad():
            next(model.parameters()).mul_(2.0)  # changed weights: computed again
        changed = cz.get_measure("inverse_margin")(model, data).value
    assert together == alone
    assert len(calls) == 2 * n_alone // len(MARGINS) and changed != alone["inverse_margin"]


def test_alpha_and_alpha_weighted_share_each_layers_fit(monkeypatch):
    from complexity_zoo.measures import heavy_tail

    model = _model()
    names = [("alpha", {"min_eigenvalues": 3}), ("alpha_weighted", {"min_eigenvalues": 3})]
    alone = [_measure(s)(model) for s in names]
    calls = []
    real = heavy_tail.power_law_fit
    monkeypatch.setattr(heavy_tail, "power_law_fit", lambda *a: calls.append(1) or real(*a))
    with checkpoint_context():
        together = [_measure(s)(model) for s in names]
    assert [r.value for r in together] == [r.value for r in alone]
    assert together[0].extras == alone[0].extras
    assert len(calls) == len(alone[0].extras["fits"])  # one fit per layer for both measures


def test_the_perturbation_searches_share_the_base_accuracy_and_equal_each_alone(trajectory, monkeypatch):
    from complexity_zoo.measures import flatness
    from complexity_zoo.testing import tiny_classifier

    _, data = tiny_classifier(seed=1)
    model = trajectory.model_at(trajectory.steps[-1])
    names = [("pacbayes_flatness", {"montecarlo_samples": 3, "search_depth": 3, "seed": 0}),
             ("sharpness_flatness", {"search_depth": 3, "ascent_steps": 2, "seed": 0})]
    alone = [_measure(s)(model, data) for s in names]
    bases = []
    real = flatness.accuracy_tensor
    monkeypatch.setattr(flatness, "accuracy_tensor", lambda m, d, params=None: (
        bases.append(1) if params is None else None) or real(m, d, params))
    with checkpoint_context():
        together = [_measure(s)(model, data) for s in names]
    assert [r.value for r in together] == [r.value for r in alone]
    assert [r.extras for r in together] == [r.extras for r in alone]
    assert len(bases) == 1  # the unperturbed training accuracy, once for both searches
