"""compare(): every measure on every checkpoint, cached, resumable, with progress."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import numbers
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from ._assemble import build_dataset, check_names
from ._cache import ResultCache, to_jsonable
from ._context import checkpoint_context
from ._executors import execute
from ._steps import integer_step
from .comparison import Comparison
from .data import Data
from .errors import (
    ComparisonInterrupted,
    ComplexityZooError,
    InvalidSettingError,
    MeasureFailedWarning,
    MissingDataError,
    TrajectoryError,
    UnknownMeasureError,
)
from .measure import Measure
from .registry import get_measure
from .trajectory import Trajectory

MeasureSpec = str | tuple[str, Mapping[str, Any]] | Measure


def resolve_measures(measures: Sequence[MeasureSpec], seed: int | None = None) -> dict[str, Measure]:
    """Instances keyed by a unique label (the name; settings appended when a name repeats).

    ``seed``, if given, fills the seed of every stochastic measure whose seed was left unset
    (compare() leaves them unset and derives one per cell instead).
    """
    if isinstance(measures, (str, Measure)):
        measures = [measures]
    instances: list[Measure] = []
    for spec in measures:
        if isinstance(spec, Measure):
            m = spec
        elif isinstance(spec, str):
            m = get_measure(spec)
        elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping):
            m = get_measure(spec[0], **spec[1])
        else:
            raise UnknownMeasureError(
                f"A measure is given as a name, a (name, settings) pair or a Measure; got {spec!r}."
            )
        if seed is not None and m.stochastic and getattr(m, "seed", None) is None:
            m = dataclasses.replace(m, seed=seed)
        instances.append(m)
    if not instances:
        raise UnknownMeasureError("compare() needs at least one measure.")
    names = [m.name for m in instances]
    labels: dict[str, Measure] = {}
    for m in instances:
        label = m.name
        if names.count(m.name) > 1:
            default = type(m)()
            diff = {k: v for k, v in m.settings().items() if getattr(default, k) != v}
            label = m.name + "[" + ",".join(f"{k}={v}" for k, v in sorted(diff.items())) + "]"
        if label in labels:
            raise UnknownMeasureError(f"The measure {label!r} is given twice with the same settings.")
        labels[label] = m
    return labels


def _as_trajectories(obj: Trajectory | Iterable[Trajectory]) -> list[Trajectory]:
    runs = [obj] if isinstance(obj, Trajectory) else list(obj)
    if not runs or not all(isinstance(t, Trajectory) for t in runs):
        raise TrajectoryError("compare() takes a Trajectory or a list of Trajectory objects.")
    names = [t.name for t in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TrajectoryError(f"Runs must have distinct names; repeated: {dupes}. Set trajectory.name.")
    return runs


def derive_seed(seed: int, run: str, step: int, measure: Measure) -> int:
    """The seed of one cell: a hash of the compare seed, the run, the step and the measure.

    Cells are independent (no two share a random stream) yet the whole comparison is
    reproducible from the one ``seed``. The measure enters by name and settings (its seed left
    out), so adding another measure to a comparison changes no other cell's seed.
    """
    unseeded = dataclasses.replace(measure, seed=None).key()
    blob = json.dumps([int(seed), run, int(step), unseeded]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")  # < 2**32: every RNG takes it


@dataclasses.dataclass
class Cell:
    """One (run, step, measure) to compute: the measure as it runs there, and its cache key."""

    run: str
    step: int
    label: str
    measure: Measure
    key: str


def run_cell(model: torch.nn.Module, cell: Cell, data: Data | None, device: str | None,
             store: ResultCache | None, strict: bool,
             init: dict | BaseException | None = None) -> tuple[dict | BaseException, float]:
    """Compute one cell and, when it succeeds, write it to the cache at once (atomically).

    ``init``: the run's initial weights, for a measure with ``needs_init`` (or the error that
    loading them raised)."""
    m = cell.measure
    start = time.perf_counter()
    try:
        if m.needs_init and isinstance(init, BaseException):
            raise init
        extra = {"init": init} if m.needs_init else {}
        if isinstance(model, torch.nn.Module):
            result = m(model, data if m.needs_data else None, **extra)
        else:  # a tensors_only cell, streamed from the checkpoint's files (see _streamer)
            result = model(m)
    except Exception as e:
        if strict:
            raise
        return e, time.perf_counter() - start
    seconds = time.perf_counter() - start
    record = to_jsonable({
        "value": result.value, "stderr": result.stderr, "diagnostics": result.diagnostics,
        "extras": result.extras, "seconds": seconds, "run": cell.run, "step": cell.step,
        "measure": m.name, "settings": m.settings(), "device": device or "cpu",
    })
    if store is not None:
        store.put(m.name, cell.key, record)
    return record, seconds


def run_checkpoint(trajectory: Trajectory, step: int, cells: list[Cell], data: Data | None,
                   device: str | None, strict: bool, store: ResultCache | None = None,
                   on_cell: Callable | None = None) -> list[tuple[Cell, dict | BaseException, float]]:
    """Load one checkpoint once and run its cells, each written when it finishes.

    Failures are returned, not raised (unless ``strict``); ``on_cell`` hears of each cell.
    When every cell is ``tensors_only``, the model is not built: each cell streams the
    checkpoint's parameter tensors one at a time (memory: about the largest tensor). The cells
    share one :mod:`~complexity_zoo._context` (each weight matrix's spectrum taken once).
    """
    try:
        with checkpoint_context():
            return _run_checkpoint(trajectory, step, cells, data, device, strict, store, on_cell)
    except ComplexityZooError as e:  # strict: say where
        raise _located(e, trajectory, step) from e


def _located(error: ComplexityZooError, trajectory: Trajectory, step: int) -> ComplexityZooError:
    """``error`` with the step, run and file at fault added to its message (as strict mode raises it)."""
    source = trajectory.checkpoint(step).source
    where = f"at step {step} of run {trajectory.name!r}" + (f", {source!r}" if source else "")
    try:
        return type(error)(f"{error} ({where})")
    except Exception:  # an error class that takes other arguments: unchanged
        return error


def _run_checkpoint(trajectory, step, cells, data, device, strict, store, on_cell):
    if all(cell.measure.tensors_only for cell in cells) and not _folds_batchnorm(trajectory, step, cells):
        streamer = _streamer(trajectory, step, device)
        return _each(cells, lambda cell: run_cell(streamer, cell, data, device, store, strict), on_cell)
    try:
        model = trajectory.model_at(step, device=device)
    except Exception as e:
        if strict:
            raise
        return _each(cells, lambda cell, error=e: (error, 0.0), on_cell)
    init: dict | BaseException | None = None
    if any(cell.measure.needs_init for cell in cells):  # the run's initial weights, loaded once
        try:
            init = trajectory.init_state_dict()
        except Exception as e:
            if strict:
                raise
            init = e
    return _each(cells, lambda cell: run_cell(model, cell, data, device, store, strict, init), on_cell)


def _each(cells: list[Cell], run: Callable[[Cell], tuple], on_cell: Callable | None) -> list[tuple]:
    """``(cell, *run(cell))`` for each cell in turn, ``on_cell`` told of each as it finishes."""
    out = []
    for cell in cells:
        out.append((cell, *run(cell)))
        if on_cell is not None:
            on_cell(*out[-1])
    return out


def _folds_batchnorm(trajectory: Trajectory, step: int, cells: list[Cell]) -> bool:
    """Whether a cell folds BatchNorm in a checkpoint that has BatchNorm: the stream of parameter
    tensors cannot fold (it has no modules), so such a checkpoint takes the model path."""
    from .measures._batchnorm import streams_unfolded

    if not any(getattr(cell.measure, "fold_batchnorm", False) for cell in cells):
        return False
    with trajectory.checkpoint(step).open_tensors() as reader:
        names = reader.keys()
    return any(streams_unfolded(cell.measure, names) for cell in cells)


def _streamer(trajectory: Trajectory, step: int, device: str | None) -> Callable[[Measure], Any]:
    """Runs a tensors_only measure on the parameters of ``step`` read from its files one at a
    time (which tensors: ``complexity_zoo._params``); ``needs_init`` reads the initial weights
    the same way, by name, alongside (the run's first checkpoint, or ``Trajectory(init=...)``)."""
    from ._params import LazyParameters, parameters

    def run(measure: Measure):
        plan = trajectory.parameter_plan()
        with contextlib.ExitStack() as stack:
            reader = stack.enter_context(trajectory.checkpoint(step).open_tensors())
            init = None
            if measure.needs_init and trajectory.init is not None:
                init = trajectory.init_state_dict()
            elif measure.needs_init:
                first = stack.enter_context(trajectory.checkpoint(trajectory.steps[0]).open_tensors())
                init = LazyParameters(first, plan)
            return measure.on_tensors(parameters(reader, plan), init=init, device=device)

    return run


def compare(
    trajectory_or_list: Trajectory | Iterable[Trajectory],
    measures: Sequence[MeasureSpec],
    *,
    data: Data | Mapping[str, Data] | None = None,
    steps: Iterable[int] | None = None,
    device: str | torch.device | None = None,
    executor: cf.Executor | Any | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    seed: int = 0,
    strict: bool = False,
    workers: int | None = None,
    threads: int | None = None,
) -> Comparison:
    """Run ``measures`` on every checkpoint of one or more trajectories.

    ``data`` is one Data for all runs or a mapping run name -> Data. ``executor`` runs the jobs,
    one per checkpoint with its pending measures: None or ``"serial"``, ``"threads"``,
    ``"processes"`` or ``"dask"`` (a local pool or Dask cluster of ``workers``, default one per
    core, made for this call), any ``concurrent.futures.Executor``, or a ``distributed.Client``
    (see :mod:`complexity_zoo._executors`); every back end gives the serial numbers.
    ``cache`` is a folder: each finished cell is written there the moment it
    finishes (atomically), keyed by the content of the checkpoint, the model factory, the
    measure's settings and the data and loss; an interrupted comparison (Ctrl-C, SIGTERM, a
    crash) loses no finished cell and a re-run computes only what is missing.
    ``seed``: a stochastic measure whose seed is unset gets, in each cell, a seed derived from
    ``seed``, the run, the step and the measure (:func:`derive_seed`); one given explicitly is
    used as is in every cell. With ``strict=False`` a failing cell is NaN, warned about and
    listed in ``.errors``. ``threads``: torch threads per job (default: one for a checkpoint under
    2M parameters, else torch's setting, at most cores // parallel jobs; ``$COMPLEXITY_ZOO_THREADS``
    also sets it; see :mod:`complexity_zoo._threads`); torch's own setting is restored after.
    """
    from tqdm.auto import tqdm

    runs = _as_trajectories(trajectory_or_list)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InvalidSettingError(f"compare's seed must be an integer; got {seed!r}.")
    labeled = resolve_measures(measures, seed=None)
    device = str(device) if device is not None else None
    data_for = _data_per_run(runs, data, labeled)
    wanted = None if steps is None else sorted({integer_step(s, "compare(steps=...)") for s in _steps(steps)})
    if wanted is not None:
        unknown = [s for s in wanted if not any(s in t.steps for t in runs)]
        if unknown:
            raise TrajectoryError(f"No run has steps {unknown}.")
    check_names(runs, labeled)
    store = ResultCache(cache) if cache is not None else None

    cells: dict[tuple[str, int, str], dict] = {}
    errors: list[dict] = []
    jobs = _plan(runs, wanted, labeled, data_for, store, seed, cells)
    total = sum(len(j[2]) for j in jobs)
    bar = tqdm(total=total, desc="compare", unit="cell", disable=not progress)
    finished = [0]

    def record(cell: Cell, result: dict | BaseException, seconds: float) -> None:
        if isinstance(result, BaseException):
            cells[(cell.run, cell.step, cell.label)] = {"value": None, "seconds": seconds}
            errors.append({"run": cell.run, "step": cell.step, "measure": cell.label,
                           "error": type(result).__name__, "message": str(result)})
            warnings.warn(
                f"Measure {cell.label!r} failed at step {cell.step} of run {cell.run!r} and is NaN there: "
                f"{type(result).__name__}: {result}",
                MeasureFailedWarning,
                stacklevel=4,
            )
        else:
            cells[(cell.run, cell.step, cell.label)] = result
        finished[0] += 1
        bar.update(1)

    with _interrupts_reported(store, lambda: finished[0], total):
        try:
            execute(executor, jobs, data_for, device, strict, store, record, workers=workers, threads=threads,
                    note=lambda traj, step: bar.set_postfix_str(f"{traj.name} step {step}", refresh=False))
        finally:
            bar.close()
    run_pos, labels = {t.name: i for i, t in enumerate(runs)}, list(labeled)
    errors.sort(key=lambda e: (run_pos[e["run"]], e["step"], labels.index(e["measure"])))  # same for every back end
    dataset = build_dataset(runs, wanted, labeled, cells, device, seed)
    dataset.attrs["n_train"] = json.dumps({name: d.n("train") for name, d in data_for.items() if d is not None})
    dataset.attrs["n_test"] = json.dumps({name: d.n("test") for name, d in data_for.items()
                                          if d is not None and d.test is not None})
    classes = {d.num_classes() for d in data_for.values() if d is not None} - {None}
    if len(classes) == 1:
        dataset.attrs["num_classes"] = classes.pop()
    return Comparison(dataset, errors)


def _steps(steps: Iterable[int]) -> list:
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
        raise TrajectoryError(f"steps must be a list of integers; got {steps!r}.")
    steps = list(steps)
    bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, numbers.Integral)]
    if bad:
        raise TrajectoryError(f"steps must be integers; got {bad} (a step is never rounded).")
    return steps


