"""The five spectral measures of one checkpoint together, against WeightWatcher's ``analyze()``.

Run: ``python benchmarks/spectral_context.py [--models gpt2 resnet18] [--repeat 1] [--profile]``
(needs ``weightwatcher`` (the ``bench`` extra), ``transformers`` and ``torchvision``; random
weights, no download). Torch threads: torch's setting as the process starts (set
``OMP_NUM_THREADS`` to compare at a given count; WeightWatcher's SciPy and our NumPy follow it).

Same process, same model, same threads, interleaved: WeightWatcher's ``analyze()`` (one SVD per
layer for all its metrics), then ``effective_rank``, ``spectral_entropy``, ``stable_rank``,
``alpha`` and ``alpha_weighted`` one after another inside one per-checkpoint context (as a
compare() job runs them: each matrix's spectrum taken once, each layer's power-law fit once):
on all the model's matrices (the measures' definition: every parameter with ndim >= 2, the
GPT-2 token embedding included), and on the matrices ``analyze()`` reads (its layers' weights:
for GPT-2 all but the 50257 x 768 token embedding; for ResNet-18 the same 21). Then the five
each alone (no context). Prints the ratios ours/theirs and checks that the values in the
context equal the values alone. ``--profile``: where the time in the context goes (spectra per
matrix, power-law fits, the rest), and how far the CPU's Gram route moves each layer's value from
the SVD's. Models: a GPT-2-style LM (4 layers, width 768, GPT-2's 50257
vocabulary; ``transformers``) and ResNet-18 (``torchvision``, random init).
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
from _common import load, machine

import complexity_zoo as cz
from complexity_zoo._context import checkpoint_context

FIVE = ("effective_rank", "spectral_entropy", "stable_rank", "alpha", "alpha_weighted")


def gpt2(n_layer: int = 4, n_embd: int = 768) -> torch.nn.Module:
    import transformers

    config = transformers.GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=12, vocab_size=50257, n_positions=1024)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def resnet18() -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def five(model: torch.nn.Module) -> dict[str, float]:
    return {name: cz.get_measure(name)(model).value for name in FIVE}


def shared_five(model: torch.nn.Module) -> dict[str, float]:
    with checkpoint_context():
        return five(model)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def analyzed_layers(model: torch.nn.Module, details) -> torch.nn.Module:
    """A module holding only the weights of the layers WeightWatcher's ``analyze()`` reported."""
    modules = dict(model.named_modules())
    return torch.nn.ParameterDict({name.replace(".", "/"): modules[name].weight for name in details["longname"]})


def profile(model: torch.nn.Module) -> None:
    """Time each spectrum and each power-law fit of one shared run of the five."""
    from complexity_zoo.measures import _weights, heavy_tail

    spent: dict[str, float] = {}
    real_sv, real_fit = _weights.singular_values, heavy_tail.power_law_fit

    def clocked(key, fn):
        def wrapper(*args):
            start = time.perf_counter()
            out = fn(*args)
            spent[key(*args)] = spent.get(key(*args), 0.0) + time.perf_counter() - start
            return out
        return wrapper

    _weights.singular_values = clocked(lambda w: f"spectrum {tuple(w.shape)}", real_sv)
    heavy_tail.power_law_fit = clocked(lambda *a: "power-law fits", real_fit)
    try:
        total, _ = timed(lambda: shared_five(model))
    finally:
        _weights.singular_values, heavy_tail.power_law_fit = real_sv, real_fit
    for key, t in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {key}: {t:.3f} s")
    print(f"  rest (statistics, context, Python): {total - sum(spent.values()):.3f} s of {total:.2f} s")


def one_model(label: str, model: torch.nn.Module, repeat: int, show_profile: bool) -> None:
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    rows = []
    layers = analyzed_layers(model, ww.WeightWatcher(model=model).describe())
    for _ in range(repeat):  # interleaved, so a change in the machine's load hits all four
        t_ww, _ = timed(lambda: ww.WeightWatcher(model=model).analyze())
        t_ctx, in_ctx = timed(lambda: shared_five(model))
        t_same, _ = timed(lambda: shared_five(layers))
        t_alone, alone = timed(lambda: five(model))
        rows.append((t_ww, t_ctx, t_same, t_alone))
        if in_ctx != alone:
            raise SystemExit(f"values differ in a context: {in_ctx} vs {alone}")
    t_ww, t_ctx, t_same, t_alone = (min(r[i] for r in rows) for i in range(4))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    n_all = sum(p.ndim >= 2 for p in model.parameters())
    print(f"{label} ({params:.1f}M parameters): WeightWatcher analyze() {t_ww:.2f} s ({len(layers)} layers); "
          f"the five in one context: all {n_all} matrices {t_ctx:.2f} s (ratio {t_ctx / t_ww:.2f}), "
          f"analyze()'s {len(layers)} layers {t_same:.2f} s (ratio {t_same / t_ww:.2f}); the five alone "
          f"{t_alone:.2f} s (ratio {t_alone / t_ww:.2f}); best of {repeat}. Values identical: yes.")
    if show_profile:
        profile(model)
        route_difference(model)


def route_difference(model: torch.nn.Module) -> None:
    """The largest relative difference, per layer, between the five by the CPU's Gram route and by SVD."""
    import math

    from complexity_zoo.measures import _weights

    gram = {n: cz.get_measure(n)(model).extras["per_layer"] for n in FIVE}
    floor, _weights.GRAM_FLOOR = _weights.GRAM_FLOOR, math.inf  # every matrix by SVD
    try:
        svd = {n: cz.get_measure(n)(model).extras["per_layer"] for n in FIVE}
    finally:
        _weights.GRAM_FLOOR = floor
    print("  Gram route against SVD, largest relative difference over layers: " + ", ".join(
        f"{n} {max(abs(gram[n][k] - v) / abs(v) for k, v in svd[n].items()):.1e}" for n in FIVE))


def main() -> None:
    import importlib.util

    if importlib.util.find_spec("weightwatcher") is None:
        print("skipped: needs weightwatcher (pip install 'complexity-zoo[bench]')")
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gpt2", "resnet18"], choices=["gpt2", "resnet18"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="time each spectrum and the fits")
    args = ap.parse_args()
    print(machine())
    print(load())
    for name in args.models:
        one_model({"gpt2": "GPT-2-style LM, 4 layers, width 768", "resnet18": "ResNet-18"}[name],
                  gpt2() if name == "gpt2" else resnet18(), args.repeat, args.profile)
    print(load())


if __name__ == "__main__":
    main()
