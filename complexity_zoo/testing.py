"""check_measure(): the conformance checks every measure, built-in or plugin, must pass.

Use it in a plugin's test suite the way scikit-learn's ``check_estimator`` is used::

    from complexity_zoo.testing import check_measure
    def test_my_measure():
        check_measure("my_measure")
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
from torch import nn

from ._lm_testing import (  # noqa: F401
    TokenDataset,
    hub_cache_suite,
    lm_tokens,
    tiny_gpt2,
    tiny_gpt_neox,
    tiny_llama,
    train_lm,
)
from .data import Data
from .errors import MissingDataError, MissingInitError, NonFiniteError, UndefinedMeasureError, UnknownSettingError
from .measure import UNITS, Measure, MeasureResult
from .registry import get_measure, measure_class

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(in_features: int = 4, hidden: int = 16, out_features: int = 3, activation: str = "tanh") -> nn.Module:
    """A one-hidden-layer MLP (tanh or ReLU): the importable model factory that tests and examples record."""
    return nn.Sequential(nn.Linear(in_features, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, out_features))


def tiny_init(seed: int = 0, activation: str = "tanh", in_features: int = 4, hidden: int = 16) -> nn.Module:
    """The initial weights of :func:`tiny_classifier` (same arguments)."""
    torch.manual_seed(seed)
    return mlp(in_features, hidden, activation=activation)


def tiny_classifier(seed: int = 0, activation: str = "tanh", in_features: int = 4,
                    hidden: int = 16) -> tuple[nn.Module, Data]:
    """A small MLP trained for a few steps on a seeded 3-class problem, and its data.

    It starts from :func:`tiny_init` with the same arguments.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(192, in_features, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    model = tiny_init(seed, activation, in_features, hidden)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:128]), y[:128]).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model, Data.from_tensors(train=(x[:128], y[:128]), test=(x[128:], y[128:]), batch_size=32)


def least_squares(n: int = 500, d: int = 5, seed: int = 0) -> tuple[nn.Module, Data]:
    """A regular known-answer model: a linear model at its least-squares solution (noise sd 0.5).

    Its learning coefficient is d/2; the LLC checks compare against it.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g) + 0.5 * torch.randn(n, 1, generator=g)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, Data.from_tensors(train=(x, y), loss="mse")


class ProductModel(nn.Module):
    """A singular known-answer model: y = a b x at a = b = 0, where λ = 1/2 with multiplicity 2
    (d/2 = 1 for a regular model with two parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(1))
        self.b = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * self.b * x


def _fail(name: str, what: str) -> AssertionError:
    return AssertionError(f"Measure {name!r} fails conformance: {what}")


def _snapshot(model: nn.Module) -> tuple:
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        model.training,
        {k: (p.requires_grad, None if p.grad is None else p.grad.clone()) for k, p in model.named_parameters()},
    )


def _same_snapshot(a: tuple, b: tuple) -> bool:
    (sa, ta, ga), (sb, tb, gb) = a, b
    same_state = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    same_grad = all(
        ga[k][0] == gb[k][0] and ((ga[k][1] is None and gb[k][1] is None) or
                                  (ga[k][1] is not None and gb[k][1] is not None and torch.equal(ga[k][1], gb[k][1])))
        for k in ga
    )
    return same_state and ta == tb and same_grad