def _plan(runs, wanted, labeled, data_for, store, seed, cells) -> list[tuple[Trajectory, int, list[Cell]]]:
    """The cells to compute, one job per checkpoint; cells found in the cache go to ``cells``."""
    jobs = []
    for traj in runs:
        d = data_for[traj.name]
        model_id = traj.model_id() if store else ""
        data_id = d.fingerprint() if (store and d is not None and any(m.needs_data for m in labeled.values())) else None
        init_id = traj.init_fingerprint() if store and any(m.needs_init for m in labeled.values()) else ""
        for step in [s for s in traj.steps if wanted is None or s in wanted]:
            ckpt_id = traj.checkpoint(step).fingerprint() if store else ""
            pending = []
            for label, m in labeled.items():
                if m.stochastic and getattr(m, "seed", None) is None:
                    m = dataclasses.replace(m, seed=derive_seed(seed, traj.name, step, m))
                ckpt = ckpt_id + (f"|init={init_id}" if m.needs_init else "")
                key = ResultCache.key(ckpt, model_id, m.key(), data_id if m.needs_data else None)
                hit = store.get(m.name, key) if store else None
                if hit is not None:
                    cells[(traj.name, step, label)] = hit
                else:
                    pending.append(Cell(traj.name, step, label, m, key))
            if pending:
                jobs.append((traj, step, pending))
    return jobs


