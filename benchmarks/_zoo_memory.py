"""The memory acceptance of issue 14, for benchmarks/zoo.py.

A weight-only comparison (``l2``) over N checkpoints of one LM, as a Trainer output folder: N
``checkpoint-i/`` folders whose ``model.safetensors`` are hard links to one file (disk stays at
one model) with their own ``config.json`` and ``trainer_state.json``. It runs in a fresh
process with a content-keyed cache (so every file is also hashed, as a user's run would be).
Reported: the interpreter baseline (RSS after the imports), the largest tensor (from the
safetensors header, nothing loaded), the peak RSS, and whether peak <= baseline + 2 x largest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import _zoo_worker as zw

MEASURES = ["l2"]


def make_series(src: Path, dst: Path, n: int) -> Path:
    """N checkpoint folders hard-linked to the last checkpoint of ``src`` (built once)."""
    last = max((p for p in src.iterdir() if p.name.startswith("checkpoint-")), key=lambda p: int(p.name.split("-")[1]))
    marker = dst / "_zoo_built.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"n": n, "src": str(last)}:
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for i in range(1, n + 1):
        ckpt = dst / f"checkpoint-{i}"
        ckpt.mkdir()
        os.link(last / "model.safetensors", ckpt / "model.safetensors")
        shutil.copy(last / "config.json", ckpt / "config.json")
        state = {"global_step": i, "log_history": [{"step": j, "loss": 1.0 / j} for j in range(1, i + 1)]}
        (ckpt / "trainer_state.json").write_text(json.dumps(state))
    marker.write_text(json.dumps({"n": n, "src": str(last)}))
    return dst


def largest_tensor_bytes(path: Path) -> tuple[str, int]:
    """The largest tensor's name and size in bytes, from the safetensors header (nothing loaded)."""
    from complexity_zoo._stream import SafetensorsReader

    reader = SafetensorsReader(path)
    try:
        return max(((name, end - begin) for name, (_, _, begin, end) in reader.entries.items()), key=lambda e: e[1])
    finally:
        reader.close()


def rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(folder: str, device: str, threads: int, queue, mode: str = "compare") -> None:
    """``mode="compare"``: compare() over every checkpoint (the library's path: it streams
    tensors_only measures); ``"model"``: the control, each checkpoint built as a model
    (``model_at``) and the measure called on it, as compare() did before streaming."""
    import torch

    import complexity_zoo as cz
    from complexity_zoo.adapters import huggingface

    torch.set_num_threads(threads)
    # what compare() imports on its first call (xarray, scipy, ...) belongs to the interpreter baseline
    import importlib
    import threading

    for module in ("numpy", "pandas", "safetensors.torch", "scipy.stats", "tqdm.auto", "xarray",
                   "complexity_zoo.comparison"):
        importlib.import_module(module)
    anon = [0.0]  # peak anonymous RSS, sampled: ru_maxrss also counts file pages mapped from the checkpoints
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            anon[0] = max(anon[0], rss_anon_mib())
            stop.wait(0.01)

    threading.Thread(target=sample, daemon=True).start()
    queue.put({"kind": "start", "rss_mib": zw.current_rss_mib(), "maxrss_mib": zw.rss_mib(),
               "anon_mib": rss_anon_mib()})
    try:
        traj = huggingface.load_trajectory(folder)
        cls = type(cz.get_measure("l2"))  # tensors_only: the stream helper's fact (absent before it lands)
        facts = {k: getattr(cls, k, "absent") for k in ("tensors_only", "needs_data", "needs_init")}
        t0 = time.perf_counter()
        if mode in ("compare", "compare-nocache"):
            with tempfile.TemporaryDirectory() as cache:
                result = cz.compare(traj, MEASURES, device=device, cache=cache if mode == "compare" else None,
                                    progress=False, strict=True)
            cells = int(result.dataset["l2"].notnull().sum())
        else:
            measures = [cz.get_measure(m) for m in MEASURES]
            for step in traj.steps:
                model = traj.model_at(step, device=device)
                for m in measures:
                    m(model)
                del model
            cells = len(traj.steps) * len(measures)
        stop.set()
        queue.put({"kind": "end", "seconds": time.perf_counter() - t0, "maxrss_mib": zw.rss_mib(),
                   "anon_peak_mib": anon[0],
                   "cells": cells, "facts": facts,
                   "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None})
    except BaseException as e:
        queue.put({"kind": "error", "error": f"{type(e).__name__}: {str(e)[:300]}", "maxrss_mib": zw.rss_mib()})


def run(src: Path, dst: Path, n: int, args, mode: str = "compare") -> str:
    """Build the N-checkpoint folder, run the comparison in a fresh process, report (Markdown)."""
    folder = make_series(src, dst, n)
    name, size = largest_tensor_bytes(folder / "checkpoint-1" / "model.safetensors")
    ctx = zw.start_context()
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(str(folder), args.device, args.threads, queue, mode))
    proc.start()
    msgs = []
    while True:
        try:
            msgs.append(queue.get(timeout=5.0))
            if msgs[-1]["kind"] in ("end", "error"):
                break
        except Exception:
            if not proc.is_alive():
                break
    proc.join(timeout=30)
    start = next((m for m in msgs if m["kind"] == "start"), {})
    end = msgs[-1] if msgs else {"kind": "error", "error": f"child died (exit {proc.exitcode})"}
    base, mib = start.get("rss_mib", float("nan")), size / 2**20
    head = (f"## Memory: weight-only comparison ({', '.join(MEASURES)}) over {n} checkpoints of {src.name} "
            + (f"({args.device}, content-keyed cache on)" if mode == "compare" else
               f"({args.device}, no cache)" if mode == "compare-nocache" else
               f"({args.device}; control: each checkpoint built as a model, the measure called on it)"))
    if end["kind"] == "error":
        return f"{head}\n\nfailed: {end['error']}"
    peak = end["maxrss_mib"]
    bound = base + 2 * mib
    verdict = ("within" if peak <= bound else
               f"over by {peak - bound:.0f} MiB ({(peak - base) / mib:.1f}x the largest tensor)")
    anon0, anon = start.get("anon_mib", float("nan")), end.get("anon_peak_mib", float("nan"))
    return (f"{head}\n\n- anonymous memory (RssAnon, sampled every 10 ms; file pages excluded): baseline "
            f"{anon0:.0f} MiB, peak {anon:.0f} MiB, growth {anon - anon0:.0f} MiB = {(anon - anon0) / mib:.1f}x the "
            f"largest tensor ({'within' if anon - anon0 <= 2 * mib else 'over'} 2x)"
            f"\n- interpreter baseline (RSS after imports: torch, transformers, timm, complexity_zoo, xarray, scipy): "
            f"{base:.0f} MiB\n- largest tensor: `{name}`, {mib:.0f} MiB\n- peak RSS: {peak:.0f} MiB "
            f"(peak - baseline {peak - base:.0f} MiB); bound baseline + 2 x largest = {bound:.0f} MiB: {verdict}\n"
            f"- {end['cells']} cells in {end['seconds']:.0f} s ({end['seconds'] / n:.2f} s per checkpoint); "
            f"l2's declared facts: {end['facts']}"
            + (f"\n- CUDA peak allocated {end['cuda_peak_mib']:.0f} MiB"
               if end.get("cuda_peak_mib") is not None else ""))
