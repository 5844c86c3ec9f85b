"""The Measure interface: a dataclass of settings that maps a model (and data) to a number."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ._settings import Limit, Rule, validate_settings
from .data import Data
from .errors import (
    ComplexityZooError,
    DataError,
    InvalidSettingError,
    MeasureError,
    MissingDataError,
    MissingDependencyError,
    MissingInitError,
    ModelError,
    NonFiniteError,
)

UNITS = ("bits", "nats", "")


@dataclass(frozen=True)
class MeasureResult:
    """A measured value with its standard error, sampler diagnostics and extra detail.

    ``diagnostics`` uses ArviZ's names (``ess_bulk``, ``r_hat``); ``extras`` holds per-layer
    values, traces and chosen settings: JSON-like values (numbers, strings, lists, dicts).
    """

    value: float
    stderr: float | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


NO_REFERENCE_RUN = "no reference run"


@dataclass(frozen=True)
class Convention:
    """A measure's declared reference facts, one row of the conventions table
    (:func:`complexity_zoo.registry.conventions_table`).

    ``paper``: the definition (paper, equation); ``code``: the reference implementation (repository
    and path, or package); ``default``: the convention this library uses by default; ``switch``: the
    settings that reproduce the reference code ("" when the default already does, or there is no
    code); ``agreement``: what was measured against the reference, and how closely, or
    ``NO_REFERENCE_RUN``; ``tests``: the tests ("tests/file.py::name") that measure it, required
    unless there was no reference run.
    """

    paper: str
    code: str = ""
    default: str = ""
    switch: str = ""
    agreement: str = NO_REFERENCE_RUN
    tests: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.agreement != NO_REFERENCE_RUN and not self.tests:
            raise ValueError(f"A convention with a measured agreement ({self.agreement!r}) names its test(s).")


class Measure:
    """Base class of every measure.

    Subclasses are made keyword-only dataclasses automatically: declare settings as annotated
    fields with defaults (the reference values, with their source in the docstring) and
    implement ``compute(model, data)``, returning a float or a :class:`MeasureResult`.
    Every setting is checked when the measure is made: its annotated type (bools are not
    numbers, floats are finite), ``limits`` (setting -> Limit) and ``rules`` (across settings).
    Declared facts are class attributes: ``name`` (set by ``register_measure``), ``unit``,
    ``needs_data``, ``needs_init`` (then ``compute(model, data, init)`` also receives the run's
    initial parameters as a state dict), ``stochastic`` (every measure that draws random numbers;
    it needs a ``seed`` setting, which compare() fills per cell when it is None), ``lossless``
    (bits that describe the given model exactly), ``requires``
    (importable modules) with ``extra`` (the pip extra that installs them), ``presets``
    (tag -> settings), ``version`` (bump it when results change, to invalidate caches) and
    ``convention`` (a :class:`Convention`: reference, default, the switch to the reference code's
    convention, the agreement measured and its test).
    ``causal_lm``: it applies to causal language models (False: its error says why not).
    ``tensors_only``: the measure is a function of the named parameter tensors alone; it
    implements ``compute_tensors`` (the model path feeds it ``named_parameters()``), and
    :meth:`on_tensors` / compare() can stream the tensors from checkpoint files instead.
    """

    name: ClassVar[str] = ""
    unit: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    needs_init: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    # A measure in bits whose code describes the given model exactly (no coarse-graining), so
    # bounds may pair its bits with the model's own training error.
    lossless: ClassVar[bool] = False
    # A function of the named parameter tensors alone (no module, no buffers): compute_tensors().
    tensors_only: ClassVar[bool] = False
    # The measure has a reading on a causal language model (transformers' *ForCausalLM with
    # loss="causal_lm" data: next-token losses, accuracies and margins); False where it cannot
    # apply, and then its error on such a model says why.
    causal_lm: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    version: ClassVar[int] = 1
    convention: ClassVar[Convention | None] = None
    # Checked at construction with the annotated types (see complexity_zoo._settings).
    limits: ClassVar[dict[str, Limit | tuple[Limit, ...]]] = {}
    rules: ClassVar[tuple[Rule, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")

        def __post_init__(self) -> None:  # types, limits and rules first, then the measure's own checks
            validate_settings(self)
            if own is not None:
                own(self)

        cls.__post_init__ = __post_init__
        dataclass(kw_only=True)(cls)
        if cls.stochastic and "seed" not in {f.name for f in dataclasses.fields(cls)}:
            raise TypeError(f"{cls.__qualname__} is stochastic and must have a 'seed' setting.")

    # -- declared facts ---------------------------------------------------------------------
    @classmethod
    def family(cls) -> str:
        """The module family the measure belongs to (``norms``, ``spectral``, ...)."""
        return cls.__module__.rsplit(".", 1)[-1]

    @classmethod
    def summary(cls) -> str:
        doc = cls.__doc__ or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @classmethod
    def available(cls) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in cls.requires)

    def settings(self) -> dict[str, Any]:
        """The settings as given (the dataclass fields), unmodified."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def key(self) -> str:
        """A digest of name, version and settings: equal keys give equal results."""
        blob = json.dumps(
            {"name": self.name, "version": self.version, "settings": self.settings()},
            sort_keys=True,
            default=repr,
        )
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    # -- evaluation -------------------------------------------------------------------------
    def compute(self, model: nn.Module, data: Data | None, *args: Any) -> float | MeasureResult:
        if self.tensors_only:  # the one implementation, fed the model's parameters
            return self.compute_tensors(((n, p.detach()) for n, p in model.named_parameters()), *args)
        raise NotImplementedError(f"{type(self).__qualname__} must implement compute().")

    def compute_tensors(
        self, tensors: Iterable[tuple[str, torch.Tensor]], init: Mapping[str, torch.Tensor] | None = None
    ) -> float | MeasureResult:
        """A ``tensors_only`` measure on (name, parameter) pairs, read once, in order; ``init``
        maps names to initial values (``needs_init``). Tensors may be any float dtype."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement compute_tensors().")

    def on_tensors(
        self, tensors: Iterable[tuple[str, torch.Tensor]], *, init: Mapping[str, torch.Tensor] | None = None,
        device: torch.device | str | None = None,
    ) -> MeasureResult:
        """The measure on a stream of named parameter tensors (e.g. ``checkpoint.tensors()``
        filtered to the parameters), each moved to ``device``; the same checks and result as
        ``__call__`` on the model holding them. Only for ``tensors_only`` measures."""
        label = f"measure {self.name or type(self).__qualname__!r}"
        self._check_available(label)
        if not self.tensors_only:
            raise ModelError(f"The {label} needs the model, not only its tensors; call it on the model.")
        if self.needs_init and init is None:
            raise MissingInitError(f"The {label} needs the run's initial weights; pass init=... (a mapping).")
        guard = _FiniteGuard(tensors, device)
        try:
            out = self.compute_tensors(guard, init) if self.needs_init else self.compute_tensors(guard)
        except ComplexityZooError:
            guard.check()
            raise
        except Exception as e:
            guard.check()
            raise MeasureError(f"The {label} failed: {type(e).__name__}: {e}") from e
        guard.check()
        return self._result(out, label)

    def __call__(
        self, model: nn.Module, data: Data | None = None, *, init: nn.Module | Mapping[str, torch.Tensor] | None = None
    ) -> MeasureResult:
        """Validate the inputs, compute, and return a checked :class:`MeasureResult`.

        ``init`` (the run's initial weights, a module or a state dict) is required by, and only
        passed to, measures with ``needs_init``.
        """
        label = f"measure {self.name or type(self).__qualname__!r}"
        self._check_available(label)
        if not isinstance(model, nn.Module):
            raise ModelError(f"The {label} takes a torch.nn.Module; got {type(model).__name__}.")
        if self.needs_data and data is None:
            raise MissingDataError(
                f"The {label} needs data (a complexity_zoo.Data); pass data=... "
                f"(e.g. cz.tasks.modular.dataset(...) or Data.from_tensors(...))."
            )
        if data is not None and not isinstance(data, Data):
            raise DataError(f"The {label} takes data as a complexity_zoo.Data; got {type(data).__name__}.")
        check_finite_weights(model)
        if self.needs_init:
            if init is None:
                raise MissingInitError(
                    f"The {label} needs the run's initial weights; pass init=... (a state dict or "
                    f"module), or give the Trajectory an init= (compare uses its first checkpoint)."
                )
            init_params = init_parameters(init, model, label, buffers=bool(getattr(self, "fold_batchnorm", False)))
        try:
            out = self.compute(model, data, init_params) if self.needs_init else self.compute(model, data)
        except ComplexityZooError:
            raise
        except Exception as e:
            raise MeasureError(f"The {label} failed: {type(e).__name__}: {e}") from e
        return self._result(out, label)

    def _check_available(self, label: str) -> None:
        if not self.available():
            missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
            hint = f"pip install 'complexity-zoo[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
            raise MissingDependencyError(f"The {label} needs {missing}; install it with: {hint}")

    def _result(self, out: float | MeasureResult, label: str) -> MeasureResult:
        result = out if isinstance(out, MeasureResult) else MeasureResult(value=out)
        value = float(result.value)
        if not math.isfinite(value):
            raise NonFiniteError(f"The {label} produced a non-finite value ({value}).")
        stderr = None if result.stderr is None else float(result.stderr)
        return dataclasses.replace(result, value=value, stderr=stderr)

    def _setting_error(self, setting: str, expected: str, got: Any) -> InvalidSettingError:
        return InvalidSettingError(
            f"The {setting!r} setting of measure {self.name!r} must be {expected}. Got {got!r} instead."
        )


def init_parameters(
    init: nn.Module | Mapping[str, torch.Tensor], model: nn.Module, label: str = "measure", buffers: bool = False
) -> dict[str, torch.Tensor]:
    """The initial value of each of ``model``'s parameters (detached, on its device and dtype);
    with ``buffers``, also those of its buffers that ``init`` holds with the same shape (BatchNorm
    running statistics, for folding).

    Raises :class:`ModelError` when ``init`` lacks a parameter or has another shape, and
    :class:`NonFiniteError` when it holds NaN or inf.
    """
    if isinstance(init, nn.Module):
        init = dict(init.state_dict())
    if not isinstance(init, Mapping):
        raise ModelError(f"The {label}'s init must be a state dict or an nn.Module; got {type(init).__name__}.")
    out = {}
    for name, p in model.named_parameters():
        t = init.get(name)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(p.shape):
            got = "missing" if t is None else f"shape {tuple(getattr(t, 'shape', ()))}"
            raise ModelError(
                f"The {label}'s init does not fit the model: parameter {name!r} of shape "
                f"{tuple(p.shape)} is {got} there. Pass the initial weights of this architecture."
            )
        if t.is_floating_point() and not bool(_all_finite(t)):
            raise NonFiniteError(f"The {label}'s init has non-finite entries in {name!r}.")
        out[name] = t.detach().to(device=p.device, dtype=p.dtype)
    for name, b in model.named_buffers() if buffers else ():
        t = init.get(name)
        if isinstance(t, torch.Tensor) and tuple(t.shape) == tuple(b.shape):
            out[name] = t.detach().to(device=b.device, dtype=b.dtype)
    return out


def check_finite_weights(model: nn.Module) -> None:
    """Raise :class:`NonFiniteError` naming the first tensor with NaN or inf entries."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(_all_finite(t)):
            raise NonFiniteError(
                f"The model's tensor {name!r} has non-finite entries (NaN or inf); measures "
                f"on diverged weights are undefined."
            )


def _all_finite(t: torch.Tensor) -> torch.Tensor:
    """Whether every entry is finite (a 0-d bool tensor on t's device).

    Its min and max are finite exactly when every entry is (both propagate NaN): one pass and
    no temporary, where isfinite on a whole tensor holds about twice the tensor's size.
    """
    if t.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=t.device)
    low, high = torch.aminmax(t.reshape(-1))
    return torch.isfinite(low) & torch.isfinite(high)