@contextlib.contextmanager
def _interrupts_reported(store: ResultCache | None, done: Callable[[], int], total: int):
    """Turn Ctrl-C and SIGTERM into :class:`ComparisonInterrupted`, saying how to resume."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum, frame):
            raise KeyboardInterrupt("SIGTERM")

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt as e:
        kept = (f"The finished cells are in the cache {str(store.root)!r}; run the same comparison with "
                f"cache={str(store.root)!r} (CLI: --cache) to compute only the rest."
                if store is not None else
                "Without a cache nothing was kept; pass cache=FOLDER (CLI: --cache) to make a comparison resumable.")
        raise ComparisonInterrupted(f"compare() was interrupted after {done()} of {total} cells. {kept}") from e
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _data_per_run(runs: list[Trajectory], data, labeled: dict[str, Measure]) -> dict[str, Data | None]:
    if isinstance(data, Mapping):
        per = {t.name: data.get(t.name) for t in runs}
    else:
        per = {t.name: data for t in runs}
    needing = [label for label, m in labeled.items() if m.needs_data]
    lacking = [name for name, d in per.items() if d is None]
    if needing and lacking:
        raise MissingDataError(
            f"The measures {needing} need data, and none was given for run(s) {lacking}: pass "
            f"compare(..., data=Data) or a mapping from run name to Data."
        )
    return per
