"""What hostile small inputs cost, with the bounds on and off (each side in a fresh process).

Run: ``python benchmarks/untrusted_costs.py [--gib 1]`` (about 1 minute on 2 idle cores; needs
``gib`` + 3 GiB of free memory for the unbounded side).

- ``bomb``: a ~1 MiB timm checkpoint whose deflated ``data.pkl`` holds one string of ``gib`` GiB,
  loaded by the timm adapter: peak RSS with the pickle bounds (``_pickle_bounds.LIMITS``), and
  with them raised out of the way; and the peak RSS of importing the adapter alone (the baseline).
- ``modular``: seconds until ``tasks.modular.dataset(p=2**61 - 1, op="/")`` is refused.
- ``--save-columns 500,1000,2000``: seconds ``Comparison.save`` takes for a result with that many
  metric columns (why ``read_metrics`` refuses more than ``_steps.MAX_METRICS``).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path


def build_bomb(path: Path, n: int) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/version", "3\n")
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            f.write(b"\x80\x02X" + n.to_bytes(4, "little"))  # BINUNICODE of n bytes
            for _ in range(n >> 20):
                f.write(b"a" * (1 << 20))
            f.write(b".")


def child(mode: str, path: str) -> None:
    from complexity_zoo.adapters import timm as zoo_timm

    outcome = "imported only"
    start = time.perf_counter()
    if mode != "baseline":
        if mode == "unbounded":
            from complexity_zoo import _pickle_bounds

            _pickle_bounds.LIMITS.update(item_bytes=1 << 40, pickle_bytes=1 << 40, inflation=1 << 40)
        try:
            zoo_timm.load_checkpoint_file(path)
            outcome = "loaded"
        except Exception as e:
            outcome = type(e).__name__
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{mode:10s} {outcome:22s} {time.perf_counter() - start:6.1f} s  peak RSS {peak:.2f} GiB", flush=True)


def save_columns(counts: list[int]) -> None:
    import pandas as pd

    import complexity_zoo as cz
    from complexity_zoo import _steps
    from complexity_zoo.testing import mlp

    _steps.MAX_METRICS = max(counts)  # the bound is what is measured here
    for n in counts:
        metrics = pd.DataFrame({"step": [0, 10], **{f"m{i}": [1.0, 2.0] for i in range(n)}})
        traj = cz.Trajectory.from_state_dicts({0: mlp().state_dict(), 10: mlp().state_dict()}, model=mlp,
                                              metrics=metrics)
        result = cz.compare(traj, ["l2"], progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result.save(Path(tmp) / "r.nc")
            print(f"{n:6d} metric columns: save {time.perf_counter() - start:6.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--child", nargs=2)
    parser.add_argument("--save-columns", default="")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.save_columns:
        save_columns([int(n) for n in args.save_columns.split(",")])
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint-0.pth.tar"
        build_bomb(path, int(args.gib * 2**30))
        print(f"bomb: {path.stat().st_size / 2**20:.2f} MiB on disk, data.pkl holds a {args.gib} GiB string")
        for mode in ("baseline", "bounded", "unbounded"):
            subprocess.run([sys.executable, __file__, "--child", mode, str(path)], check=True)
    from complexity_zoo.tasks import modular

    start = time.perf_counter()
    try:
        modular.dataset(p=2**61 - 1, op="/")
    except Exception as e:
        print(f"modular p=2**61-1: {type(e).__name__} after {time.perf_counter() - start:.4f} s")


if __name__ == "__main__":
    main()
