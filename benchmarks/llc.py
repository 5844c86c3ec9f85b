"""Seconds per checkpoint for the LLC: our vectorized SGLD vs devinterp, and the floor.

Run: ``python benchmarks/llc.py`` (trains the cpu-small run once into runs/). The checkpoint
is the modular-arithmetic MLP (p = 97, embedding 128, hidden 512); 4 chains x 200 draws,
batch 256. The floor is the bare work the sampler must do: 4 x 200 forward+backward passes
of the same model on batches of 256, with plain autograd and no sampler arithmetic. The
noise row is the other work no SGLD sampler can skip: 4 x 200 Gaussian draws of every
parameter (torch's generator; on a CPU it draws serially). Both backends pay both.
Target: the torch backend >= 3x faster than devinterp, and near the floor.
Times are the best of ``--repeat`` calls; the first call in a process also pays about 2 s
for torch's lazy import of torch._dynamo (which torch.func triggers), devinterp's first
call its import of transformers and datasets.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pandas as pd
import torch
from _common import grokking_run, machine, timed

import complexity_zoo as cz
from complexity_zoo.tasks import task_data

SETTINGS = dict(num_chains=4, num_draws=200, batch_size=256, lr=1e-4, localization=100.0, seed=0)


def floor(model, data, device) -> None:
    """4 x 200 forward+backward passes, one model copy per chain, plain autograd."""
    models = [copy.deepcopy(model).to(device) for _ in range(SETTINGS["num_chains"])]
    x, y = data.train
    g = torch.Generator().manual_seed(0)
    for _ in range(SETTINGS["num_draws"]):
        idx = torch.randint(0, x.shape[0], (SETTINGS["batch_size"],), generator=g)
        xb, yb = x[idx].to(device), y[idx].to(device)
        for m in models:
            m.zero_grad(set_to_none=True)
            data.per_example_loss(m, (xb, yb)).mean().backward()
    if device != "cpu":
        torch.cuda.synchronize()


def noise(model, device) -> None:
    """The Gaussian draws of 4 chains x 200 steps, one flat buffer per chain and step."""
    numel = sum(p.numel() for p in model.parameters())
    buf = torch.empty(SETTINGS["num_chains"], numel, device=device)
    gens = [torch.Generator(device=device).manual_seed(c) for c in range(SETTINGS["num_chains"])]
    for _ in range(SETTINGS["num_draws"]):
        for row, gen in zip(buf, gens):
            row.normal_(generator=gen)
    if device != "cpu":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default=None, help="a run folder (default: train cpu-small)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    traj = cz.Trajectory.from_dir(args.run or grokking_run())
    data = task_data(traj.task)
    model = traj.model_at(traj.steps[-1], device=args.device)
    rows = []
    t, _ = timed(lambda: floor(model, data, args.device), args.repeat)
    rows.append({"what": "floor: bare forward+backward", "seconds": t, "llc": float("nan")})
    t, _ = timed(lambda: noise(model, args.device), args.repeat)
    rows.append({"what": "noise: Gaussian draws alone", "seconds": t, "llc": float("nan")})
    for backend in ("torch", "devinterp"):
        m = cz.get_measure("llc", backend=backend, **SETTINGS)
        t, r = timed(lambda m=m: m(model, data), args.repeat)
        rows.append({"what": f"llc backend={backend}", "seconds": t, "llc": r.value})
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows).set_index("what")
    base = df.loc["llc backend=torch", "seconds"]
    df["x torch"] = df["seconds"] / base
    print(f"\n{machine()}, device {args.device}\n")
    print(df.to_string(float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
