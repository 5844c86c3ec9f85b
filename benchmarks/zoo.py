"""Every measure at real sizes: seconds per checkpoint, peak memory, scaling in parameter count.

Run: ``python benchmarks/zoo.py`` (full: cpu-small MLP 0.19M, timm ResNet-18 11.2M, GPT-2-style
LMs at 10.1M and 124.4M, 3 checkpoints each, 100-checkpoint memory check on the 124M LM;
26 minutes on 2 idle CPU cores), ``--combine`` (tables of several runs together), ``--quick`` (MLP, 10M LM and
ResNet-18, 2 checkpoints, 13 measures, memory check on the 10M LM; 35 minutes at load 15-23 on
2 cores, 344 s idle), ``--device cuda`` for the GPU path. ``--out DIR`` writes zoo.md / zoo.csv /
zoo.json; the series are built once into ``--work`` (default benchmarks/_out, gitignored).

Each (series, measure) runs in a fresh process (forked from a server that has only imported
the libraries) through ``complexity_zoo.compare`` on the adapter's Trajectory, one checkpoint
per call: seconds per checkpoint (median wall, model loading included; the measure's own time
beside it), peak RSS (``ru_maxrss``, imports included; on CUDA also
``torch.cuda.max_memory_allocated``), status. Expensive measures run with the small settings
in ``SETTINGS`` at every size (one recipe, so the exponents compare like with like).
Skips: a measure that failed on a smaller series of the same kind is not retried (the error
is repeated); one whose predicted seconds per checkpoint (from the largest smaller series of
the same kind, linear in parameters or the fitted exponent if steeper) exceed
``--max-per-checkpoint`` is skipped (in practice: the 124M LM, predicted from the 10M one); a
child starts no checkpoint after ``--budget`` seconds (so slow measures report one or two
checkpoints) and is killed at budget + 1.5 x max-per-checkpoint + 60 s ("timeout").

The exponent is the least-squares slope of log(seconds per checkpoint) on log(parameters)
over the series where the measure ran (different architectures: read it as a trend, not a
law); the extrapolation is that line at 1e9 parameters x 100 checkpoints. Feasible on one
GPU: extrapolated time < 24 h and extrapolated peak memory (growth over the imports' RSS on
CPU; ``max_memory_allocated`` on CUDA) < 80 GB; from CPU timings a
"yes" is conservative (a GPU is not slower on these kernels), a "no" says to time it on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _zoo_series as zs  # noqa: E402
import _zoo_worker as zw  # noqa: E402
from _common import load  # noqa: E402

# Small settings for the expensive measures, the same at every size.
SETTINGS: dict[str, dict] = {
    "kolmogorov": {"num_deltas": 11, "max_examples": 256},
    "llc": {"num_chains": 2, "num_draws": 20, "batch_size": 8, "lr": 1e-4, "localization": 100.0},
    "lmn": {"num_samples": 20},
    **{m: {"search_depth": 5, "montecarlo_samples": 3}
       for m in ("pacbayes_flatness", "pacbayes_mag_flatness", "pacbayes_orig", "pacbayes_init")},
    **{m: {"search_depth": 5, "ascent_steps": 3} for m in ("sharpness_flatness", "sharpness_mag_flatness")},
    "hessian_trace": {"num_probes": 5, "num_examples": 64},
    "hessian_top_eigenvalue": {"max_iterations": 10, "num_examples": 64},
    "fisher_rao_norm": {"num_examples": 64},
    "gradient_variance": {"num_examples": 64, "batch_size": 8},
    "gradient_noise_scale": {"num_examples": 64, "batch_size": 8},
}
# --quick: one or two measures of each family (the full run does every built-in measure).
QUICK_MEASURES = ["l2", "effective_rank", "stable_rank", "alpha", "naive_compression", "path_norm", "inverse_margin",
                  "kolmogorov", "llc", "lmn", "hessian_trace", "pacbayes_flatness", "gradient_noise_scale"]
TARGET_PARAMS, TARGET_CHECKPOINTS, DAY_H, GPU_GB = 1e9, 100, 24.0, 80.0


def builtin_measures() -> list[str]:
    import complexity_zoo as cz

    names = cz.list_measures()["name"].tolist()
    return [n for n in names if type(cz.get_measure(n)).__module__.startswith("complexity_zoo.")]


def fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) of log y on log x; None with fewer than 2 distinct x."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    mx, my = statistics.fmean(p[0] for p in pts), statistics.fmean(p[1] for p in pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return slope, my - slope * mx


def _skip_reason(measure: str, series: zs.Series, params: int, rows: list[dict], cap: float) -> str | None:
    smaller = [r for r in rows if r["measure"] == measure and r["params"] < params]
    failed = [r for r in smaller if r["status"] == "failed" and zs.SERIES[r["series"]].kind == series.kind]
    if failed:
        return f"failed on {failed[-1]['series']} ({failed[-1]['error'][:120]})"
    ok = [r for r in smaller if r["status"] == "ok" and zs.SERIES[r["series"]].kind == series.kind]
    if not ok:
        return None
    ref = max(ok, key=lambda r: r["params"])
    slope = fit([r["params"] for r in ok], [r["s_per_ckpt"] for r in ok])
    exponent = max(1.0, slope[0]) if slope else 1.0
    predicted = ref["s_per_ckpt"] * (params / ref["params"]) ** exponent
    if predicted > cap:
        return (f"predicted {predicted:.0f} s/checkpoint > --max-per-checkpoint {cap:.0f} s "
                f"(from {ref['series']}, exponent {exponent:.2f})")
    return None


def hard_limit(args) -> float:
    """When a child is killed: the budget, one slow checkpoint and a minute to load."""
    return args.budget + 1.5 * args.max_per_checkpoint + 60


def bench(ctx, series: zs.Series, folder: Path, params: int, measure: str, steps: list[int], args,
          rows: list[dict]) -> dict:
    row = {"series": series.name, "params": params, "measure": measure, "device": args.device,
           "settings": json.dumps(SETTINGS.get(measure, {})), "status": "", "error": "", "s_per_ckpt": float("nan"),
           "measure_s": float("nan"), "checkpoints": 0, "peak_rss_mib": float("nan"), "base_rss_mib": float("nan"),
           "cuda_peak_mib": float("nan"), "value": float("nan")}
    reason = _skip_reason(measure, series, params, rows, args.max_per_checkpoint)
    if reason:
        return {**row, "status": "skipped", "error": reason}
    job = {"series": series.name, "folder": str(folder), "measure": measure, "settings": SETTINGS.get(measure, {}),
           "device": args.device, "steps": steps, "budget_s": args.budget, "threads": args.threads,
           "max_mem_gb": args.max_mem_gb}
    out = zw.run_job(ctx, job, hard_limit_s=hard_limit(args))
    msgs = out["messages"]
    ckpts = [m for m in msgs if m["kind"] == "checkpoint"]
    peaks = [m["maxrss_mib"] for m in msgs if m["kind"] != "start"]  # a killed child's peak is unknown
    start = next((m for m in msgs if m["kind"] == "start"), {})
    err = next((m for m in msgs if m["kind"] == "error"), None)
    row.update(checkpoints=len(ckpts), peak_rss_mib=max(peaks, default=float("nan")),
               base_rss_mib=start.get("rss_mib", float("nan")))
    if ckpts:
        row.update(s_per_ckpt=statistics.median(m["wall_s"] for m in ckpts),
                   measure_s=statistics.median(m["measure_s"] for m in ckpts), value=ckpts[-1]["value"])
        if ckpts[-1]["cuda_peak_mib"] is not None:
            row["cuda_peak_mib"] = max(m["cuda_peak_mib"] for m in ckpts)
    if err:
        row.update(status="failed", error=f"{err['error']} [{err['where']}]")
    elif out["killed"]:
        row.update(status="ok" if ckpts else "timeout",
                   error=f"killed at the hard limit {hard_limit(args):.0f} s after {len(ckpts)} checkpoint(s)")
    elif not ckpts:
        row.update(status="failed", error=f"the child died (exit code {out['exitcode']}; out of memory?)")
    else:
        row.update(status="ok", error="" if len(ckpts) == len(steps) else
                   f"{len(ckpts)} of {len(steps)} checkpoints within the budget")
    return row


def scaling(rows: list[dict]) -> list[dict]:
    """Per measure: the time and memory exponents, the 1B x 100 extrapolation, feasibility."""
    out = []
    for measure in dict.fromkeys(r["measure"] for r in rows):
        ok = [r for r in rows if r["measure"] == measure and r["status"] == "ok"]
        t = fit([r["params"] for r in ok], [r["s_per_ckpt"] for r in ok])
        grow = [(r["params"], r["cuda_peak_mib"] if r["device"].startswith("cuda")  # GPU memory on CUDA
                 else r["peak_rss_mib"] - r["base_rss_mib"]) for r in ok]
        mem = fit([g[0] for g in grow], [max(g[1], 1.0) for g in grow])
        hours = math.exp(t[1]) * TARGET_PARAMS ** t[0] * TARGET_CHECKPOINTS / 3600 if t else float("nan")
        gb = math.exp(mem[1]) * TARGET_PARAMS ** mem[0] / 1024 if mem else float("nan")
        if t is None:
            feasible = "unknown (ran on < 2 sizes)"
        elif hours < DAY_H and not gb > GPU_GB:
            feasible = "yes"
        elif gb > GPU_GB:
            feasible = f"no: memory ~{gb:.0f} GB"
        else:
            feasible = "no on CPU; time on GPU" if ok[0]["device"] == "cpu" else "no"
        out.append({"measure": measure, "sizes": len(ok), "time_exponent": t[0] if t else float("nan"),
                    "mem_exponent": mem[0] if mem else float("nan"), "hours_1b_x100": hours, "mem_gb_1b": gb,
                    "feasible_one_gpu": feasible})
    return out


def markdown(rows: list[dict], scale: list[dict], header: str) -> str:
    series = list(dict.fromkeys(r["series"] for r in rows))
    params = {r["series"]: r["params"] for r in rows}
    cols = [f"{s} ({params[s] / 1e6:.2f}M): s/ckpt (measure alone), peak MiB" for s in series]
    lines = [header, "", "| measure | " + " | ".join(cols)
             + " | time exp. | h at 1B x 100 | one GPU |", "|---" * (len(series) + 4) + "|"]
    for sc in scale:
        cells = []
        for s in series:
            r = next((r for r in rows if r["measure"] == sc["measure"] and r["series"] == s), None)
            if r is None:
                cells.append("not run")
            elif r["status"] == "ok":
                cells.append(f"{r['s_per_ckpt']:.3g} ({r['measure_s']:.3g}), {r['peak_rss_mib']:.0f}"
                             + (" *" if r["error"] else ""))
            else:
                cells.append(r["status"])
        lines.append(f"| `{sc['measure']}` | " + " | ".join(cells) +
                     f" | {sc['time_exponent']:.2f} | {sc['hours_1b_x100']:.3g} | {sc['feasible_one_gpu']} |")
    notes = [f"- {r['series']} / `{r['measure']}`: {r['status']}: {r['error']}" for r in rows if r["error"]]
    return "\n".join(lines + ["", "Seconds per checkpoint: median wall time of compare() on one checkpoint "
                              "(loading included); in parentheses the measure's own time. Peak: ru_maxrss of the "
                              "fresh process, imports included. `*`: fewer checkpoints than asked (see notes).",
                              "", "Notes:", *notes,
                              "", "Settings (every size): " + json.dumps(SETTINGS)])


def combined(paths: list[str]) -> list[dict]:
    """The rows of several runs' zoo.json, a later file's (series, measure) replacing an earlier's:
    e.g. the full run plus the expensive measures rerun on the largest series with a larger cap."""
    rows: dict[tuple[str, str], dict] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["rows"]:
            rows[(row["series"], row["measure"])] = row
    params = {r["series"]: r["params"] for r in rows.values()}
    order = {name: i for i, name in enumerate(sorted(params, key=params.get))}
    return sorted(rows.values(), key=lambda r: (order[r["series"]], r["measure"]))


def write_report(out: Path, text: str, rows: list[dict]) -> None:
    """zoo.md (the report), zoo.json (rows and scaling) and, when measures ran, zoo.csv into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "zoo.md").write_text(text + "\n")
    (out / "zoo.json").write_text(json.dumps({"rows": rows, "scaling": scaling(rows) if rows else []}, indent=1))
    if rows:
        import pandas as pd

        pd.DataFrame(rows).to_csv(out / "zoo.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="MLP, 10M LM, ResNet-18; 2 checkpoints; QUICK_MEASURES; memory check on the 10M LM")
    parser.add_argument("--work", default=os.path.join(os.path.dirname(__file__), "_out"))
    parser.add_argument("--out", default=None, help="folder for zoo.md, zoo.csv, zoo.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoints", type=int, default=None, help="per series (default 3; --quick 2)")
    parser.add_argument("--series", default=None, help=f"comma-separated among {list(zs.SERIES)}")
    parser.add_argument("--measures", default=None, help="comma-separated (default: every built-in measure)")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds per (series, measure): no checkpoint is started after it (default 20)")
    parser.add_argument("--max-per-checkpoint", type=float, default=None,
                        help="skip when the predicted s/checkpoint exceeds it (default 60; --quick 40)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per child")
    parser.add_argument("--max-mem-gb", type=float, default=8.0, help="address-space cap per child on CPU")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: measures,peers,memory")
    parser.add_argument("--memory-checkpoints", type=int, default=None, help="default 100")
    parser.add_argument("--combine", nargs="+", metavar="ZOO_JSON", default=None,
                        help="no benchmark: the measures table of these runs' zoo.json files together "
                             "(a later file's series x measure replaces an earlier one's)")
    args = parser.parse_args()
    if args.combine:
        rows = combined(args.combine)
        text = markdown(rows, scaling(rows), f"## Measures (benchmarks/zoo.py --combine {' '.join(args.combine)})")
        print(text)
        if args.out:
            write_report(Path(args.out), text, rows)
        return
    args.checkpoints = args.checkpoints or (2 if args.quick else 3)
    args.max_per_checkpoint = args.max_per_checkpoint or (40.0 if args.quick else 60.0)
    names = args.series.split(",") if args.series else (
        ["mlp-cpu-small", "gpt2-10m", "resnet18"] if args.quick else list(zs.SERIES))
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    header = (f"benchmarks/zoo.py ({'quick' if args.quick else 'full'}), device {args.device}; "
              f"load at start: {load()}")
    print(header, flush=True)

    folders, params = {}, {}
    for name in sorted(names, key=list(zs.SERIES).index):
        t0 = time.perf_counter()
        folders[name] = zs.build(zs.SERIES[name], work, args.checkpoints)
        traj, _ = zs.load(zs.SERIES[name], folders[name])
        params[name] = zs.param_count(traj)
        print(f"built {name}: {params[name]:,} parameters, steps {traj.steps} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    order = sorted(folders, key=params.get)

    rows: list[dict] = []
    if "measures" not in skip:
        ctx = zw.start_context()
        measures = (args.measures.split(",") if args.measures else
                    QUICK_MEASURES if args.quick else builtin_measures())
        for name in order:
            traj, _ = zs.load(zs.SERIES[name], folders[name])
            for measure in measures:
                row = bench(ctx, zs.SERIES[name], folders[name], params[name], measure, traj.steps, args, rows)
                rows.append(row)
                print(f"{name:14s} {measure:32s} {row['status']:8s} {row['s_per_ckpt']:8.3g} s/ckpt  "
                      f"peak {row['peak_rss_mib']:7.0f} MiB  {row['error'][:100]}", flush=True)
    report = []
    if rows:
        report.append(markdown(rows, scaling(rows), f"## Measures ({header})"))
    if "peers" not in skip:
        import _zoo_peers

        report.append(_zoo_peers.run(folders, args))
    if "memory" not in skip:
        import _zoo_memory

        big = "gpt2-124m" if "gpt2-124m" in folders else "gpt2-10m"
        if big in folders:
            n = args.memory_checkpoints or 100
            report.append(_zoo_memory.run(folders[big], work / f"{big}-x{n}", n, args))
            k = min(n, 5)  # the control (the model built per checkpoint): a few checkpoints show its peak
            report.append(_zoo_memory.run(folders[big], work / f"{big}-x{k}", k, args, mode="model"))
    report.append(f"Total {time.perf_counter() - began:.0f} s; load at end: {load()}")
    text = "\n\n".join(report)
    print("\n" + text)
    if args.out:
        write_report(Path(args.out), text, rows)


if __name__ == "__main__":
    main()