def check_measure(
    measure: str | Measure,
    model: nn.Module | None = None,
    data: Data | None = None,
    init: nn.Module | None = None,
) -> MeasureResult:
    """Run the conformance checks on a measure (a registered name or an instance).

    Checks the declared facts, settings round trip and errors, that the result is a finite
    :class:`MeasureResult` (its stderr finite or None), that the model (and the initial
    weights of a ``needs_init`` measure) are left untouched, that ``init`` as a module and as a
    state dict agree, that equal seeds give equal numbers, and that non-finite weights are
    refused. Without a ``model`` it uses :func:`tiny_classifier` (tanh), or a wider ReLU one
    (32 inputs, 64 hidden units) for a measure that raises :class:`UndefinedMeasureError` on it
    (e.g. the path norm, or spectral fits that need more eigenvalues than a 16 x 4 layer has). Raises
    ``AssertionError`` naming the first failed check; returns the measured result.
    """
    instance = get_measure(measure) if isinstance(measure, str) else measure
    cls = type(instance)
    name = instance.name
    if not name:
        raise _fail(cls.__qualname__, "it is not registered (use @register_measure(name)).")
    registered, _ = measure_class(name)
    if registered is not cls:
        raise _fail(name, f"the registry holds {registered!r} under its name, not {cls!r}.")
    if cls.unit not in UNITS:
        raise _fail(name, f"unit {cls.unit!r} is not one of {UNITS}.")
    for attr in ("needs_data", "needs_init", "stochastic", "causal_lm"):
        if not isinstance(getattr(cls, attr), bool):
            raise _fail(name, f"{attr} must be a bool class attribute.")
    if not dataclasses.is_dataclass(cls) or not cls.summary():
        raise _fail(name, "it must be a dataclass with a docstring that says what it measures.")
    if cls.stochastic and "seed" not in instance.settings():
        raise _fail(name, "a stochastic measure needs a 'seed' setting.")
    if get_measure(name, **instance.settings()).settings() != instance.settings():
        raise _fail(name, "get_measure(name, **settings) does not reproduce its settings.")
    try:
        get_measure(name, no_such_setting_xyz=1)
    except UnknownSettingError:
        pass
    else:
        raise _fail(name, "an unknown setting was accepted silently.")

    if model is None:
        try:
            return _check_call(instance, *_default_case("tanh", data))
        except UndefinedMeasureError:
            return _check_call(instance, *_default_case("relu", data, in_features=32, hidden=64))
    if cls.needs_init and init is None:
        raise ValueError(f"check_measure: measure {name!r} needs init; pass the model's initial weights.")
    return _check_call(instance, model, data, init)


def _default_case(activation: str, data: Data | None, **sizes: int) -> tuple[nn.Module, Data, nn.Module]:
    model, default_data = tiny_classifier(activation=activation, **sizes)
    return model, (data if data is not None else default_data), tiny_init(activation=activation, **sizes)


def _check_call(instance: Measure, model: nn.Module, data: Data | None, init: nn.Module | None) -> MeasureResult:
    cls, name = type(instance), instance.name
    if cls.needs_data:
        try:
            instance(model, None, init=init)
        except MissingDataError:
            pass
        else:
            raise _fail(name, "it needs data but ran without it.")
    if cls.needs_init:
        try:
            instance(model, data)
        except MissingInitError:
            pass
        else:
            raise _fail(name, "it needs init but ran without it.")

    before = _snapshot(model)
    init_before = _snapshot(init) if init is not None else None
    result = instance(model, data, init=init)
    if not _same_snapshot(before, _snapshot(model)):
        raise _fail(name, "it changed the model (weights, grads, requires_grad or train/eval mode).")
    if init is not None and not _same_snapshot(init_before, _snapshot(init)):
        raise _fail(name, "it changed the initial weights it was given.")
    if not isinstance(result, MeasureResult) or not math.isfinite(result.value):
        raise _fail(name, f"it returned {result!r}, not a finite MeasureResult.")
    if result.stderr is not None and not math.isfinite(result.stderr):
        raise _fail(name, "its stderr is not finite (leave it None where there is none).")
    again = instance(model, data, init=init)
    if again.value != result.value:
        raise _fail(name, f"equal inputs and seed gave {result.value} then {again.value}.")
    if cls.needs_init:
        as_dict = instance(model, data, init={k: v.clone() for k, v in init.state_dict().items()})
        if as_dict.value != result.value:
            raise _fail(name, f"init as a module gave {result.value}, as a state dict {as_dict.value}.")

    if cls.tensors_only:  # the streamed path: the same one implementation, fed named tensors
        params = [(n, p.detach().clone()) for n, p in model.named_parameters()]
        init_map = dict(init.state_dict()) if init is not None else None
        streamed = instance.on_tensors(iter(params), init=init_map if cls.needs_init else None)
        if streamed.value != result.value:
            raise _fail(name, f"on the model it gave {result.value}, on its streamed tensors {streamed.value}.")
        try:
            instance.on_tensors(iter([(n, t.clone().fill_(float("nan"))) for n, t in params]), init=init_map)
        except NonFiniteError:
            pass
        else:
            raise _fail(name, "it accepted streamed tensors with NaN entries.")

    poisoned = _poisoned_copy(model)
    try:
        instance(poisoned, data, init=init)
    except NonFiniteError:
        pass
    else:
        raise _fail(name, "it accepted a model with NaN weights.")
    return result


