"""The conventions' effect, measured: each measure under its default and under the switch that
reproduces the reference code (issue 23), on small networks trained here from fixed seeds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conventions.py

Not a timing benchmark: it prints the figures the conventions table summarizes (a minute on 2
cores). The WeightWatcher column needs the ``reference`` extra.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import torch
from torch import nn

import complexity_zoo as cz


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    for i in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=torch.Generator().manual_seed(i))
        net.train()
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return net.eval()


def conv_bn_net() -> nn.Sequential:
    """A small NiN-like network: 3x3 conv + BatchNorm + ReLU blocks, 1x1 convs, global pooling."""
    def block(i, o, k):
        return [nn.Conv2d(i, o, k, padding=k // 2), nn.BatchNorm2d(o), nn.ReLU()]
    return nn.Sequential(*block(3, 32, 3), *block(32, 32, 1), nn.MaxPool2d(2), *block(32, 64, 3),
                         *block(64, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def batchnorm_figures() -> None:
    torch.manual_seed(0)
    x = torch.randn(2048, 3, 16, 16)
    y = (x[:, 0, :8].mean((1, 2)) > x[:, 1, 8:].mean((1, 2))).long() * 5 + (x[:, 2].mean((1, 2)) > 0).long()
    net = conv_bn_net()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    train(net, x, y, 300, 0.05)
    data = cz.Data.from_tensors(train=(x[:512], y[:512]))
    print("BatchNorm folding (NiN-like conv net, 300 SGD steps): default (folded) | fold_batchnorm=False")
    for name in ("param_norm", "log_prod_spectral", "frobenius_distance", "spec_orig"):
        kw = {"init": init} if cz.get_measure(name).needs_init else {}
        args = (data,) if cz.get_measure(name).needs_data else ()
        folded = cz.get_measure(name)(net, *args, **kw).value
        stored = cz.get_measure(name, fold_batchnorm=False)(net, *args, **kw).value
        print(f"  {name:22s} {folded:12.4f} | {stored:12.4f}")


def mlp_figures() -> None:
    torch.manual_seed(1)
    x = torch.randn(4096, 64)
    teacher = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    y = teacher(x).argmax(1).detach()
    net = train(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)),
                x, y, 2000, 0.1)
    data = cz.Data.from_tensors(train=(x[:1024], y[:1024]))
    print("PAC-Bayes σ (MLP 64-256-256-10): sigma_convention 'paper' | 'reference_code' (seed 0)")
    for name in ("pacbayes_flatness", "pacbayes_mag_flatness"):
        paper = cz.get_measure(name, seed=0)(net, data)
        ref = cz.get_measure(name, seed=0, sigma_convention="reference_code")(net, data)
        print(f"  {name:22s} {paper.value:12.4f} (σ {paper.extras['sigma']:.4f}) | {ref.value:12.4f} "
              f"(σ {ref.extras['sigma']:.4f}, σ² {ref.extras['sigma'] ** 2:.4f})")
    print("param_count: all parameters | weights_only=True")
    print(f"  {cz.get_measure('param_count')(net).value:.0f} | "
          f"{cz.get_measure('param_count', weights_only=True)(net).value:.0f}")
    alpha_figures(net)


def alpha_figures(trained: nn.Module) -> None:
    ww = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import weightwatcher as ww
        except ImportError:
            pass
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    layer = nn.Sequential(trained[2])  # the trained 256x256 layer
    conv = nn.Conv2d(64, 64, 3)  # default initialization
    cases = {"trained 256x256": layer, "conv 3x3 (64, 64), init": nn.Sequential(conv)}
    for df in (2.0, 3.0, 4.0):
        lin = nn.Linear(200, 400, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.random.default_rng(int(df)).standard_t(df, size=(400, 200))))
        cases[f"Student-t df={df:g} 400x200"] = nn.Sequential(lin)
    print("alpha: default (ks, matrix) | xmin_statistic='weightwatcher', conv_reading='per_position' | "
          "weightwatcher analyze()")
    for label, model in cases.items():
        default = cz.get_measure("alpha")(model).value
        wwconv = cz.get_measure("alpha", xmin_statistic="weightwatcher", conv_reading="per_position")(model).value
        theirs = float("nan")
        if ww is not None:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                theirs = float(ww.WeightWatcher(model=model).analyze()["alpha"].mean())
        print(f"  {label:28s} {default:8.4f} | {wwconv:8.4f} | {theirs:8.4f}")


if __name__ == "__main__":
    batchnorm_figures()
    mlp_figures()
