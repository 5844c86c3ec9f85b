"""BatchNorm folding: the parameters of the equivalent network whose BatchNorms are the identity.

Jiang et al. 2020 and Dziugaite et al. 2020 measure networks with BatchNorm after folding each
BatchNorm into the layer before it, with its evaluation statistics, for the model and its
initialization alike (github nitarshan/robust-generalization-measures,
``data/generation/measures.py: _reparam``, after Neyshabur et al.'s ``generalization-bounds``).
With s = γ / √(running_var + eps) per output channel:

    W' = s · W (each output channel scaled),   b' = β + s · (b − running_mean),

and the BatchNorm becomes the identity (weight 1, bias 0). The pairing rule is the reference
code's: a BatchNorm folds into the most recent convolution or linear layer in module
registration order, parameter-free modules (activations, pooling, dropout) in between ignored.
That is the function-preserving fold when the BatchNorm directly follows the layer in the forward
pass (conv → BN, as in the reference code's networks and torchvision's ResNets). Here the layer
must also have as many output channels as the BatchNorm has features, and the BatchNorm must
track running statistics; a BatchNorm that fails either test (or follows another parameterized
module, as in pre-activation networks) is left as it is and named by :func:`unfoldable`.
The reference code folds into ``Conv2d`` only; here ``Conv1d/2d/3d`` and ``Linear`` fold alike.

Pure functions: the model is never modified; folded tensors are float64 (the others are
returned as stored, detached), so a network without BatchNorm gives exactly its parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._context import current, folded_weights, model_state
from ..errors import ModelError
from ..measure import Measure

FOLDS_INTO = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _pairs(model: nn.Module) -> tuple[list[tuple[str, str]], list[str]]:
    """(layer, BatchNorm) module names that fold, and the BatchNorms that do not."""
    pairs, unfolded, last = [], [], None
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if list(module.children()):
            continue
        if isinstance(module, _BatchNorm):
            layer = None if last is None else modules[last]
            if (isinstance(layer, FOLDS_INTO) and _out_features(layer) == module.num_features
                    and module.track_running_stats and module.running_var is not None):
                pairs.append((last, name))
            else:
                unfolded.append(name)
            last = None
        elif any(True for _ in module.parameters(recurse=False)):
            last = name
    return pairs, unfolded


def unfoldable(model: nn.Module) -> list[str]:
    """The model's BatchNorm modules that :func:`fold_batchnorm` leaves as they are."""
    return _pairs(model)[1]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether the model has a BatchNorm module (of any dimension)."""
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def fold_batchnorm(model: nn.Module, state: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The parameters (``named_parameters()`` names and order) with each BatchNorm folded into
    the layer before it; ``state`` (a state dict of this architecture, e.g. the initialization)
    supplies the values instead of the model's own, BatchNorm running statistics included.

    Raises :class:`ModelError` when ``state`` lacks a tensor that folding reads.
    """

    def value(name: str, own: Tensor | None) -> Tensor | None:
        if state is None or own is None:
            return None if own is None else own.detach()
        if name not in state:
            raise ModelError(
                f"Folding BatchNorm needs {name!r} from the given state dict (the initialization's running "
                f"statistics too): pass the full state dict (buffers included), or fold_batchnorm=False."
            )
        return state[name].detach().to(own.device)

    params = dict(model.named_parameters())
    out = {n: value(n, p) for n, p in params.items()}
    modules = dict(model.named_modules())
    for layer_name, bn_name in _pairs(model)[0]:
        layer, bn = modules[layer_name], modules[bn_name]
        pre = f"{bn_name}." if bn_name else ""
        lpre = f"{layer_name}." if layer_name else ""
        mean = value(pre + "running_mean", bn.running_mean).double()
        var = value(pre + "running_var", bn.running_var).double()
        gamma = out[pre + "weight"].double() if bn.affine else torch.ones_like(var)
        beta = out[pre + "bias"].double() if bn.affine else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + bn.eps)
        w = out[lpre + "weight"].double()
        out[lpre + "weight"] = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        bias = out[lpre + "bias"].double() if layer.bias is not None else torch.zeros_like(mean)
        folded_bias = beta + scale * (bias - mean)
        if bn.affine:
            out[pre + "weight"] = torch.ones_like(gamma)
            out[pre + "bias"] = torch.zeros_like(beta)
        if layer.bias is not None:
            out[lpre + "bias"] = folded_bias
        elif bn.affine:  # no bias to fold into: the identity BatchNorm keeps the shift
            out[pre + "bias"] = folded_bias
    return out



