"""The Dask back end of compare(): a local cluster made for one call, or a client's cluster.

One Dask task per job (see :mod:`complexity_zoo._executors`, whose job functions it runs and
whose ``DASK_CONFIG`` it starts local clusters with); Dask is imported only when this back end
is used.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from .errors import ExecutorWarning


@contextlib.contextmanager
def local_client(n: int) -> Iterator[Any]:
    """A client of a local Dask cluster of ``n`` one-thread worker processes, closed after the block."""
    from ._executors import DASK_CONFIG, PRE_SPAWN

    distributed = import_distributed()
    import dask

    # The scheduler always serves HTTP (metrics); ":0" picks a free port, so two comparisons coexist.
    # Dask's nanny writes its workers' variables (OMP_NUM_THREADS=1 ...) into this process's
    # environment; they are put back as they were when the cluster closes (two executor="dask"
    # calls overlapping in threads of one process would restore each other's: not supported).
    with restored_environ(set(dask.config.get(PRE_SPAWN)) | {"PYTHONHASHSEED"}):
        with dask.config.set(DASK_CONFIG):
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               dashboard_address=":0")
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()


@contextlib.contextmanager
def restored_environ(keys) -> Iterator[None]:
    """On exit, ``keys`` of this process's environment are as they were on entry (set or absent)."""
    before = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def import_distributed():
    try:
        import distributed
    except ImportError as e:
        from .errors import MissingDependencyError

        raise MissingDependencyError(
            "The Dask back end needs dask.distributed: pip install 'complexity-zoo[dask]'."
        ) from e
    return distributed


def is_dask_client(obj) -> bool:
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(obj, distributed.Client)


def malloc_trim_threshold() -> str | None:
    """This process's MALLOC_TRIM_THRESHOLD_ (run on each Dask worker)."""
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _warn_if_malloc_trimmed(client, device) -> None:
    """Say when the workers run with Dask's default MALLOC_TRIM_THRESHOLD_ (see DASK_CONFIG):
    correct, but torch's CPU work is 30-55% slower there."""
    if device is not None and torch.device(device).type != "cpu":
        return
    try:
        seen = client.run(malloc_trim_threshold)
    except Exception:  # a worker that cannot answer is not this check's business
        return
    trimmed = sorted(w for w, v in seen.items() if v is not None)
    if trimmed:
        warnings.warn(
            f"{len(trimmed)} of {len(seen)} Dask workers run with MALLOC_TRIM_THRESHOLD_="
            f"{seen[trimmed[0]]} (Dask's nanny sets 65536 by default), which turns off glibc's adaptive mmap "
            "threshold and makes torch's CPU work about 30-55% slower. The results are the same. Unset it in the "
            "workers' Dask config (distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null) and in the "
            "environment of the process that starts them, where an earlier cluster's nanny may have left it "
            "(README: Running at scale).", ExecutorWarning, stacklevel=2)


def on_dask(client, jobs, data_for, device, strict, store, record, threads: int = 1) -> None:
    """One Dask task per job. The scheduler reruns a task whose worker died (up to its
    ``distributed.scheduler.allowed-failures``); after that the job is given up."""
    from ._executors import SharedDiskStore, _deliver, _give_up, _job_args, _unfinished, run_job

    distributed = import_distributed()
    if jobs:
        _warn_if_malloc_trimmed(client, device)
    remote_store = SharedDiskStore(store.root) if store is not None else None
    scattered: dict[int, Any] = {}
    for d in data_for.values():  # each Data is sent to the cluster once, not once per job
        if d is not None and id(d) not in scattered:
            scattered[id(d)] = client.scatter(d, hash=False)
    futures = {}
    for job in jobs:
        traj, step, _ = job
        d = data_for[traj.name]
        args = _job_args(job, scattered[id(d)] if d is not None else None, device, strict, remote_store, threads)
        key = f"complexity_zoo-{traj.name}-{step}-{uuid.uuid4().hex[:8]}"
        futures[client.submit(run_job, *args, key=key, pure=False)] = job
    try:
        for fut in distributed.as_completed(list(futures)):
            job = futures[fut]
            try:
                out = fut.result()
            except distributed.KilledWorker as e:
                left = _unfinished(job, store, record)  # what the dead workers finished is kept
                if left[2]:
                    _give_up(left, getattr(e, "allowed_failures", 0) + 1, strict, record, cause=e)
                continue
            _deliver(job, out, record, store)
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        if scattered:
            client.cancel(list(scattered.values()))

