"""The back ends that run compare()'s jobs: serial, concurrent.futures executors, Dask (in :mod:`._dask`).

A job is one checkpoint with its pending cells. It ships the trajectory cut down to that
checkpoint (a file path and the model factory; tensors only for a checkpoint that exists only in
memory), never the loaded series. Every back end hands finished jobs back in completion order;
the caller records each cell as it arrives and writes it to the cache (a worker that shares the
cache's disk has written it already, the moment it finished). A worker that dies loses only its
job, which is run again, at most :data:`RETRIES` more times; after that its cells fail with
:class:`WorkerLostError` (NaN and an ``errors`` row, or raised with ``strict=True``).

Threads follow :mod:`complexity_zoo._threads`: one torch thread for a small checkpoint, else
``cores // slots`` (at least 1) per task slot, so W workers never run W x cores threads;
``threads=`` or ``$COMPLEXITY_ZOO_THREADS`` override. The serial back end sets it per job, a
process pool per job in its worker, the thread back end once for the call (torch's count is per
process), each restoring torch's setting after; a Dask task runs with 1 torch thread per Dask
worker thread (as Dask's nanny sets ``OMP_NUM_THREADS=1``) unless overridden. Dask is imported
only when a Dask back end is used.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import io
import multiprocessing
import os
import pickle
import pickletools
import sys
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from ._dask import import_distributed, is_dask_client, local_client, on_dask, restored_environ  # noqa: F401
from ._threads import ENV, check_threads, choose_threads, host_cores, trajectory_work, using_threads
from .errors import ExecutorError, MeasureError, WorkerLostError

EXECUTORS = ("serial", "threads", "processes", "dask")
RETRIES = 2  # a job whose worker died is run again at most this many times

# The Dask settings of the local cluster that executor="dask" starts. A worker that dies takes its
# job with it; the scheduler reruns it RETRIES times. Dask's nanny starts workers with
# MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's adaptive mmap threshold: every torch
# buffer over 128 KiB is then a fresh mmap, faulted in and unmapped again, and a CPU LLC cell runs
# 30-55% slower (benchmarks/malloc_trim.py). None unsets it; a value in the caller's environment wins.
# worker-saturation 1.0: a worker holds only the jobs it is running (Dask's default 1.1 queues a
# second one on a 1-thread worker, and a worker's death then counts against that innocent job too,
# which can use up its allowed failures).
PRE_SPAWN = "distributed.nanny.pre-spawn-environ"
DASK_CONFIG = {"distributed.scheduler.allowed-failures": RETRIES, "distributed.scheduler.worker-saturation": 1.0,
               f"{PRE_SPAWN}.MALLOC_TRIM_THRESHOLD_": None}


def job_threads(job, threads: int | None, slots: int) -> int:
    """Torch threads for ``job`` (trajectory, step, cells) when ``slots`` jobs run at once."""
    return choose_threads(trajectory_work(job[0]), threads=threads, slots=slots)


def override(threads: int | None) -> int | None:
    """The threads the caller asked for (``threads=`` or the environment), else None."""
    return choose_threads(None, threads=threads) if threads is not None or os.environ.get(ENV, "").strip() else None


def job_trajectory(traj, step: int, cells) -> Any:
    """``traj`` as one job ships it: the checkpoint of ``step`` (and the first one when a measure
    needs the initial weights and none were given), no metrics table."""
    needs_init = any(c.measure.needs_init for c in cells)
    view = traj.subset({step, traj.steps[0]} if needs_init and traj.init is None else [step], metrics=False)
    if not needs_init:
        view.init = None
    return view


def run_job(traj, step: int, cells, data, device, strict: bool, store, threads: int | None) -> list[tuple]:
    """The worker's side of a job: run its cells (each written to ``store`` as it finishes) and
    return ``(result, seconds)`` per cell, failures as picklable exceptions."""
    from .compare import run_checkpoint

    out = []
    with using_threads(torch.get_num_threads() if threads is None else threads):
        done = run_checkpoint(traj, step, cells, data, device, strict, store)
    for _, result, seconds in done:
        if isinstance(result, BaseException):
            try:
                pickle.loads(pickle.dumps(result))
            except Exception:  # an exception that cannot travel back: its type and message can
                result = MeasureError(f"{type(result).__name__}: {result}")
        out.append((result, seconds))
    return out


class SharedDiskStore:
    """The cache as a remote worker sees it: written to when the cache folder exists there (a
    shared disk), skipped otherwise (the client writes every cell it receives)."""

    def __init__(self, root) -> None:
        self.root = str(root)

    def put(self, measure_name: str, key: str, record: dict) -> None:
        from ._cache import ResultCache

        if os.path.isdir(self.root):
            with contextlib.suppress(OSError):
                ResultCache(self.root).put(measure_name, key, record)


def execute(executor, jobs, data_for, device, strict: bool, store, record: Callable, *,
            workers: int | None = None, note: Callable | None = None, threads: int | None = None) -> None:
    """Run ``jobs`` [(trajectory, step, cells)] on ``executor`` (None or a name in
    :data:`EXECUTORS`, a ``concurrent.futures.Executor`` or a ``distributed.Client``);
    ``record(cell, result, seconds)`` hears of every cell, job by job as jobs complete;
    ``threads``: torch threads per job (default: the policy of :mod:`._threads`)."""
    threads, jobs = check_threads(threads), list(jobs)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ExecutorError(f"workers must be a positive integer; got {workers!r}.")
    if workers is not None and not isinstance(executor, str):
        raise ExecutorError("workers= sizes a back end named by a string ('threads', 'processes', 'dask'); "
                            f"size the {type(executor).__name__} you pass yourself.")
    if executor is None or executor == "serial":
        for traj, step, cells in jobs:
            if note is not None:
                note(traj, step)
            from .compare import run_checkpoint

            with using_threads(job_threads((traj, step, cells), threads, 1)):
                run_checkpoint(traj, step, cells, data_for[traj.name], device, strict, store, record)
        return
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            raise ExecutorError(f"executor must be one of {list(EXECUTORS)}, a concurrent.futures.Executor "
                                f"or a distributed.Client; got {executor!r}.")
        with _owned(executor, workers) as backend:
            execute(backend, jobs, data_for, device, strict, store, record, threads=threads)
        return
    if isinstance(executor, cf.ThreadPoolExecutor):
        slots = getattr(executor, "_max_workers", 1)
        with using_threads(max((job_threads(j, threads, slots) for j in jobs), default=1)):
            _on_pool(executor, jobs, data_for, device, strict, store, record)
    elif isinstance(executor, cf.ProcessPoolExecutor):
        _check_sendable(jobs, data_for)
        _on_process_pool(executor, jobs, data_for, device, strict, store, record, threads)
    elif isinstance(executor, cf.Executor):  # e.g. mpi4py's MPIPoolExecutor: maybe on other machines
        _on_pool(executor, jobs, data_for, device, strict, store, record, False, override(threads))
    elif is_dask_client(executor):
        on_dask(executor, jobs, data_for, device, strict, store, record, override(threads) or 1)
    else:
        raise ExecutorError(f"executor must be one of {list(EXECUTORS)}, a concurrent.futures.Executor or a "
                            f"distributed.Client; got {type(executor).__name__}.")


@contextlib.contextmanager
def _owned(name: str, workers: int | None) -> Iterator[Any]:
    """A back end made for one call and closed after it."""
    n = workers or host_cores()
    if name == "threads":
        with cf.ThreadPoolExecutor(n) as pool:
            yield pool
    elif name == "processes":
        pool = process_pool(n)
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        with local_client(n) as client:
            yield client


def process_pool(n: int, initializer=None, initargs=()) -> cf.ProcessPoolExecutor:
    """Worker processes started with ``spawn`` (``fork`` after torch has started threads can hang)."""
    return cf.ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=initializer, initargs=initargs)


def _job_args(job, data, device, strict, store, threads) -> tuple:
    traj, step, cells = job
    return (job_trajectory(traj, step, cells), step, cells, data, device, strict, store, threads)


def _deliver(job, out, record, store=None) -> None:
    for cell, (result, seconds) in zip(job[2], out):
        if store is not None and isinstance(result, dict):
            store.put(cell.measure.name, cell.key, result)  # a worker without the cache's disk
        record(cell, result, seconds)


def _on_pool(pool, jobs, data_for, device, strict, store, record, shared_disk: bool = True,
             threads: int | None = None) -> None:
    """Threads, or any other executor (which may run jobs on other machines: then the workers
    write to the cache only where its folder exists, and this process writes every cell)."""
    remote = store if shared_disk or store is None else SharedDiskStore(store.root)
    futures = {pool.submit(run_job, *_job_args(job, data_for[job[0].name], device, strict, remote, threads)): job
               for job in jobs}
    try:
        for fut in cf.as_completed(futures):
            _deliver(futures[fut], fut.result(), record, None if shared_disk else store)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise


def _on_process_pool(pool, jobs, data_for, device, strict, store, record, threads=None) -> None:
    """Jobs on worker processes. A worker that dies breaks the whole pool: the jobs that were
    running are rerun one at a time on a fresh pool, so the one that kills its worker is found
    and retried alone (at most RETRIES times) while the others finish."""
    n = getattr(pool, "_max_workers", None) or host_cores()
    pending = dict(enumerate(jobs))
    strikes = dict.fromkeys(pending, 0)
    suspects: list[int] = []
    own = None
    try:
        while pending:
            batch = [suspects.pop(0)] if suspects else list(pending)
            futures = {pool.submit(run_job, *_job_args(pending[i], data_for[pending[i][0].name], device, strict,
                                                       store, job_threads(pending[i], threads, n))): i
                       for i in batch}
            broken = False
            try:
                for fut in cf.as_completed(futures):
                    try:
                        out = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    _deliver(pending.pop(futures[fut]), out, record)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
            if not broken:
                continue
            lost = [i for i in batch if i in pending]
            for i in lost:  # cells the lost workers finished were written to the cache: keep them
                pending[i] = _unfinished(pending[i], store, record)
                if not pending[i][2]:
                    pending.pop(i)
            suspects = [j for j in suspects if j in pending]
            if len(batch) == 1:  # it ran alone: this job killed its worker
                i = batch[0]
                strikes[i] += 1
                if i in pending and strikes[i] > RETRIES:
                    _give_up(pending.pop(i), strikes[i], strict, record)
                elif i in pending:
                    suspects.insert(0, i)
            else:  # those running when it broke (the pool runs jobs in order): rerun each alone
                suspects.extend([i for i in lost if i in pending][: n + 1])
            if own is not None:
                own.shutdown(wait=False)
            pool = own = _replacement(pool, n)
    finally:
        if own is not None:
            own.shutdown(wait=False, cancel_futures=True)


def _replacement(pool: cf.ProcessPoolExecutor, n: int) -> cf.ProcessPoolExecutor:
    """A fresh pool like the broken one."""
    ctx = getattr(pool, "_mp_context", None) or multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=getattr(pool, "_initializer", None),
                                  initargs=getattr(pool, "_initargs", ()))


def _unfinished(job, store, record):
    """``job`` without the cells already in the cache (those are recorded now)."""
    if store is None or not hasattr(store, "get"):
        return job
    traj, step, cells = job
    left = []
    for cell in cells:
        hit = store.get(cell.measure.name, cell.key)
        if hit is None:
            left.append(cell)
        else:
            record(cell, hit, hit.get("seconds", 0.0))
    return traj, step, left


def _give_up(job, attempts: int, strict: bool, record, cause: BaseException | None = None) -> None:
    traj, step, cells = job
    error = WorkerLostError(
        f"The worker running step {step} of run {traj.name!r} (measures {[c.label for c in cells]}) died "
        f"{attempts} time(s), and the job was given up. A worker dies when its process is killed (out of "
        f"memory: compare the checkpoint's size with the workers' memory) or crashes in native code; run this "
        f"step alone with executor='serial' to see the error."
    )
    if strict:
        raise error from cause
    for cell in cells:
        record(cell, error, 0.0)


def _check_sendable(jobs, data_for) -> None:
    """Refuse, before anything runs, a job that worker processes could not receive."""
    seen = set()
    for job in jobs:
        traj = job[0]
        if traj.name in seen:
            continue
        seen.add(traj.name)
        args = _job_args(job, data_for[traj.name], None, False, None, None)
        try:
            blob = pickle.dumps(args, protocol=2)
        except Exception as e:
            raise ExecutorError(
                f"The jobs of run {traj.name!r} cannot be sent to worker processes: {type(e).__name__}: {e}. A "
                f"process pool pickles the model factory, the measures and the data's loss by reference, so each "
                f"must be a module-level function or class that the workers can import (not a lambda, a local "
                f"function or a closure). Use executor='threads', or executor='dask' (which sends local "
                f"functions by value with cloudpickle), or make the factory importable."
            ) from e
        main = sys.modules.get("__main__")
        if getattr(main, "__file__", None) is None and _names_main(blob):
            raise ExecutorError(
                f"The jobs of run {traj.name!r} use functions or classes defined in an interactive session "
                f"(__main__), which worker processes cannot import. Move them to a module, or use "
                f"executor='threads' or executor='dask'."
            )


def _names_main(blob: bytes) -> bool:
    for op, arg, _ in pickletools.genops(io.BytesIO(blob)):
        if op.name == "GLOBAL" and str(arg).split(" ", 1)[0] == "__main__":
            return True
    return False
