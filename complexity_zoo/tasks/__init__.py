"""Reference tasks that make trajectories; ``task_data(spec)`` rebuilds a run's data.

A run folder's ``run.json`` records the ``task`` dict its data came from
(``{"name": "modular", "p": 113, "op": "+", "train_frac": 0.3, "seed": 0, ...}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..data import Data
from ..errors import DataError
from . import modular


def _modular(spec: Mapping) -> Data:
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    try:
        return modular.dataset(**kwargs)
    except TypeError as e:
        raise DataError(
            f"The modular task spec {dict(spec)!r} has settings dataset() does not take: {e}"
        ) from e


#: Task name -> function rebuilding its Data from the recorded spec.
TASKS: dict[str, Callable[[Mapping], Data]] = {"modular": _modular}


def task_data(spec: Mapping) -> Data:
    """Rebuild the Data of a task from the ``task`` dict a run folder records."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise DataError(f"A task spec is a dict with a 'name' among {sorted(TASKS)}; got {spec!r}.")
    if spec["name"] not in TASKS:
        raise DataError(f"Unknown task {spec['name']!r}; the known tasks are {sorted(TASKS)}.")
    return TASKS[spec["name"]](spec)


__all__ = ["TASKS", "modular", "task_data"]
