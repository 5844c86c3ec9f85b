"""Norm, distance and path-norm measures of the weights (Jiang et al. 2020, §A; Dziugaite et al. 2020).

Conventions follow the reference code of both papers (github nitarshan/robust-generalization-
measures, ``data/generation/measures.py``, itself adapted from Neyshabur et al.'s
``generalization-bounds``): the *layers* are the parameters with two or more dimensions (biases
and other vectors are left out), each read as a matrix (shape[0], -1); norms enter **squared**
(‖W‖_F², ‖W‖_2² with the exact largest singular value); d is the number of layers. Values are
the quantities *before* the papers' final size adjustment (√(value/m), or ½(value − log m) for
``log_*`` measures), which depends on the training-set size m only. Per-layer terms are in
``extras["per_layer"]``. The margin-normalized variants are in :mod:`.margins`.

BatchNorm: like the reference code, the layer measures here (all but ``l2``, ``param_count`` and
``path_norm``) fold each BatchNorm into the layer before it, with its running statistics, in the
model and in its initialization (``fold_batchnorm=True``, :mod:`._batchnorm`);
``fold_batchnorm=False`` measures the stored tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import MeasureError, UndefinedMeasureError
from ..measure import Convention, Measure, MeasureResult
from ..registry import register_measure
from ._batchnorm import FoldingMeasure
from ._weights import as_matrix, spectra, sum_squares, vector_norm

#: The reference code of Jiang et al. 2020 and Dziugaite et al. 2020.
JIANG_CODE = "github nitarshan/robust-generalization-measures, data/generation/measures.py"
JIANG_DEFAULT = ("BatchNorm folded (fold_batchnorm=True); layers: tensors with >= 2 dims as (out, -1); "
                 "squared norms; value before the size adjustment sqrt(v/m) or (v - log m)/2")
NORMS_TESTS = ("tests/test_norms.py::test_norms_and_distances_match_numpy",
               "tests/test_batchnorm_fold.py::test_default_equals_hand_folded_and_false_gives_stored_tensors",
               "tests/test_reference_recorded.py::test_folded_norms_equal_the_recorded_reference")
RESTATED = ("formula equal to a numpy restatement of the reference code's to 1e-9 (MLP); BatchNorm fold equal "
            "to a hand fold to 1e-6 (conv net); equal to values recorded from the reference code itself "
            "(get_all_measures, its NiN with BatchNorm, seeded) to 1e-7 relative, tested at 1e-5")


def jiang(eq: str, tests: tuple[str, ...] = NORMS_TESTS, agreement: str = RESTATED, **kw) -> Convention:
    """A measure of Jiang et al. 2020's family: its equation, the reference code, our default."""
    return Convention(paper=f"Jiang et al. 2020, eq. {eq}", code=JIANG_CODE, default=JIANG_DEFAULT,
                      switch="none needed: the default folds as the reference code does (it also applies the "
                             "size adjustment, a function of m only)", agreement=agreement, tests=tests, **kw)


def l2_norm(tensors: dict[str, Tensor]) -> tuple[float, dict[str, float]]:
    """Frobenius norm of all tensors taken together, and of each one (float64 accumulation)."""
    norms = [vector_norm(t) for t in tensors.values()]  # on each tensor's device; one transfer
    per = dict(zip(tensors, torch.stack(norms).cpu().tolist() if norms else []))
    return float(sum(v * v for v in per.values()) ** 0.5), per


