"""The thread policy: how many intra-op torch threads a job (or a training run) uses.

torch's default is one thread per core. On a machine whose cores are busy (a shared node, a
laptop, other jobs) its threads wait for each other at every operation, and small work runs
many times slower than on one thread: 80 training steps of the demo's 0.19M-parameter MLP took
5.5 s on one thread and 25.7 s on two, on 2 cores that other jobs kept loaded
(benchmarks/contention.py). On idle cores a second thread can still pay for some small work
(the README's executor figures: an LLC cell of that MLP 1.35x faster on 2 threads than on 1):
pass ``threads=`` there.

So: ``threads=`` when given; else the environment variable ``COMPLEXITY_ZOO_THREADS`` (a
positive integer); else one thread for small work (fewer than :data:`SMALL_WORK` parameters),
and for larger work torch's own setting (which follows ``OMP_NUM_THREADS``), at most
``cores // slots`` (at least 1), ``slots`` being the jobs that run at once on this host.
:func:`using_threads` sets torch's count for a block and restores it after.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import torch

from .errors import InvalidSettingError

ENV = "COMPLEXITY_ZOO_THREADS"
#: Parameters below which one thread is used: on a busy machine a second thread costs a model
#: this small far more than it gains (benchmarks/contention.py --sweep: 5x slower at 0.19M);
#: on idle cores some cells gain a little from two (see the module docstring).
SMALL_WORK = 2_000_000


def host_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _positive(value, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or (not isinstance(value, str) and n != value):
        raise InvalidSettingError(f"{what} must be a positive integer (torch intra-op threads); got {value!r}.")
    return n


def check_threads(threads: int | None) -> int | None:
    """``threads`` as given (None or a positive integer), else a clear error."""
    return None if threads is None else _positive(threads, "threads")


def choose_threads(work: int | None, *, threads: int | None = None, slots: int = 1) -> int:
    """Torch threads for ``work`` parameters (None: unknown, taken as large) when ``slots``
    jobs run at once on this host; ``threads`` or ``$COMPLEXITY_ZOO_THREADS`` override."""
    if threads is not None:
        return check_threads(threads)
    env = os.environ.get(ENV, "").strip()
    if env:
        return _positive(env, f"the environment variable {ENV}")
    if work is not None and work < SMALL_WORK:
        return 1
    return max(1, min(torch.get_num_threads(), host_cores() // max(1, slots)))


@contextlib.contextmanager
def using_threads(n: int) -> Iterator[int]:
    """torch.set_num_threads(n) for the block; torch's previous setting is restored after.

    NumPy's and SciPy's BLAS and other OpenMP pools in the process (e.g. scikit-learn's, which
    the Bayesian search of ``kolmogorov`` uses) are limited to ``n`` too, through threadpoolctl
    when it is installed: their idle threads otherwise spin on busy cores as torch's would.
    """
    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        with _other_pools(n):
            yield n
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _other_pools(n: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n)


def model_work(model: torch.nn.Module) -> int:
    """The size of a model's work: its number of parameters."""
    return sum(p.numel() for p in model.parameters())


def trajectory_work(trajectory) -> int | None:
    """The size of a trajectory's checkpoints: its model's parameters (None when unknown)."""
    plan = trajectory.parameter_plan()
    return None if plan is None else sum(math.prod(shape) for shape in plan.shapes.values())
