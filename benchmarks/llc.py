"""Seconds for the LLC: our vectorized samplers vs devinterp 2.x, all ratios in one process.

Run: ``python benchmarks/llc.py [--what throughput converge layers] [--device cuda]`` (trains
the cpu-small run once into runs/). ``--small`` runs a smoke version (tiny budgets).

(1) throughput, at matched settings (below). (2) converge: wall time to a trustworthy estimate
(split-R̂ <= 1.01 and stderr / LLC <= 5%) at the memorization checkpoint (the first with train
accuracy >= 99%) and the last (after grokking), for our SGLD and RMSProp-SGLD (``until_converged``,
100 draws at a time) and devinterp's SGLD and RMSprop-SGLD, which cannot resume chains: it
reruns with 100, 200, 400, ... draws until the rule holds; both its total time and the time
of its final run alone (as if the right length were known) are reported. Each sampler's lr
and localization come from the same rule: ``calibrate_llc`` on a grid, the largest stable lr
(ties: the smallest localization); calibration time is reported apart. Every step counts
(no burn-in) on both sides, devinterp's convention. (3) layers: one LLC per layer of the MLP,
ours in one batched call (``per_component="layer"``, which also runs the whole-model chains)
vs devinterp once per layer with its parameter mask.

(1) throughput: the checkpoint
is the modular-arithmetic MLP (p = 97, embedding 128, hidden 512); 4 chains x 200 draws,
batch 256. The floor is the bare work the sampler must do: 4 x 200 forward+backward passes
of the same model on batches of 256, with plain autograd and no sampler arithmetic. The
noise row is the other work no SGLD sampler can skip: 4 x 200 Gaussian draws of every
parameter (torch's generator; on a CPU it draws serially). Both backends pay both.
Target: the torch backend >= 3x faster than devinterp, and near the floor. Column "x torch":
seconds over our SGLD's (devinterp's RMSprop row: over our RMSprop's).
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

import time

import pandas as pd
import torch
from _common import grokking_run, machine, timed

import complexity_zoo as cz
from complexity_zoo.measures.llc import calibrate_llc
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


def throughput(model, data, args) -> None:
    rows = []
    t, _ = timed(lambda: floor(model, data, args.device), args.repeat)
    rows.append({"what": "floor: bare forward+backward", "seconds": t, "llc": float("nan")})
    t, _ = timed(lambda: noise(model, args.device), args.repeat)
    rows.append({"what": "noise: Gaussian draws alone", "seconds": t, "llc": float("nan")})
    for sampler in ("sgld", "rmsprop"):
        for backend in ("torch", "devinterp"):
            m = cz.get_measure("llc", backend=backend, sampler=sampler, **SETTINGS)
            t, r = timed(lambda m=m: m(model, data), args.repeat)
            name = f"llc backend={backend}" + ("" if sampler == "sgld" else " rmsprop")
            rows.append({"what": name, "seconds": t, "llc": r.value})
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows).set_index("what")
    base = df.loc["llc backend=torch", "seconds"]
    df["x torch"] = df["seconds"] / base
    df.loc["llc backend=devinterp rmsprop", "x torch"] = (df.loc["llc backend=devinterp rmsprop", "seconds"]
                                                          / df.loc["llc backend=torch rmsprop", "seconds"])
    print(f"\n{machine()}, device {args.device}\n")
    print(df.to_string(float_format=lambda v: f"{v:.3g}"))


SAMPLERS = (("ours", "sgld"), ("ours", "rmsprop"), ("devinterp", "sgld"), ("devinterp", "rmsprop"))
RULE = dict(target_r_hat=1.01, target_rel_stderr=0.05)


def calibrated(model, data, backend: str, sampler: str, args) -> tuple[float, float, float]:
    """The same rule for every sampler: calibrate_llc's grid, the largest stable lr, then the
    smallest localization. Returns (lr, localization, seconds spent calibrating)."""
    lrs = (1e-5, 1e-4, 1e-3) if args.small else (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
    locs = (100.0,) if args.small else (10.0, 100.0, 1000.0)
    start = time.perf_counter()
    table = calibrate_llc(model, data, lrs=lrs, localizations=locs, num_chains=2, num_draws=50 if args.small else 200,
                          backend="torch" if backend == "ours" else "devinterp", sampler=sampler,
                          batch_size=256, seed=0)
    seconds = time.perf_counter() - start
    stable = table[table["stable"]]
    if stable.empty:  # report, do not hide: fall back to the smallest lr of the grid
        return min(lrs), max(locs), seconds
    best = stable.sort_values(["lr", "localization"], ascending=[False, True]).iloc[0]
    return float(best["lr"]), float(best["localization"]), seconds


def time_to_converged(model, data, backend: str, sampler: str, lr: float, loc: float, args) -> dict:
    """Wall time until the RULE holds (or the draw budget is spent)."""
    budget = 400 if args.small else 5000
    kw = dict(lr=lr, localization=loc, sampler=sampler, num_chains=4, batch_size=256, seed=0, num_burnin_steps=0)
    start = time.perf_counter()
    if backend == "ours":
        r = cz.get_measure("llc", until_converged=True, num_draws=100, max_draws=budget, **RULE, **kw)(model, data)
        total = time.perf_counter() - start
        return {"seconds": total, "final_run_s": total, "draws": r.extras["draws_used"], "llc": r.value,
                "stderr": r.stderr, "r_hat": r.diagnostics["r_hat"], "stopped_by": r.extras["stopped_by"]}
    draws = 100
    while True:
        t0 = time.perf_counter()
        r = cz.get_measure("llc", backend="devinterp", num_draws=draws, **kw)(model, data)
        last = time.perf_counter() - t0
        ok = r.diagnostics["r_hat"] <= RULE["target_r_hat"] and r.stderr <= RULE["target_rel_stderr"] * abs(r.value)
        if ok or 2 * draws > budget:
            break
        draws *= 2
    return {"seconds": time.perf_counter() - start, "final_run_s": last, "draws": draws, "llc": r.value,
            "stderr": r.stderr, "r_hat": r.diagnostics["r_hat"], "stopped_by": "converged" if ok else "max_draws"}


def converge(traj, data, args) -> None:
    """(2) time to a trustworthy estimate, at memorization and after grokking."""
    acc = traj.metrics.set_index("step")["train_acc"] if "train_acc" in traj.metrics else None
    memorized = acc is not None and (acc >= 0.99).any()
    memo = int(acc[acc >= 0.99].index[0]) if memorized else traj.steps[len(traj.steps) // 2]
    rows = []
    for label, step in (("memorized", memo), ("grokked", traj.steps[-1])):
        model = traj.model_at(step, device=args.device)
        for backend, sampler in SAMPLERS:
            lr, loc, cal_s = calibrated(model, data, backend, sampler, args)
            row = time_to_converged(model, data, backend, sampler, lr, loc, args)
            rows.append({"checkpoint": f"{label} (step {step})", "what": f"{backend} {sampler}", "lr": lr,
                         "localization": loc, "calibration_s": cal_s, **row})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    for _, part in df.groupby("checkpoint"):  # devinterp's best: its fastest converged sampler, if any converged
        ref = part[part["what"].str.startswith("devinterp")]
        ref = ref[ref["stopped_by"] == "converged"] if (ref["stopped_by"] == "converged").any() else ref
        best_ref, best_ref_oracle = ref["seconds"].min(), ref["final_run_s"].min()
        df.loc[part.index, "devinterp best / this"] = best_ref / part["seconds"]
        df.loc[part.index, "devinterp best (known length) / this"] = best_ref_oracle / part["seconds"]
    print(f"\n(2) time to split-R̂ <= 1.01 and stderr <= 5% of the LLC; {machine()}, device {args.device}\n")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


def layers(model, data, args) -> None:
    """(3) one LLC per layer: ours batched in one call vs devinterp once per layer."""
    kw = dict(lr=1e-4, localization=100.0, num_chains=4, num_draws=20 if args.small else 200, batch_size=256, seed=0)
    t_ours, ours = timed(lambda: cz.get_measure("llc", per_component="layer", **kw)(model, data), args.repeat)
    rows = [{"what": "ours, all layers + whole model, one call", "seconds": t_ours, "layer": "all"}]
    t_ref_total = 0.0
    for layer in ours.extras["per_layer"]:
        names = [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] == layer or n == layer]
        t, r = timed(lambda names=names: cz.get_measure("llc", backend="devinterp", restrict=names, **kw)(model, data),
                     1)
        t_ref_total += t
        rows.append({"what": f"devinterp layer {layer}", "seconds": t, "layer": layer, "llc devinterp": r.value,
                     "llc ours": ours.extras["per_layer"][layer], "stderr ours": ours.extras["per_layer_stderr"][layer],
                     "stderr devinterp": r.stderr})
    rows.append({"what": "devinterp, all layers", "seconds": t_ref_total, "layer": "all"})
    df = pd.DataFrame(rows)
    print(f"\n(3) per-layer LLC: devinterp / ours = {t_ref_total / t_ours:.2f}x; {machine()}, device {args.device}\n")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default=None, help="a run folder (default: train cpu-small)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--what", nargs="+", default=["throughput", "converge", "layers"],
                        choices=["throughput", "converge", "layers"])
    parser.add_argument("--small", action="store_true", help="a smoke run: tiny budgets, not for figures")
    args = parser.parse_args()
    traj = cz.Trajectory.from_dir(args.run or grokking_run())
    data = task_data(traj.task)
    model = traj.model_at(traj.steps[-1], device=args.device)
    if "throughput" in args.what:
        throughput(model, data, args)
    if "converge" in args.what:
        converge(traj, data, args)
    if "layers" in args.what:
        layers(model, data, args)


if __name__ == "__main__":
    main()