def layer_matrices(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors with ``ndim >= 2``, detached, float64, each viewed as (shape[0], -1)."""
    return {n: t.detach().double().reshape(t.shape[0], -1) for n, t in tensors.items() if t.ndim >= 2}


def frobenius_sq(w: Tensor) -> float:
    """‖W‖_F²."""
    return float((w * w).sum())


def spectral_sq(w: Tensor) -> float:
    """‖W‖_2², the squared largest singular value (exact, by SVD)."""
    return float(torch.linalg.svdvals(w)[0]) ** 2


def layer_norms_sq(
    tensors: Iterable[tuple[str, Tensor]], norms: tuple[str, ...], init: Mapping[str, Tensor] | None = None
) -> dict[str, dict[str, float]]:
    """Per layer (``ndim >= 2``) and per norm ("frobenius", "spectral") ‖W‖² (of W − W⁰ with
    ``init``), read once from a stream; computed where each tensor lives, moved to the host once.

    The Frobenius norm accumulates in float64 piecewise; the spectral norm follows the SVD
    policy of :func:`~._weights.spectra` (float64 on the CPU, float32 on GPUs), shared with the
    other measures of a job when it is W's own (no ``init``).
    """
    fro: dict[str, Tensor] = {}

    def matrices():
        for name, t in tensors:
            if t.ndim < 2:
                continue
            w = as_matrix(t.detach())
            if init is not None:
                w = w.double() - as_matrix(init[name].detach()).to(w.device).double()
            fro[name] = sum_squares(w) if "frobenius" in norms else None
            yield name, w

    if "spectral" in norms:  # W itself is a parameter: its spectrum is shared within a job
        spec = {n: s[0].double() ** 2 for n, s in spectra(matrices(), shared=init is None).items()}
    else:
        spec = {n: None for n, _ in matrices()}
    rows = {n: [fro[n] if norm == "frobenius" else spec[n] for norm in norms] for n in spec}
    if not rows:
        raise MeasureError("The model has no parameter with two or more dimensions (no layer to measure).")
    host = torch.stack([torch.stack(r) for r in rows.values()]).cpu().tolist()
    return {norm: {n: vals[i] for n, vals in zip(rows, host)} for i, norm in enumerate(norms)}


def _log(x: float, what: str) -> float:
    if x <= 0.0:
        raise MeasureError(f"The log-norm measures need non-zero layers; {what} is {x}.")
    return math.log(x)


def log_norm_terms(model: nn.Module | Iterable[tuple[str, Tensor]], norm: str) -> dict[str, float]:
    """Per layer log ‖W‖² (``norm`` "spectral" or "frobenius") of a model or a tensor stream."""
    tensors = model.named_parameters() if isinstance(model, nn.Module) else model
    sq = layer_norms_sq(tensors, (norm,))[norm]
    return {n: _log(v, f"the squared {norm} norm of {n!r}") for n, v in sq.items()}


def log_sum_from_log_prod(log_prod: float, d: int) -> float:
    """Jiang et al.'s 'sum' form: log d + (1/d) Σ log ‖W_i‖² (= log of d times the geometric mean)."""
    return math.log(d) + log_prod / d


def path_norm_sq(model: nn.Module) -> float:
    """Σ over input-output paths of the product of squared weights: f_{w²}(1) summed over outputs.

    Biases enter squared too (as in the reference code). Defined for networks whose
    nonlinearities are ReLU (positively homogeneous, so with non-negative weights and inputs
    every unit is active and the network is linear): an ``nn.Sequential`` of Linear, ReLU,
    Identity, Flatten and Dropout, or the modular task's MLP (one-hot tokens read as the input).
    Anything else raises :class:`UndefinedMeasureError`.
    """
    from ..tasks._modular_models import ModularMLP  # lazy: measures do not need the tasks

    if isinstance(model, ModularMLP):
        e2 = model.embed.weight.detach().double() ** 2  # one-hot input: each token a unit
        x = torch.cat([e2.sum(0), e2.sum(0)])  # a and b share the embedding
        return float(_squared_forward([model.hidden, nn.ReLU(), model.out], x).sum())
    allowed = (nn.Linear, nn.ReLU, nn.Identity, nn.Flatten, nn.Dropout)
    leaves = [m for m in model.modules() if not list(m.children())]
    containers = [m for m in model.modules() if list(m.children())]
    bad = sorted({type(m).__name__ for m in leaves if not isinstance(m, allowed)} |
                 {type(m).__name__ for m in containers if not isinstance(m, nn.Sequential)})
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    if bad or not linears:
        raise UndefinedMeasureError(
            f"The path norm is defined here for ReLU/linear feed-forward networks (nn.Sequential of "
            f"Linear, ReLU, Identity, Flatten, Dropout); this model has {bad or 'no Linear layer'}. "
            f"Other nonlinearities (tanh, GELU, attention, normalization) have no path decomposition."
        )
    x = torch.ones(linears[0].in_features, dtype=torch.float64, device=linears[0].weight.device)
    return float(_squared_forward(leaves, x).sum())


def _squared_forward(layers: list[nn.Module], x: Tensor) -> Tensor:
    for m in layers:
        if isinstance(m, nn.Linear):
            x = (m.weight.detach().double() ** 2) @ x
            if m.bias is not None:
                x = x + m.bias.detach().double() ** 2
    return x  # ReLU, Identity, Flatten and Dropout (eval) act as the identity on x >= 0


class _LayerSum(FoldingMeasure):
    """Σ over layers of a per-layer term of the squared norms (of W − W⁰ with ``needs_init``)."""

    tensors_only = True
    norms: ClassVar[tuple[str, ...]] = ("frobenius",)

    def term(self, sq: dict[str, float]) -> float:
        raise NotImplementedError

    def compute_tensors(self, tensors, init: Mapping[str, Tensor] | None = None) -> MeasureResult:
        sq = layer_norms_sq(tensors, self.norms, init if self.needs_init else None)
        per = {n: self.term({k: v[n] for k, v in sq.items()}) for n in sq[self.norms[0]]}
        return MeasureResult(sum(per.values()), extras={"per_layer": per})


@register_measure("l2")
class L2Norm(Measure):
    """L2 (Frobenius) norm of all parameters, biases included: sqrt(sum_i theta_i^2).

    The classic weight-decay quantity that grokking papers plot (e.g. Liu et al. 2022,
    'Omnigrok'). Each tensor's norm in extras["per_layer"]. Jiang et al.'s ``param_norm`` is its square over
    the layers only.
    """

    convention = Convention(
        paper="Liu et al. 2022 (Omnigrok): the weight norm", default="all parameters, biases included, not folded")

    tensors_only = True

    def compute_tensors(self, tensors, init=None) -> MeasureResult:
        norms = {n: vector_norm(t) for n, t in tensors}
        per = dict(zip(norms, torch.stack(list(norms.values())).cpu().tolist() if norms else []))
        total = float(sum(v * v for v in per.values()) ** 0.5)
        return MeasureResult(total, extras={"per_layer": per})


@register_measure("param_count")
class ParamCount(Measure):
    """Number of scalar parameters (Jiang et al. 2020's baseline 'measure', eq. 20).

    ``weights_only=False`` (default, the paper's count) counts every parameter, biases and
    normalization parameters included; ``weights_only=True`` counts the layers only (tensors with
    two or more dimensions), which is the reference code's PARAMS (it drops names containing
    'bias' or 'bn', so equal for networks whose normalization modules are named 'bn...').
    """

    convention = Convention(
        paper="Jiang et al. 2020, eq. 20 (number of parameters)", code=JIANG_CODE,
        default="every parameter, biases and normalization parameters included",
        switch="weights_only=True (the reference code's PARAMS)",
        agreement="weights_only=True counts the reference code's weights (tensors >= 2 dims) exactly (MLP; "
                  "its NiN with BatchNorm: PARAMS recorded from the reference code, 1080)",
        tests=("tests/test_conventions.py::test_param_count_weights_only_is_the_reference_params",
               "tests/test_reference_recorded.py::test_folded_norms_equal_the_recorded_reference"))

    tensors_only = True
    weights_only: bool = False

    def compute_tensors(self, tensors, init=None) -> float:
        return float(sum(t.numel() for _, t in tensors if t.ndim >= 2 or not self.weights_only))


@register_measure("param_norm")
class ParamNorm(_LayerSum):
    """Σ_i ‖W_i‖_F² over layers (Jiang et al. 2020, eq. 42 'parameter norm')."""

    convention = jiang("42")

    def term(self, sq: dict[str, float]) -> float:
        return sq["frobenius"]


@register_measure("frobenius_distance")
class FrobeniusDistance(_LayerSum):
    """Σ_i ‖W_i − W_i⁰‖_F², distance from initialization (Jiang et al. 2020, eq. 40;
    Nagarajan & Kolter 2019)."""

    convention = jiang("40")

    needs_init = True

    def term(self, sq: dict[str, float]) -> float:
        return sq["frobenius"]


@register_measure("spectral_distance")
class SpectralDistance(_LayerSum):
    """Σ_i ‖W_i − W_i⁰‖_2², spectral distance from initialization (Jiang et al. 2020, eq. 41)."""

    version = 3  # 3: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = jiang("41")

    needs_init = True
    norms = ("spectral",)

    def term(self, sq: dict[str, float]) -> float:
        return sq["spectral"]


@register_measure("fro_over_spectral")
class FroOverSpectral(_LayerSum):
    """Σ_i ‖W_i‖_F² / ‖W_i‖_2², the sum of stable ranks (Jiang et al. 2020, eq. 33)."""

    version = 3  # 3: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = jiang("33")

    norms = ("frobenius", "spectral")

    def term(self, sq: dict[str, float]) -> float:
        return sq["frobenius"] / sq["spectral"] if sq["spectral"] > 0 else 0.0


@register_measure("log_prod_fro_over_spectral")
class LogProdFroOverSpectral(FoldingMeasure):
    """Σ_i log(‖W_i‖_F² / ‖W_i‖_2²), the log product of stable ranks (Bartlett et al. 2017's
    product form; Jiang et al. use the sum, ``fro_over_spectral``)."""

    version = 3  # 3: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = Convention(
        paper="Bartlett et al. 2017 (product of stable ranks)", default=JIANG_DEFAULT,
        agreement="equal to a numpy computation to 1e-9 (MLP)", tests=NORMS_TESTS[:1])

    tensors_only = True

    def compute_tensors(self, tensors, init=None) -> MeasureResult:
        sq = layer_norms_sq(tensors, ("frobenius", "spectral"))
        fro = {n: _log(v, f"the squared frobenius norm of {n!r}") for n, v in sq["frobenius"].items()}
        spec = {n: _log(v, f"the squared spectral norm of {n!r}") for n, v in sq["spectral"].items()}
        per = {n: fro[n] - spec[n] for n in fro}
        return MeasureResult(sum(per.values()), extras={"per_layer": per})


