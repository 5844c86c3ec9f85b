"""Linear mapping number (LMN) of Liu, Zhong & Tegmark 2023, 'Grokking as Compression'.

For inputs x_i, x_j, the path x(λ) = x_i + λ (x_j - x_i) at ``num_points`` values of λ in
[0, 1]; L_ij = (1/d_out) Σ_k r²(y_k(λ), λ), r² the squared Pearson correlation; L_ii = 1.
With the eigenvalues of L, p_i = |λ_i| / Σ|λ_j|, S = -Σ p_i log2 p_i, and LMN = 2^S.
An affine map gives 1; a map affine on c groups and nonlinear between them gives about c.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._settings import at_least
from ..data import Data
from ..errors import InvalidSettingError
from ..measure import Measure, MeasureResult
from ..registry import register_measure

# Relative spread below which an output is taken as constant along a path.
CONSTANT_TOL = 1e-7


def linear_connectivity(
    fn: Callable[[Tensor], Tensor], points: Tensor, num_points: int = 21, batch_size: int = 8192
) -> tuple[Tensor, int]:
    """The N x N matrix L of path linearity between ``points`` under ``fn``.

    An output that is constant along a path (r² is 0/0 there) counts as perfectly linear,
    r² = 1: a constant is an affine function of λ, and this keeps LMN = 1 for every affine map.
    Returns L (float64) and how many (pair, output) terms were constant.
    """
    n = points.shape[0]
    lam = torch.linspace(0, 1, num_points, dtype=torch.float64, device=points.device)
    lam_c = lam - lam.mean()
    pairs = torch.triu_indices(n, n, offset=1, device=points.device)
    per_chunk = max(1, batch_size // num_points)
    values = torch.empty(pairs.shape[1], dtype=torch.float64, device=points.device)
    constant = 0
    lam_b = lam.to(points.dtype).reshape(1, num_points, *[1] * (points.ndim - 1))
    for start in range(0, pairs.shape[1], per_chunk):
        i, j = pairs[0, start : start + per_chunk], pairs[1, start : start + per_chunk]
        xi, xj = points[i].unsqueeze(1), points[j].unsqueeze(1)
        path = (xi + lam_b * (xj - xi)).reshape(-1, *points.shape[1:])
        with torch.no_grad():
            y = fn(path).double().reshape(i.shape[0], num_points, -1)
        yc = y - y.mean(dim=1, keepdim=True)
        sxx = (yc**2).sum(dim=1)
        sxl = (yc * lam_c.reshape(1, -1, 1)).sum(dim=1)
        r2 = sxl**2 / (sxx * (lam_c**2).sum())
        flat = sxx.sqrt() <= CONSTANT_TOL * (y.abs().amax(dim=1) + 1.0) * num_points**0.5
        constant += int(flat.sum())
        r2 = torch.where(flat, torch.ones_like(r2), r2)
        values[start : start + i.shape[0]] = r2.mean(dim=1)
    lmat = torch.eye(n, dtype=torch.float64, device=points.device)
    lmat[pairs[0], pairs[1]] = values
    lmat[pairs[1], pairs[0]] = values
    return lmat, constant


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


@register_measure("lmn")
class LinearMappingNumber(Measure):
    """Linear mapping number 2^S of path linearity (Liu, Zhong & Tegmark 2023, arXiv 2310.05918).

    Measured on the sub-network from ``layer`` (its *input* is interpolated; default the
    first nn.Linear, i.e. from the first hidden layer to the logits, as in the paper) over
    ``num_samples`` inputs drawn with ``seed`` from ``split``, with ``num_points`` = 21 values of
    λ (the paper's). Set ``seed`` to measure every checkpoint on the same inputs; left None,
    compare() draws each cell's own from its seed. The value grows with ``num_samples`` (it is 2 to the entropy of an
    N x N spectrum, at most N): compare values only at equal N. ``num_samples`` = 100 is our
    choice; the paper does not state its N.
    """

    needs_data = True
    stochastic = True  # it samples its inputs
    num_samples: int = 100
    num_points: int = 21
    layer: str | None = None
    split: str = "train"
    batch_size: int = 8192
    seed: int | None = None  # None: 0 when called directly; compare() derives one per cell

    limits = {"batch_size": at_least(1)}

    def __post_init__(self) -> None:
        if not (isinstance(self.num_samples, int) and self.num_samples >= 2):
            raise self._setting_error("num_samples", "an integer >= 2", self.num_samples)
        if not (isinstance(self.num_points, int) and self.num_points >= 3):
            raise self._setting_error("num_points", "an integer >= 3", self.num_points)
        if self.split not in ("train", "test"):
            raise self._setting_error("split", "'train' or 'test'", self.split)

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        layer = self.layer or first_hidden_layer(model)
        modules = dict(model.named_modules())
        if layer not in modules:
            raise InvalidSettingError(
                f"The model has no module {layer!r} for LMN's 'layer'; its modules are: "
                f"{[n for n in modules if n]}."
            )
        device = next(model.parameters()).device
        inputs = _sample_inputs(data, self.split, self.num_samples, self.seed or 0).to(device)
        captured: list[Tensor] = []
        replacement: list[Tensor] = []

        def hook(module: nn.Module, args: tuple) -> tuple | None:
            if replacement:
                return (replacement[0], *args[1:])
            captured.append(args[0].detach())
            return None

        handle = modules[layer].register_forward_pre_hook(hook)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(inputs)
            hidden = captured[0]

            def subnetwork(h: Tensor) -> Tensor:
                replacement[:] = [h]
                dummy = inputs[:1].expand(h.shape[0], *inputs.shape[1:])
                return model(dummy)

            lmat, constant = linear_connectivity(subnetwork, hidden, self.num_points, self.batch_size)
        finally:
            handle.remove()
            model.train(was_training)
        value, eig = linear_mapping_number(lmat)
        return MeasureResult(value, extras={"layer": layer, "eigenvalues": eig.tolist(),
                                            "constant_terms": constant, "num_samples": len(inputs)})


def _sample_inputs(data: Data, split: str, num: int, seed: int) -> Tensor:
    n = data.n(split)
    if num > n:
        raise InvalidSettingError(f"LMN asks for num_samples={num} but the {split} split has {n} examples.")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num].sort().values
    return data.tensors(split)[0][idx]