def folded_module(model: nn.Module) -> nn.Module:
    """A copy of the model with each foldable BatchNorm folded, as the reference code's ``_reparam``
    leaves it: folded parameters loaded, those BatchNorms at γ 1, β 0, running mean 0, var 1. As
    there, such a BatchNorm still divides by √(1 + eps), so the copy's outputs differ from the
    model's by a relative ~eps/2 per BatchNorm (1.3e-4 in a margin of a 7-BatchNorm NiN)."""
    net = copy.deepcopy(model)
    with torch.no_grad():
        folded = fold_batchnorm(model)
        for name, p in net.named_parameters():
            p.copy_(folded[name])
        modules = dict(net.named_modules())
        for _, bn_name in _pairs(net)[0]:
            modules[bn_name].running_mean.zero_()
            modules[bn_name].running_var.fill_(1.0)
    return net


class FoldingMeasure(Measure):
    """A measure of the weights that folds BatchNorm first (``fold_batchnorm``, default True,
    as the reference code of Jiang et al. 2020 does); ``fold_batchnorm=False`` measures the stored
    tensors. The initialization is folded with its own running statistics. Models without
    BatchNorm give the same values either way. :meth:`on_tensors` measures the tensors it is given
    (it cannot see modules): pass ``fold_batchnorm(model).items()`` to fold a stream by hand;
    compare() uses the model path instead of streaming when a checkpoint holds BatchNorm statistics.
    """

    fold_batchnorm: bool = True
    version = 2  # version 1 measured the stored tensors of BatchNorm networks

    def folds(self, model: nn.Module) -> bool:
        return self.fold_batchnorm and has_batchnorm(model)

    def weights(self, model: nn.Module) -> dict[str, Tensor]:
        """The parameters this measure reads: folded (once per compare() job: the fold is shared
        by the job's folding measures while the model is unchanged), or as stored (detached)."""
        if not self.folds(model):
            return {n: p.detach() for n, p in model.named_parameters()}
        ctx = current()
        if ctx is None:
            return fold_batchnorm(model)
        return ctx.get("folded", (id(model), model_state(model)), lambda: fold_batchnorm(model))

    def init_weights(self, model: nn.Module, init: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The initialization's parameters, folded with its own statistics when the model's are."""
        return fold_batchnorm(model, state=init) if self.folds(model) else dict(init)

    def compute(self, model: nn.Module, data=None, *args):
        if not (self.tensors_only and self.folds(model)):
            return super().compute(model, data, *args)
        init = (self.init_weights(model, args[0]),) if args else ()
        return self.compute_tensors(iter(self.weights(model).items()), *init)

    def __call__(self, model: nn.Module, data=None, **kwargs):
        if not (isinstance(model, nn.Module) and self.folds(model)):
            return super().__call__(model, data, **kwargs)
        with folded_weights():  # spectra of folded weights are shared among folding measures only
            return super().__call__(model, data, **kwargs)


def streams_unfolded(measure: Measure, tensor_names) -> bool:
    """Whether streaming ``measure`` over a checkpoint with these tensor names would skip a fold
    it should make: it folds BatchNorm and the checkpoint holds BatchNorm running statistics."""
    return bool(getattr(measure, "fold_batchnorm", False)) and any(
        str(n).endswith("running_var") for n in tensor_names)