class _LogNorm(FoldingMeasure):
    tensors_only = True
    norm = "spectral"
    form = "prod"

    def compute_tensors(self, tensors, init=None) -> MeasureResult:
        per = log_norm_terms(tensors, self.norm)
        value = sum(per.values())
        if self.form == "sum":
            value = log_sum_from_log_prod(value, len(per))
        return MeasureResult(value, extras={"per_layer": per})


@register_measure("log_prod_spectral")
class LogProdSpectral(_LogNorm):
    """Σ_i log ‖W_i‖_2², log product of squared spectral norms (Jiang et al. 2020, eq. 32)."""

    version = 3  # 3: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = jiang("32")


@register_measure("log_sum_spectral")
class LogSumSpectral(_LogNorm):
    """log d + (1/d) Σ_i log ‖W_i‖_2², the 'sum of spectral norms' form (Jiang et al. 2020, eq. 35).

    The reference code's form: d times the geometric mean of the squared norms, in logs.
    """

    version = 3  # 3: CPU spectra from the float64 Gram matrix where well-conditioned (issue 25)

    convention = jiang("35")

    form = "sum"


@register_measure("log_prod_frobenius")
class LogProdFrobenius(_LogNorm):
    """Σ_i log ‖W_i‖_F², log product of squared Frobenius norms (Jiang et al. 2020, eq. 37)."""

    convention = jiang("37")

    norm = "frobenius"