class _FiniteGuard:
    """Passes (name, tensor) pairs through, moved to ``device``, checking that each is finite.

    On the CPU each tensor is checked as it passes; elsewhere the checks stay on the device and
    are read once, at the end (no host round-trip per tensor).
    """

    def __init__(self, tensors: Iterable[tuple[str, torch.Tensor]], device: torch.device | str | None) -> None:
        self.tensors, self.device = tensors, None if device is None else torch.device(device)
        self.pending: list[tuple[str, torch.Tensor]] = []

    def __iter__(self):
        for name, t in self.tensors:
            t = t.detach() if self.device is None else t.detach().to(self.device, non_blocking=True)
            if t.is_floating_point():
                ok = _all_finite(t)
                if t.device.type == "cpu":
                    self._raise_unless(name, bool(ok))
                else:
                    self.pending.append((name, ok))
            yield name, t

    def check(self) -> None:
        if self.pending:
            flags = torch.stack([ok for _, ok in self.pending]).cpu().tolist()
            for (name, _), ok in zip(self.pending, flags):
                self._raise_unless(name, ok)

    @staticmethod
    def _raise_unless(name: str, ok: bool) -> None:
        if not ok:
            raise NonFiniteError(
                f"The tensor {name!r} has non-finite entries (NaN or inf); measures on diverged "
                f"weights are undefined."
            )
