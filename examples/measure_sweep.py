"""The generalization-measure evaluation protocol (Jiang et al. 2020; Dziugaite et al. 2020) on our runs.

Trains a grid of small modular-addition MLPs that differ in named hyperparameters (weight decay x
training fraction x width, with seeds), computes every built-in measure on each run's final
checkpoint, and writes the tables the literature uses, against the generalization gap
g = train accuracy - test accuracy (Jiang et al.'s 0-1 gap):

* Kendall's τ of measure and gap over all runs;
* granulated Kendall ψ and its per-axis τ (seeds averaged first);
* robust sign-error, mean and worst over environments (seeds paired);
* conditional mutual information given up to two hyperparameters (on the seed means);

all from ``Comparison.run_correlations(hp, seed="seed", gap="accuracy")``, the library's one path.

Along the trajectory, for a few settings (``TRAJECTORY``: weight decay 0, 0.3 and 1 at training
fraction 0.8, width 64, seed 0, the same runs as the grid's but with ten checkpoints), every
measure at every checkpoint and ``Comparison.correlations()`` of each with the test loss across
checkpoints, per run (``--no-trajectory`` leaves this part out).

    python examples/measure_sweep.py --quick            # 8 runs, a few minutes on 2 CPU cores
    python examples/measure_sweep.py                    # 36 runs (the full grid, ~20-30 minutes)
    python examples/measure_sweep.py --out results/sweep --skip kolmogorov,llc

Writes ``values.csv`` (one row per run: hyperparameters, metrics, every measure),
``evaluation.csv`` and ``evaluation.md`` (one row per measure) and ``evaluation.png`` under ``--out``;
for the trajectory part ``trajectory.nc`` (the Comparison), ``trajectory_correlations.csv`` (the long
table), ``trajectory_kendall.csv`` / ``.md`` (Kendall τ with the test loss, one row per measure, one
column per run) and ``trajectory_layers.png`` (one measure's per-layer values over training). Every cell is cached
under ``--out``/cache (content-keyed), so a second call recomputes only what changed.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import complexity_zoo as cz
from complexity_zoo.analysis.export import write_table
from complexity_zoo.comparison import DroppedRunsWarning
from complexity_zoo.registry import builtin_modules
from complexity_zoo.tasks import modular, task_data

# p = 31 with AdamW lr 3e-3 (batch 512): measured here, weight decay 1.0 and train_frac 0.8 memorize by
# step 250 and reach test accuracy 0.93 at step 1,000 and 1.0 at 1,250, so the grid spans runs that
# generalize, half-generalize and only memorize.
GRIDS = {
    "quick": dict(p=31, weight_decay=[0.1, 1.0], train_frac=[0.5, 0.8], width=[32, 128], seed=[0], epochs=400),
    "full": dict(p=31, weight_decay=[0.0, 0.3, 1.0], train_frac=[0.4, 0.6, 0.8], width=[64, 256], seed=[0, 1],
                 epochs=1000),
}
LR = 3e-3
AXES = ["weight_decay", "train_frac", "width"]
# Cheaper settings where a measure's default trades much time for precision (recorded in values.csv's
# provenance via compare): fewer Hutchinson probes, a shorter LLC chain.
FAST_SETTINGS = {"hessian_trace": {"num_probes": 20}, "llc": {"num_draws": 100, "num_chains": 2}}
# The trajectory part: a few settings of the grid (weight decay varies, the rest fixed), each with
# checkpoints at these fractions of its optimizer steps (log-spaced: most change happens early).
TRAJECTORY = {
    "quick": dict(settings=[(0.1, 0.8, 32, 0), (1.0, 0.8, 32, 0)], fractions=[0.05, 0.1, 0.25, 0.5, 0.75, 1.0]),
    "full": dict(settings=[(0.0, 0.8, 64, 0), (0.3, 0.8, 64, 0), (1.0, 0.8, 64, 0)],
                 fractions=[0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]),
}


def run_name(wd: float, frac: float, width: int, seed: int) -> str:
    return f"wd{wd}_frac{frac}_w{width}_s{seed}"


def train_run(out: Path, grid: dict, wd: float, frac: float, width: int, seed: int,
              checkpoints: list[int] | None = None) -> None:
    """Train one run unless its folder already holds checkpoints (a finished run is reused)."""
    if (out / "run.json").exists() and list((out / "checkpoints").glob("*.safetensors")):
        return
    modular.train(out, p=grid["p"], op="+", train_frac=frac, model="mlp",
                  model_kwargs={"d_embed": 32, "d_hidden": width}, epochs=grid["epochs"], batch_size=512,
                  lr=LR, weight_decay=wd, checkpoints=checkpoints or [grid["epochs"]], seed=seed, progress=False,
                  overwrite=True)


def train_grid(grid: dict, root: Path) -> pd.DataFrame:
    """Train (or reuse) one run folder per grid point; returns the hyperparameters per run."""
    rows = []
    for wd, frac, width, seed in itertools.product(grid["weight_decay"], grid["train_frac"], grid["width"],
                                                   grid["seed"]):
        name = run_name(wd, frac, width, seed)
        train_run(root / "runs" / name, grid, wd, frac, width, seed)
        rows.append({"run": name, "weight_decay": wd, "train_frac": frac, "width": width, "seed": seed})
    return pd.DataFrame(rows).set_index("run")


def train_trajectories(grid: dict, plan: dict, root: Path) -> list[Path]:
    """The trajectory runs: the grid's settings again (same seed, so the same final weights on the
    CPU) with checkpoints at ``plan["fractions"]`` of the optimizer steps."""
    from complexity_zoo.tasks.modular import dataset

    folders = []
    for wd, frac, width, seed in plan["settings"]:
        n_train = dataset(grid["p"], "+", frac, seed).n("train")
        total = grid["epochs"] * -(-n_train // 512)  # optimizer steps: epochs x batches per epoch
        steps = sorted({max(1, round(f * total)) for f in plan["fractions"]})
        out = root / "trajectory" / run_name(wd, frac, width, seed)
        train_run(out, grid, wd, frac, width, seed, checkpoints=steps)
        folders.append(out)
    return folders


def measure_trajectories(folders: list[Path], names: list[str], out: Path) -> cz.Comparison:
    """Every measure at every checkpoint of the trajectory runs, and each measure's correlation with
    the test loss across checkpoints, per run (Comparison.correlations: Pearson, Spearman, Kendall)."""
    runs = [cz.Trajectory.from_dir(f) for f in folders]
    data = {t.name: task_data(t.task) for t in runs}
    specs = [(n, FAST_SETTINGS.get(n, {})) for n in names]
    with warnings.catch_warnings(record=True) as caught:  # expected: *_init measures at step 0 (no distance
        warnings.simplefilter("always")                   # yet), constant series (param_count); printed below
        result = cz.compare(runs, specs, data=data, progress=False, strict=False, cache=out / "cache")
        table = result.correlations(target="test_loss")
    result.save(out / "trajectory.nc")
    for e in result.errors.itertuples():
        print(f"  {e.measure} failed on {e.run} step {e.step}: {e.error}: {e.message[:100]}")
    for w in caught:
        if not issubclass(w.category, cz.errors.MeasureFailedWarning):  # those are printed above
            print(f"  {w.category.__name__}: {str(w.message)[:140]}")
    table.to_csv(out / "trajectory_correlations.csv", index=False)
    kendall = table[table["method"] == "kendall"].pivot(index="measure", columns="run", values="r")
    kendall["mean"] = kendall.mean(axis=1)
    kendall = kendall.sort_values("mean", ascending=False).reset_index()
    kendall.to_csv(out / "trajectory_kendall.csv", index=False)
    write_table(kendall.round(2), out / "trajectory_kendall.md",
                "Kendall τ of each measure with the test loss across checkpoints, per run", "tab:trajectory")
    return result


def measure_names(skip: set[str]) -> list[str]:
    table = cz.list_measures()
    table = table[table["family"].isin(builtin_modules()) & table["available"]]
    return [n for n in table["name"] if n not in skip]


def measure_runs(root: Path, hp: pd.DataFrame, names: list[str]) -> tuple[cz.Comparison, pd.DataFrame, pd.DataFrame]:
    """Every measure on each run's last checkpoint (init: its step 0): the Comparison, a table of
    hyperparameters, metrics and values per run, and the seconds per run."""
    runs = [cz.Trajectory.from_dir(root / "runs" / name) for name in hp.index]
    data = {t.name: task_data(t.task) for t in runs}
    specs = [(n, FAST_SETTINGS.get(n, {})) for n in names]
    last = max(runs[0].steps)
    result = cz.compare(runs, specs, data=data, steps=[last], progress=False, strict=False, cache=root / "cache")
    ds = result.dataset.isel(step=-1)
    values = pd.DataFrame({m: ds[m].to_series() for m in result.measures})
    seconds = pd.DataFrame({m: ds[f"{m}_seconds"].to_series() for m in result.measures})
    metrics = pd.DataFrame({m: ds[m].to_series() for m in ("train_acc", "test_acc", "train_loss", "test_loss")})
    values = metrics.join(values)
    values["gap"] = values["train_acc"] - values["test_acc"]
    for e in result.errors.itertuples():
        print(f"  {e.measure} failed on {e.run}: {e.error}: {e.message[:120]}")
    return result, hp.join(values), seconds


# run_correlations' column names -> this script's (as in the README's table)
COLUMNS = {"kendall_tau": "tau", "n_runs": "n", "granulated_psi": "psi"}


def evaluate(result: cz.Comparison, hp: pd.DataFrame) -> pd.DataFrame:
    """One row per measure, from Comparison.run_correlations (the library's one path): τ and its
    p over all runs, granulated ψ and per-axis τ over the settings' seed means, sign-error mean
    and worst over environments with runs paired by seed, and the CMI on the seed means; the gap
    is the 0-1 gap train_acc - test_acc. A measure that failed on some run is named in a
    DroppedRunsWarning and gets the note 'failed on some runs'."""
    with warnings.catch_warnings(record=True) as caught:  # a measure that failed on some run: named, printed
        warnings.simplefilter("always", DroppedRunsWarning)
        table = result.run_correlations(hp[AXES + ["seed"]], seed="seed", gap="accuracy").rename(columns=COLUMNS)
    for w in caught:
        print(f"  {w.category.__name__}: {str(w.message)[:140]}")
    table["note"] = np.where(table["tau"].isna(), "failed on some runs", "")
    return table.drop(columns=["kendall_tau_b", "environments"], errors="ignore")


def plot(evaluation: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = evaluation.dropna(subset=["tau"]).sort_values("tau")
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(ev) + 1.5))
    y = np.arange(len(ev))
    ax.barh(y - 0.2, ev["tau"], height=0.4, color="0.3", label="Kendall τ with the gap")
    ax.barh(y + 0.2, ev["psi"], height=0.4, color="0.75", hatch="//", label="granulated ψ")
    ax.set_yticks(y, ev["measure"], fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-1, 1)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_layers_figure(result: cz.Comparison, measure: str, path: Path) -> None:
    """One panel per trajectory run: the measure's per-layer values (Comparison.layers) over
    training, with the test accuracy on a second axis. Small on purpose (it goes in the README)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result.layers(measure)
    fig, axes = plt.subplots(1, len(result.runs), figsize=(3.2 * len(result.runs), 2.8), sharey=True)
    for ax, run in zip(np.atleast_1d(axes), result.runs):
        sub = table[table["run"] == run]
        for (layer, g), style in zip(sub.groupby("layer", sort=False), itertools.cycle(["-", "--", ":", "-."])):
            g = g.sort_values("step")
            ax.plot(g["step"], g["value"], style, color="0.2", lw=1.2, label=layer)
        acc = ax.twinx()
        acc.plot(result.dataset["step"], result.dataset["test_acc"].sel(run=run), color="tab:red", lw=0.8)
        acc.set_ylim(0, 1.05)
        acc.tick_params(labelsize=7, colors="tab:red")
        ax.set_xscale("symlog", linthresh=float(sub.loc[sub["step"] > 0, "step"].min()))
        ax.set_xlim(left=0)
        ax.set_title(run, fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    np.atleast_1d(axes)[0].set_ylabel(f"{measure} per layer (test acc. red)", fontsize=8)
    np.atleast_1d(axes)[0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the small grid (8 runs, a few minutes)")
    ap.add_argument("--out", default=None, help="output folder (default results/measure_sweep[_quick])")
    ap.add_argument("--skip", default="", help="comma-separated measures to leave out")
    ap.add_argument("--no-trajectory", action="store_true", help="leave out the along-the-trajectory part")
    ap.add_argument("--layers-measure", default="effective_rank",
                    help="the measure whose layers trajectory_layers.png draws")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    grid = GRIDS["quick" if args.quick else "full"]
    root = Path(args.out or ("results/measure_sweep_quick" if args.quick else "results/measure_sweep"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    hp = train_grid(grid, root)
    t1 = time.perf_counter()
    names = measure_names({s.strip() for s in args.skip.split(",") if s.strip()})
    result, table, seconds = measure_runs(root, hp, names)
    t2 = time.perf_counter()
    table.to_csv(root / "values.csv")
    evaluation = evaluate(result, hp)
    evaluation["seconds_per_run"] = evaluation["measure"].map(seconds.mean())
    evaluation.to_csv(root / "evaluation.csv", index=False)
    write_table(evaluation.round(3), root / "evaluation.md", "Measures against the generalization gap", "tab:sweep")
    plot(evaluation, root / "evaluation.png")
    print(table[AXES + ["seed", "train_acc", "test_acc", "gap"]].to_string())
    print(evaluation.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"trained {len(hp)} runs in {t1 - t0:.0f} s; measured {len(names)} measures in {t2 - t1:.0f} s")
    if not args.no_trajectory:
        t3 = time.perf_counter()
        folders = train_trajectories(grid, TRAJECTORY["quick" if args.quick else "full"], root)
        t4 = time.perf_counter()
        traj = measure_trajectories(folders, names, root)
        if args.layers_measure in traj.measures:
            plot_layers_figure(traj, args.layers_measure, root / "trajectory_layers.png")
        print(pd.read_csv(root / "trajectory_kendall.csv").to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        print(f"trajectories: trained {len(folders)} runs in {t4 - t3:.0f} s; "
              f"measured every checkpoint in {time.perf_counter() - t4:.0f} s")
    return root


if __name__ == "__main__":
    main()