@register_measure("log_sum_frobenius")
class LogSumFrobenius(_LogNorm):
    """log d + (1/d) Σ_i log ‖W_i‖_F², the 'sum of Frobenius norms' form (Jiang et al. 2020, eq. 39)."""

    convention = jiang("39")

    norm = "frobenius"
    form = "sum"


@register_measure("path_norm")
class PathNorm(Measure):
    """Squared ℓ2 path norm Σ_paths Π w² = Σ_k f_{w²}(1)_k (Neyshabur et al. 2015; Jiang et al.
    2020, eq. 44, as their code computes it: every parameter squared, biases included).
    Not for language models: attention, GELU and normalization have no path decomposition.

    Defined for ReLU/linear networks (see :func:`path_norm_sq`); others raise
    :class:`~complexity_zoo.errors.UndefinedMeasureError`.
    """

    causal_lm = False
    convention = Convention(
        paper="Jiang et al. 2020, eq. 44", code=JIANG_CODE, default="every parameter squared, biases included",
        agreement="closed form of a linear network with biases to 1e-9; the reference code folds BatchNorm, "
                  "here networks with BatchNorm are undefined (UndefinedMeasureError)",
        tests=("tests/test_norms.py::test_path_norm_of_a_linear_network_with_biases",))

    def compute(self, model: nn.Module, data=None) -> float:
        return path_norm_sq(model)
