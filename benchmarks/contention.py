"""Training the demo's MLP and comparing its checkpoints, with the cores idle and with two busy
torch processes, under the thread policy and under torch's default (one thread per core).

Run: ``python benchmarks/contention.py [--epochs 10] [--busy 2] [--measures l2,effective_rank]``

"Busy": ``--busy`` other Python processes, each with torch's default threads, multiplying
1024 x 1024 matrices in a loop (what another user's job does to a shared node); they are
started before the busy half and ended (by their process ids) after it. Training: the demo's
``cpu-small`` preset for ``--epochs`` epochs (8 optimizer steps each) into a fresh folder.
Compare: the demo's measures (complexity_zoo.tasks.report.MEASURES, unless ``--measures``) on
the last checkpoint of that run, no cache. Each is timed with ``threads=None`` (the policy of
complexity_zoo._threads: one thread for this 0.19M-parameter model) and with ``threads=`` the
number of cores (torch's default, what the library did before). Prints seconds and the ratios
busy/idle; the idle figures are only as idle as the machine is (its load average is printed).
``--sweep`` also times training steps at several model widths with 1 thread and with one per
core, idle, for the SMALL_WORK threshold of complexity_zoo._threads.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import load, machine

import complexity_zoo as cz
from complexity_zoo._threads import host_cores
from complexity_zoo.tasks import task_data
from complexity_zoo.tasks.modular import from_preset, mlp, train
from complexity_zoo.tasks.report import MEASURES

BUSY = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n"


def start_busy(n: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
    time.sleep(3)  # torch imported and multiplying
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()


def time_train(folder: Path, epochs: int, threads: int | None, **model) -> float:
    kwargs = {**from_preset("cpu-small"), "epochs": epochs, "checkpoints": "every:1000000"}
    if model:
        kwargs["model_kwargs"] = model
    start = time.perf_counter()
    train(folder, **kwargs, progress=False, overwrite=True, threads=threads)
    return time.perf_counter() - start


def time_compare(run: Path, measures, threads: int | None) -> float:
    traj = cz.Trajectory.from_dir(run)
    start = time.perf_counter()
    cz.compare(traj, measures, data=task_data(traj.task), steps=[traj.steps[-1]], progress=False,
               strict=True, threads=threads)
    return time.perf_counter() - start


def conditions(tmp: Path, args, measures) -> dict:
    cores, out = host_cores(), {}
    arms = (("policy", None),) if args.policy_only else (("policy", None), (f"{cores} threads", cores))
    for label, threads in arms:
        out[label, "train"] = time_train(tmp / "run", args.epochs, threads)
        out[label, "compare"] = time_compare(tmp / "run", measures, threads)
        print(f"  {label}: train {out[label, 'train']:.2f} s, compare {out[label, 'compare']:.2f} s; {load()}",
              flush=True)
    return out


def sweep(tmp: Path, epochs: int) -> None:
    print(f"sweep, idle ({epochs} epochs of 8 steps; d_embed 128): seconds with 1 thread / {host_cores()} threads")
    for hidden in (512, 2048, 8192):
        net = mlp(p=97, d_embed=128, d_hidden=hidden)
        params = sum(p.numel() for p in net.parameters())
        one = time_train(tmp / "sweep", epochs, 1, d_embed=128, d_hidden=hidden)
        many = time_train(tmp / "sweep", epochs, host_cores(), d_embed=128, d_hidden=hidden)
        print(f"  d_hidden {hidden} ({params / 1e6:.2f}M parameters): {one:.2f} s / {many:.2f} s "
              f"(ratio 1-thread/{host_cores()}-thread {one / many:.2f}); {load()}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--busy", type=int, default=2)
    ap.add_argument("--measures", default=None, help="comma-separated (default: the demo's)")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--policy-only", action="store_true", help="leave out the runs at torch's default threads")
    args = ap.parse_args()
    measures = list(MEASURES) if args.measures is None else args.measures.split(",")
    print(machine())
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.sweep:
            sweep(tmp, args.epochs)
        print(f"idle: {load()}")
        idle = conditions(tmp, args, measures)
        procs = start_busy(args.busy)
        try:
            print(f"{args.busy} busy torch processes: {load()}")
            busy = conditions(tmp, args, measures)
        finally:
            stop(procs)
    for key in idle:
        print(f"{key[0]:>10} {key[1]:>8}: idle {idle[key]:.2f} s, busy {busy[key]:.2f} s, "
              f"busy/idle {busy[key] / idle[key]:.2f}")


if __name__ == "__main__":
    main()