def _poisoned_copy(model: nn.Module) -> nn.Module:
    poisoned = copy.deepcopy(model)
    with torch.no_grad():
        next(iter(poisoned.parameters())).view(-1)[0] = float("nan")
    return poisoned


POW13 = np.array(sorted({int(1.3**k) for k in range(60)}), dtype=float)


def correlated_curves(kind: str, n: int, reps: int, rng: np.random.Generator,
                      rho: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known-truth pairs of training-curve-like series for checking correlation statistics.

    (x, y, steps): ``reps`` rows of ``n`` points whose innovations correlate with ``rho``.
    ``kind``: "ar1" (stationary, φ = 0.9), "random_walk", "trend_noise" (opposite linear
    trends plus white noise) or "brownian_pow13" (Brownian motion at the paper's int(1.3^k)
    steps).
    """
    e1 = rng.standard_normal((reps, n))
    e2 = rho * e1 + np.sqrt(1 - rho**2) * rng.standard_normal((reps, n))
    steps = np.arange(n) * 200.0
    if kind == "ar1":  # stationary AR(1), φ = 0.9: level correlation rho
        x, y = np.empty((reps, n)), np.empty((reps, n))
        x[:, 0], y[:, 0] = e1[:, 0] / np.sqrt(1 - 0.81), e2[:, 0] / np.sqrt(1 - 0.81)
        for t in range(1, n):
            x[:, t] = 0.9 * x[:, t - 1] + e1[:, t]
            y[:, t] = 0.9 * y[:, t - 1] + e2[:, t]
    elif kind == "random_walk":
        x, y = e1.cumsum(1), e2.cumsum(1)
    elif kind == "trend_noise":  # opposite deterministic trends plus white noise
        t = np.linspace(0, 1, n)
        x, y = 3 * t + e1, -2 * t + e2
    elif kind == "brownian_pow13":  # Brownian motion observed at int(1.3^k) steps
        steps = POW13[:n]
        root = np.sqrt(np.diff(np.concatenate([[0.0], steps])))
        x, y = (e1 * root).cumsum(1), (e2 * root).cumsum(1)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return x, y, steps


def correlation_rates(kind: str, n: int, reps: int, seed: int, rho: float = 0.0,
                      method: str = "pearson") -> dict[str, float]:
    """How often ``correlate``'s intervals cover the truth and its p rejects at 0.05, by simulation.

    The increments' truth is ``rho``; the levels' truth is ``rho`` too, except for
    "trend_noise", whose levels co-trend by design (``levels_truth``). With ``rho`` = 0 the
    rejection rate is the type-I error; otherwise the power.
    """
    from .analysis.correlation import correlate_batch

    x, y, steps = correlated_curves(kind, n, reps, np.random.default_rng(seed), rho)
    out = correlate_batch(x, y, steps, method, granger=False)
    level = rho
    if kind == "trend_noise":  # the level correlation over the design: trends 3t and -2t, unit noise
        v = float(np.var(np.linspace(0, 1, n)))
        level = (-6 * v + rho) / math.sqrt((9 * v + 1) * (4 * v + 1))
    return {
        "levels_truth": level,
        "levels_coverage": float(np.mean((out["ci_low"] <= level) & (level <= out["ci_high"]))),
        "increments_coverage": float(np.mean((out["r_diff_ci_low"] <= rho) & (rho <= out["r_diff_ci_high"]))),
        "rejection": float(np.mean(out["p"] < 0.05)),
        "n_eff": float(np.median(out["n_eff"])),
        "n_eff_diff": float(np.median(out["n_eff_diff"])),
    }
