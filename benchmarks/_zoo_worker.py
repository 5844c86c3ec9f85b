"""One (series, measure) of benchmarks/zoo.py, in a fresh process: seconds per checkpoint and peaks.

Children are forked from a forkserver that has imported torch, transformers, timm and
complexity_zoo (and done no compute), so each child starts at the interpreter-plus-imports
baseline without paying the imports again; ``ru_maxrss`` in the child is its own peak (the
baseline included). Each checkpoint goes through ``complexity_zoo.compare`` on the adapter's
Trajectory (load, device placement, measure), timed with ``torch.cuda.synchronize`` on CUDA.
Results go back over a queue one checkpoint at a time, so a child killed at the hard limit
still reports the checkpoints it finished.
"""

from __future__ import annotations

import os
import resource
import time
import traceback
from pathlib import Path

PRELOAD = ["torch", "complexity_zoo", "transformers", "timm", "_zoo_series"]


def rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _limit_memory(max_mem_gb: float) -> None:
    """Cap the address space on the CPU path (a runaway allocation fails instead of swapping
    the shared machine); the imports' mapping is added on top. Not on CUDA, which maps a
    large virtual range of its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            vm = int(line.split()[1]) * 1024
            limit = vm + int(max_mem_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run(job: dict, queue) -> None:
    """Run ``job`` (series, folder, measure, settings, device, steps, budget_s, threads, max_mem_gb)."""
    import _zoo_series as zs
    import torch

    import complexity_zoo as cz

    torch.set_num_threads(job["threads"])
    device = job["device"]
    queue.put({"kind": "start", "rss_mib": current_rss_mib(), "maxrss_mib": rss_mib()})
    if not device.startswith("cuda") and job.get("max_mem_gb"):
        _limit_memory(job["max_mem_gb"])
    try:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        series = zs.SERIES[job["series"]]
        traj, data = zs.load(series, Path(job["folder"]))
        measure = cz.get_measure(job["measure"], **job["settings"])
        label = measure.name
        start = time.perf_counter()
        for step in job["steps"]:
            _sync(device)
            t0 = time.perf_counter()
            result = cz.compare(traj, [measure], data=data if measure.needs_data else None, steps=[step],
                                device=device, progress=False, strict=True)
            _sync(device)
            wall = time.perf_counter() - t0
            ds = result.dataset
            queue.put({
                "kind": "checkpoint", "step": step, "wall_s": wall,
                "measure_s": float(ds[f"{label}_seconds"].values.ravel()[0]),
                "value": float(ds[label].values.ravel()[0]),
                "maxrss_mib": rss_mib(),
                "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
            })
            if time.perf_counter() - start > job["budget_s"]:
                break
        queue.put({"kind": "end", "maxrss_mib": rss_mib()})
    except BaseException as e:  # reported, not raised: the parent records the failure
        tb = traceback.extract_tb(e.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        queue.put({"kind": "error", "error": f"{type(e).__name__}: {str(e)[:300]}", "where": where,
                   "maxrss_mib": rss_mib()})


def start_context():
    """A forkserver context whose server has imported the heavy modules once."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def run_job(ctx, job: dict, hard_limit_s: float) -> dict:
    """Run ``job`` in a fresh child; kill it (by its own pid) past ``hard_limit_s``."""
    queue = ctx.Queue()
    proc = ctx.Process(target=run, args=(job, queue))
    t0 = time.perf_counter()
    proc.start()
    msgs: list[dict] = []
    killed = False
    import queue as queue_mod

    while True:
        left = hard_limit_s - (time.perf_counter() - t0)
        try:
            msg = queue.get(timeout=min(max(left, 0.1), 5.0))
            msgs.append(msg)
            if msg["kind"] in ("end", "error"):
                break
        except queue_mod.Empty:
            if not proc.is_alive():
                break
            if time.perf_counter() - t0 >= hard_limit_s:
                os.kill(proc.pid, 9)
                killed = True
                break
    proc.join(timeout=30)
    return {"messages": msgs, "killed": killed, "exitcode": proc.exitcode,
            "child_s": time.perf_counter() - t0}
