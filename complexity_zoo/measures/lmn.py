"""Linear mapping number (LMN) of Liu, Zhong & Tegmark 2023, 'Grokking as Compression'.

For inputs x_i, x_j, the path x(λ) = x_i + λ (x_j - x_i) at ``num_points`` values of λ in
[0, 1]; L_ij = (1/d_out) Σ_k r²(y_k(λ), λ), r² the squared Pearson correlation; L_ii = 1.
With the eigenvalues of L, p_i = |λ_i| / Σ|λ_j|, S = -Σ p_i log2 p_i, and LMN = 2^S.
An affine map gives 1; a map affine on c groups and nonlinear between them gives about c.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._causal_lm import logits_of
from .._settings import at_least
from ..data import Data
from ..errors import InvalidSettingError
from ..measure import Measure, MeasureResult
from ..registry import register_measure

# Relative spread below which an output is taken as constant along a path.
CONSTANT_TOL = 1e-7
# Outputs alive per forward pass (float32: 64 MiB), whatever the number of pairs; see linear_connectivity.
DEFAULT_MAX_ELEMENTS = 2**24


def linear_connectivity(
    fn: Callable[[Tensor], Tensor],
    points: Tensor,
    num_points: int = 21,
    batch_size: int = 8192,
    max_elements: int | None = DEFAULT_MAX_ELEMENTS,
) -> tuple[Tensor, int]:
    """The N x N matrix L of path linearity between ``points`` under ``fn``.

    An output that is constant along a path (r² is 0/0 there) counts as perfectly linear,
    r² = 1: a constant is an affine function of λ, and this keeps LMN = 1 for every affine map.
    Returns L (float64) and how many (pair, output) terms were constant.

    Memory is bounded by ``max_elements``, the outputs alive per forward pass (and per float64
    slice reduced from them), not by the pairs: a forward evaluates at most ``batch_size`` path
    points and at most ``max_elements // d_out`` of them, with ``d_out`` the outputs per point
    (a language model's sequence length x vocabulary). Whole pairs go through one forward while
    ``num_points`` fit; otherwise each pair's points are split over forwards, and the moments
    r² needs are accumulated per output (4 x ``d_out`` float64). The float64 reductions take
    ``max_elements / 8`` outputs at a time, so beyond the model's own activations the peak is
    about 7 bytes x ``max_elements`` (float32 outputs). ``max_elements=None``: no bound (as before this
    setting existed: ``batch_size // num_points`` pairs per forward, reduced at once).
    """
    n = points.shape[0]
    dev = points.device
    lam = torch.linspace(0, 1, num_points, dtype=torch.float64, device=dev)
    lam_c = lam - lam.mean()
    pairs = torch.triu_indices(n, n, offset=1, device=dev)
    with torch.no_grad():
        d_out = _flat(fn(points[:1]), 1).shape[1]
    per_forward = batch_size if max_elements is None else max(1, min(batch_size, max_elements // max(d_out, 1)))
    values = torch.empty(pairs.shape[1], dtype=torch.float64, device=dev)
    constant = torch.zeros((), dtype=torch.long, device=dev)  # summed on the device: no sync per chunk
    if per_forward >= num_points:
        per_chunk = per_forward // num_points
        lam_b = lam.to(points.dtype).reshape(1, num_points, *[1] * (points.ndim - 1))
        for start in range(0, pairs.shape[1], per_chunk):
            i, j = pairs[0, start : start + per_chunk], pairs[1, start : start + per_chunk]
            xi, xj = points[i].unsqueeze(1), points[j].unsqueeze(1)
            path = (xi + lam_b * (xj - xi)).reshape(-1, *points.shape[1:])
            with torch.no_grad():
                y = _flat(fn(path), i.shape[0] * num_points).reshape(i.shape[0], num_points, d_out)
            columns = d_out if max_elements is None else max(1, max_elements // (8 * y[:, :, 0].numel()))
            total, flat = _r2_sums(y, lam_c, columns)
            values[start : start + i.shape[0]] = total / d_out
            constant += flat
    else:
        for q, (a, b) in enumerate(torch.triu_indices(n, n, offset=1).T.tolist()):  # host ints: no device reads
            xi, xj = points[a], points[b]
            moments = _Moments(d_out, lam_c)
            for s in range(0, num_points, per_forward):
                lam_s = lam[s : s + per_forward].to(points.dtype).reshape(-1, *[1] * xi.ndim)
                with torch.no_grad():
                    moments.add(_flat(fn(xi + lam_s * (xj - xi)), lam_s.shape[0]), s)
            values[q], flat = moments.finish()
            constant += flat
    lmat = torch.eye(n, dtype=torch.float64, device=dev)
    lmat[pairs[0], pairs[1]] = values
    lmat[pairs[1], pairs[0]] = values
    return lmat, int(constant)


def _flat(out: object, rows: int) -> Tensor:
    """A model's output (logits, a ModelOutput, a tuple) as (rows, outputs)."""
    return logits_of(out).reshape(rows, -1)


def _r2_sums(y: Tensor, lam_c: Tensor, columns: int) -> tuple[Tensor, Tensor]:
    """Per pair, the sum over outputs of r²(y_k(λ), λ) (constant outputs count 1), and how many
    outputs were constant; ``y`` is (pairs, points, outputs), reduced ``columns`` at a time in float64."""
    num_points = y.shape[1]
    total = torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)
    constant = torch.zeros((), dtype=torch.long, device=y.device)
    for c in range(0, y.shape[2], columns):
        part = y[:, :, c : c + columns].double()
        yc = part - part.mean(dim=1, keepdim=True)
        sxx = (yc**2).sum(dim=1)
        sxl = (yc * lam_c.reshape(1, -1, 1)).sum(dim=1)
        r2 = sxl**2 / (sxx * (lam_c**2).sum())
        flat = sxx.sqrt() <= CONSTANT_TOL * (part.abs().amax(dim=1) + 1.0) * num_points**0.5
        constant += flat.sum()
        total += torch.where(flat, torch.ones_like(r2), r2).sum(dim=1)
    return total, constant


class _Moments:
    """The sums r² needs for one pair whose points come in several forwards, per output, in
    float64 and shifted by the first point's outputs (so a constant output sums to exactly 0)."""

    def __init__(self, d_out: int, lam_c: Tensor) -> None:
        self.lam_c, self.shift = lam_c, None
        self.s1 = self.s2 = self.sl = self.peak = torch.zeros(d_out, dtype=torch.float64, device=lam_c.device)

    def add(self, y: Tensor, first: int) -> None:
        y = y.double()
        if self.shift is None:
            self.shift = y[0].clone()
        lam = self.lam_c[first : first + y.shape[0]].reshape(-1, 1)
        d = y - self.shift
        self.s1 = self.s1 + d.sum(0)
        self.s2 = self.s2 + (d**2).sum(0)
        self.sl = self.sl + (d * lam).sum(0)
        self.peak = torch.maximum(self.peak, y.abs().amax(0))

    def finish(self) -> tuple[Tensor, Tensor]:
        n = self.lam_c.shape[0]
        sxx = (self.s2 - self.s1**2 / n).clamp(min=0)
        r2 = self.sl**2 / (sxx * (self.lam_c**2).sum())  # Σλc = 0: Σ(y - ȳ)λc = Σ(y - shift)λc
        flat = sxx.sqrt() <= CONSTANT_TOL * (self.peak + 1.0) * n**0.5
        return torch.where(flat, torch.ones_like(r2), r2).mean(), flat.sum()


def linear_mapping_number(lmat: Tensor) -> tuple[float, Tensor]:
    """LMN = 2^S from the eigenvalues of a connectivity matrix, and those eigenvalues."""
    eig = torch.linalg.eigvalsh(lmat.double())
    p = eig.abs() / eig.abs().sum()
    entropy = float(-torch.xlogy(p, p).sum()) / float(torch.log(torch.tensor(2.0, dtype=torch.float64)))
    return 2.0**entropy, eig.flip(0)


def first_hidden_layer(model: nn.Module) -> str:
    """The first ``nn.Linear`` in module order: the input layer of the paper's MLPs."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            return name
    raise InvalidSettingError(
        "LMN found no nn.Linear to start the measured sub-network at; set layer= to one of the "
        f"model's modules: {[n for n, _ in model.named_modules() if n]}."
    )


def input_embedding(model: nn.Module) -> str | None:
    """The module that turns token ids into vectors: transformers' ``get_input_embeddings()``,
    else the first ``nn.Embedding`` in module order; None if there is none."""
    names = {id(m): n for n, m in model.named_modules() if n}
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        try:
            module = get()
        except (NotImplementedError, AttributeError):
            module = None
        if id(module) in names:
            return names[id(module)]
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Embedding)), None)


class _Tap:
    """Hooks on one module: capture the vectors it takes (or, fed token ids, the vectors it
    returns), then, with ``replacement`` set, feed the network those instead."""

    def __init__(self, module: nn.Module, name: str) -> None:
        self.name, self.calls, self.mode = name, 0, None
        self.captured: Tensor | None = None
        self.replacement: Tensor | None = None
        self.handles = [module.register_forward_pre_hook(self._pre, with_kwargs=True),
                        module.register_forward_hook(self._post)]

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict):
        self.calls += 1
        x = args[0] if args else kwargs.get("hidden_states")
        if not isinstance(x, Tensor):
            raise InvalidSettingError(f"LMN's layer {self.name!r} takes no tensor as its first input to interpolate.")
        if self.mode is None:
            self.mode = "input" if x.is_floating_point() else "output"
            if self.mode == "input":
                self.captured = x.detach()
        if self.mode == "input" and self.replacement is not None:
            if args:
                return (self.replacement, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": self.replacement}
        return None

    def _post(self, module: nn.Module, args: tuple, out: object):
        if self.mode != "output":
            return None
        if self.replacement is not None:
            return self.replacement
        if not (isinstance(out, Tensor) and out.is_floating_point()):
            raise InvalidSettingError(f"LMN's layer {self.name!r} takes token ids and returns no float tensor.")
        self.captured = out.detach()
        return None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@register_measure("lmn")
class LinearMappingNumber(Measure):
    """Linear mapping number 2^S of path linearity (Liu, Zhong & Tegmark 2023, arXiv 2310.05918).

    Measured on the sub-network from ``layer`` over ``num_samples`` inputs drawn with ``seed``
    from ``split``, with ``num_points`` = 21 values of λ (the paper's). ``layer``'s *input* is
    interpolated, or its *output* when its input is token ids (an embedding). Default: for
    token-id inputs, the input embedding (transformers' ``get_input_embeddings()``, else the
    first ``nn.Embedding``) if it runs once per forward, i.e. the residual stream entering the
    first block (the positional embedding added to it is the same along a path); otherwise the
    first nn.Linear, i.e. from the first hidden layer to the logits, as in the paper's MLPs.
    Set ``seed`` to measure every checkpoint on the same inputs; left None,
    compare() draws each cell's own from its seed. The value grows with ``num_samples`` (it is 2 to the entropy of an
    N x N spectrum, at most N): compare values only at equal N. ``num_samples`` = 100 is our
    choice; the paper does not state its N. ``max_elements`` bounds the outputs alive per
    forward (see :func:`linear_connectivity`), ``batch_size`` the path points per forward.
    """

    needs_data = True
    stochastic = True  # it samples its inputs
    version = 2  # 2: token-id models are measured from their embedding by default
    num_samples: int = 100
    num_points: int = 21
    layer: str | None = None
    split: str = "train"
    batch_size: int = 8192
    max_elements: int | None = DEFAULT_MAX_ELEMENTS
    seed: int | None = None  # None: 0 when called directly; compare() derives one per cell

    limits = {"batch_size": at_least(1), "max_elements": at_least(1)}

    def __post_init__(self) -> None:
        if not (isinstance(self.num_samples, int) and self.num_samples >= 2):
            raise self._setting_error("num_samples", "an integer >= 2", self.num_samples)
        if not (isinstance(self.num_points, int) and self.num_points >= 3):
            raise self._setting_error("num_points", "an integer >= 3", self.num_points)
        if self.split not in ("train", "test"):
            raise self._setting_error("split", "'train' or 'test'", self.split)

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        modules = dict(model.named_modules())
        if self.layer is not None and self.layer not in modules:
            raise InvalidSettingError(
                f"The model has no module {self.layer!r} for LMN's 'layer'; its modules are: "
                f"{[n for n in modules if n]}."
            )
        device = next(model.parameters()).device
        inputs = _sample_inputs(data, self.split, self.num_samples, self.seed or 0).to(device)
        call = _caller(model)
        was_training = model.training
        model.eval()
        tap = None
        try:
            candidates = [self.layer] if self.layer is not None else _default_layers(model, inputs)
            for layer in candidates:
                tap = _Tap(modules[layer], layer)
                with torch.no_grad():
                    call(inputs)
                if tap.calls == 1 or layer == candidates[-1]:
                    break
                tap.remove()
            if tap.calls != 1:
                raise InvalidSettingError(
                    f"LMN's layer {tap.name!r} runs {tap.calls} times per forward pass, so what enters "
                    f"the rest of the network is not one tensor; choose a module that runs once."
                )

            def subnetwork(h: Tensor) -> Tensor:
                tap.replacement = h
                return call(inputs[:1].expand(h.shape[0], *inputs.shape[1:]))

            lmat, constant = linear_connectivity(subnetwork, tap.captured, self.num_points, self.batch_size,
                                                 self.max_elements)
        finally:
            if tap is not None:
                tap.remove()
            model.train(was_training)
        value, eig = linear_mapping_number(lmat)
        return MeasureResult(value, extras={"layer": tap.name, "interpolated": tap.mode, "eigenvalues": eig.tolist(),
                                            "constant_terms": constant, "num_samples": len(inputs)})


def _default_layers(model: nn.Module, inputs: Tensor) -> list[str]:
    """The embedding for token-id inputs (if it runs once), then the paper's first nn.Linear."""
    embedding = None if inputs.is_floating_point() else input_embedding(model)
    return [embedding, first_hidden_layer(model)] if embedding else [first_hidden_layer(model)]


def _caller(model: nn.Module) -> Callable[[Tensor], object]:
    """``model(x)``; for a transformers model, without the key/value cache it would build."""
    try:
        takes_cache = "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        takes_cache = False
    return (lambda x: model(x, use_cache=False)) if takes_cache else model


def _sample_inputs(data: Data, split: str, num: int, seed: int) -> Tensor:
    """``num`` inputs drawn without replacement; from a DataLoader only the drawn examples are read."""
    n = data.n(split)
    if num > n:
        raise InvalidSettingError(f"LMN asks for num_samples={num} but the {split} split has {n} examples.")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num].sort().values
    return data.take(split, idx)[0]
