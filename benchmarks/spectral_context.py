"""The five spectral measures of one checkpoint together, against WeightWatcher's ``analyze()``.

Run: ``python benchmarks/spectral_context.py [--models gpt2 resnet18] [--repeat 1]`` (needs
``weightwatcher`` (the ``bench`` extra), ``transformers`` and ``torchvision``; random weights, no
download). Torch threads: torch's setting as the process starts (set ``OMP_NUM_THREADS`` to
compare at a given count; WeightWatcher's SciPy follows the same variable).

Same process, same model, same torch threads: WeightWatcher's ``analyze()`` (one SVD per layer
for all its metrics), then ``effective_rank``, ``spectral_entropy``, ``stable_rank``, ``alpha``
and ``alpha_weighted`` run one after another inside one per-checkpoint context (as a compare()
job runs them: each matrix's SVD taken once), then the same five each alone (no context, as
before the context existed). Prints the ratios ours/theirs, and checks that the values in the
context equal the values alone. Models: a GPT-2-style LM (4 layers, width 768, GPT-2's 50257
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


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def one_model(label: str, model: torch.nn.Module, repeat: int) -> None:
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    rows = []
    for _ in range(repeat):  # interleaved, so a change in the machine's load hits all three
        t_ww, _ = timed(lambda: ww.WeightWatcher(model=model).analyze())

        def shared():
            with checkpoint_context():
                return five(model)

        t_ctx, in_ctx = timed(shared)
        t_alone, alone = timed(lambda: five(model))
        rows.append((t_ww, t_ctx, t_alone))
        if in_ctx != alone:
            raise SystemExit(f"values differ in a context: {in_ctx} vs {alone}")
    t_ww, t_ctx, t_alone = (min(r[i] for r in rows) for i in range(3))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{label} ({params:.1f}M parameters): WeightWatcher analyze() {t_ww:.2f} s; the five in one context "
          f"{t_ctx:.2f} s (ratio {t_ctx / t_ww:.2f}); the five alone {t_alone:.2f} s (ratio {t_alone / t_ww:.2f}); "
          f"best of {repeat}. Values identical: yes.")


def main() -> None:
    import importlib.util

    if importlib.util.find_spec("weightwatcher") is None:
        print("skipped: needs weightwatcher (pip install 'complexity-zoo[bench]')")
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gpt2", "resnet18"], choices=["gpt2", "resnet18"])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    print(machine())
    print(load())
    for name in args.models:
        one_model({"gpt2": "GPT-2-style LM, 4 layers, width 768", "resnet18": "ResNet-18"}[name],
                  gpt2() if name == "gpt2" else resnet18(), args.repeat)
    print(load())


if __name__ == "__main__":
    main()
