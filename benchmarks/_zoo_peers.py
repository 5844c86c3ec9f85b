"""Peer ratios for benchmarks/zoo.py, each pair in one process on the same model.

Spectral: our ``effective_rank``, ``stable_rank`` and ``alpha`` (each called on the model) against
WeightWatcher's ``analyze()`` (one call computing every layer's SVD, alpha and stable rank), on
ResNet-18 and a GPT-2 LM. Values are compared layer by layer where both name the same weight
matrix: WeightWatcher's ``alpha`` and ``stable_rank`` against ours. Layer sets differ: ours is every
parameter with ndim >= 2 read as (out, -1); WeightWatcher reads conv kernels its own way and skips
some layers (its ``min_evals``/``max_evals``), so only matched layers are compared.

LLC: ours (torch backend, vectorized chains) against devinterp's sampler (``llc`` of devinterp
2.x, through ``backend="devinterp"``: the same settings object, as benchmarks/llc.py does) on the
10M LM's last checkpoint: same chains, draws, lr, localization, batch size, seed, no burn-in.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import _zoo_series as zs

LLC_MATCHED = dict(num_chains=2, num_draws=50, batch_size=8, lr=1e-4, localization=100.0, num_burnin_steps=0,
                   seed=0)


def _timed(fn, device: str):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def _layer_key(name: str) -> str:
    return name[:-len(".weight")] if name.endswith(".weight") else name


def spectral(series: str, folder: Path, device: str) -> list[str]:
    import weightwatcher as ww

    import complexity_zoo as cz

    traj, _ = zs.load(zs.SERIES[series], folder)
    model = traj.model_at(traj.steps[-1], device=device)
    ours, t_ours = {}, 0.0
    for name in ("effective_rank", "stable_rank", "alpha"):
        t, r = _timed(lambda name=name: cz.get_measure(name)(model), device)
        ours[name] = (t, r)
        t_ours += t
    t_ww, details = _timed(lambda: ww.WeightWatcher(model=model).analyze(), device)
    lines = [f"**{series}** (step {traj.steps[-1]}, {device}): ours {t_ours:.2f} s "
             f"(effective_rank {ours['effective_rank'][0]:.2f}, stable_rank {ours['stable_rank'][0]:.2f}, "
             f"alpha {ours['alpha'][0]:.2f}) vs WeightWatcher analyze() {t_ww:.2f} s: "
             f"ratio ours/theirs {t_ours / t_ww:.2f} (alpha alone {ours['alpha'][0] / t_ww:.2f})."]
    names = details["longname"] if "longname" in details else details["name"]
    for col, measure in (("alpha", "alpha"), ("stable_rank", "stable_rank")):
        per = ours[measure][1].extras.get("per_layer", {})
        mine = {_layer_key(k): v for k, v in per.items()}
        pairs = [(mine[n], float(v)) for n, v in zip(names, details[col]) if n in mine and v == v]
        if not pairs:
            lines.append(f"- {col}: no layer matched by name (WeightWatcher {len(details)} layers, ours {len(mine)}).")
            continue
        rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in pairs]
        lines.append(f"- {col}: {len(pairs)} matched layers (WeightWatcher {len(details)}, ours {len(mine)}); "
                     f"mean ours {statistics.fmean(a for a, _ in pairs):.4g} vs theirs "
                     f"{statistics.fmean(b for _, b in pairs):.4g}; median relative difference "
                     f"{statistics.median(rel):.2e}, max {max(rel):.2e}; within 1%: "
                     f"{sum(r <= 0.01 for r in rel)}/{len(rel)}.")
    return lines


def llc(folder: Path, device: str, draws: int) -> list[str]:
    import complexity_zoo as cz

    traj, data = zs.load(zs.SERIES["gpt2-10m"], folder)
    model = traj.model_at(traj.steps[-1], device=device)
    settings = {**LLC_MATCHED, "num_draws": draws}
    rows = {}
    for backend in ("torch", "devinterp"):
        rows[backend] = _timed(lambda b=backend: cz.get_measure("llc", backend=b, **settings)(model, data), device)
    (t_o, r_o), (t_d, r_d) = rows["torch"], rows["devinterp"]
    gap = abs(r_o.value - r_d.value) / max((r_o.stderr or 0) ** 2 + (r_d.stderr or 0) ** 2, 1e-30) ** 0.5
    return [f"**LLC, gpt2-10m** (step {traj.steps[-1]}, {device}; {settings}): ours {t_o:.1f} s, "
            f"devinterp {t_d:.1f} s, ratio ours/theirs {t_o / t_d:.2f}; LLC ours {r_o.value:.4g} ± {r_o.stderr:.2g}, "
            f"devinterp {r_d.value:.4g} ± {r_d.stderr:.2g} ({gap:.1f} standard errors apart)."]


def run(folders: dict[str, Path], args) -> str:
    """The peer section of the report (Markdown)."""
    import torch

    torch.set_num_threads(args.threads)
    out = ["## Peers (same process, same model)"]
    lm = "gpt2-124m" if "gpt2-124m" in folders else "gpt2-10m"
    for series in ("resnet18", lm):
        if series in folders:
            n = len(out)
            try:
                out += spectral(series, folders[series], args.device)
            except Exception as e:  # reported, never hidden
                out.append(f"**{series}** spectral peers failed: {type(e).__name__}: {e}")
            print("\n".join(out[n:]), flush=True)
    if "gpt2-10m" in folders:
        try:
            out += llc(folders["gpt2-10m"], args.device, draws=20 if args.quick else LLC_MATCHED["num_draws"])
        except Exception as e:
            out.append(f"**LLC peers** failed: {type(e).__name__}: {e}")
        print(out[-1], flush=True)
    return "\n".join(out)
