"""The ``complexity-zoo`` command: list measures, compare runs, train and demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Sequence

from .errors import (
    ComparisonInterrupted,
    ComplexityZooError,
    InvalidSettingError,
    MissingDataError,
    UnknownMeasureError,
)


def _parse_settings(items: Sequence[str]) -> dict[str, dict]:
    """``["llc.lr=1e-4", "naive_compression.compressor=lzma"]`` -> {measure: {setting: value}}."""
    out: dict[str, dict] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        name, dot, setting = key.partition(".")
        if not (eq and dot and name and setting):
            raise InvalidSettingError(f"--set takes MEASURE.SETTING=VALUE; got {item!r}.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        given = out.setdefault(name, {})
        if setting in given and given[setting] != value:
            raise InvalidSettingError(
                f"--set gives {name}.{setting} twice ({given[setting]!r} and {value!r}); give each setting once."
            )
        given[setting] = value
    return out


def _check_writable(path: str, flag: str = "--out") -> None:
    """Refuse an output path that cannot be written, before any work: a folder, or a place
    where a file cannot be created (the result would be lost after the whole comparison)."""
    import os
    from pathlib import Path

    out = Path(path)
    if out.is_dir():
        raise InvalidSettingError(f"{flag} {path!r} is a folder; name a file in it (e.g. {str(out / 'result.nc')!r}).")
    probe = out.parent / f".{out.name}.{os.getpid()}.probe"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InvalidSettingError(f"{flag} {path!r} cannot be written ({type(e).__name__}: {e}); choose a "
                                  f"writable place (checked before the comparison runs).") from None


def _cmd_measures(args: argparse.Namespace) -> int:
    from .registry import conventions_table, list_measures

    if args.conventions:
        import pandas as pd

        table = conventions_table(args.pattern)
        if args.short:
            table = table[["name", "switch", "agreement"]]
        with pd.option_context("display.max_colwidth", None, "display.width", 10_000):
            print(table.to_string(index=False))
        return 0
    table = list_measures(args.pattern)
    print(table.drop(columns=["summary"]).to_string(index=False) if args.short else table.to_string(index=False))
    return 0


def _data_for(trajectory, needed: list[str]):
    if not needed:
        return None
    if not trajectory.task:
        raise MissingDataError(
            f"The measures {needed} need data, and the run {trajectory.name!r} records no task to "
            f"rebuild it from. Pass --data FILE (see --help), or use the Python API: "
            f"compare(..., data=Data.from_tensors(...))."
        )
    from .tasks import task_data

    return task_data(trajectory.task)


def _parse_steps(text: str | None) -> list[int] | str | None:
    """``--steps``: comma-separated steps, or ``log:N`` (N log-spaced steps of each run, see ``_pick_steps``)."""
    if not text:
        return None
    if text.strip().startswith("log:"):
        n = text.strip()[4:]
        if not n.isdigit() or int(n) < 1:
            raise InvalidSettingError(f"--steps log:N takes a positive integer N; got {text!r}.")
        return text.strip()
    steps = []
    for item in text.split(","):
        if not re.fullmatch(r"\s*\d+\s*", item):
            raise InvalidSettingError(f"--steps takes comma-separated non-negative integers; got {item!r} in {text!r}.")
        steps.append(int(item))
    return steps


def _pick_steps(steps: list[int] | str | None, runs: list) -> list[int] | None:
    """``log:N``: the union over runs of N log-spaced steps of each (nothing else is loaded or fetched)."""
    if not isinstance(steps, str):
        return steps
    from ._steps import log_spaced

    n = int(steps[4:])
    return sorted({s for t in runs for s in log_spaced(t.steps, n)})


HUB = "hf://"


def _load_run(path: str, args: argparse.Namespace, model):
    """A run folder, or ``hf://ORG/NAME``: the Hub revisions ``--revisions`` picks, through the HF cache."""
    if not path.startswith(HUB):
        if args.revisions is not None:
            raise InvalidSettingError(f"--revisions picks revisions of hf://ORG/NAME runs; {path!r} is a folder.")
        from .adapters.folders import load_folder

        return load_folder(path, args.format, model=model, trust=args.trust)
    repo = path[len(HUB):]
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise InvalidSettingError(f"A Hub run is hf://ORG/NAME; got {path!r}.")
    if args.revisions is None:
        raise InvalidSettingError(
            f"{path} needs --revisions: a glob pattern such as 'step*' (quoted, so the shell leaves it alone) "
            f"or comma-separated revision names."
        )
    from .adapters import huggingface

    pattern = args.revisions
    revisions = pattern if any(c in pattern for c in "*?[") else [r.strip() for r in pattern.split(",") if r.strip()]
    return huggingface.load_trajectory(repo, revisions=revisions, model=model, keep=not args.delete_fetched)


def _model_factory(target: str | None, runs: Sequence[str], trust: bool = False):
    """``--model pkg.module:factory``: the user's factory, called with each run's recorded kwargs
    (without ``--trust``, none that could make it read a file or the network)."""
    if target is None:
        return None
    import functools
    import inspect
    from pathlib import Path

    from ._io import read_json
    from ._trust import check_file_kwargs, confine, import_target

    obj = import_target(target)  # named by the user on the command line: allowed
    factories = {}
    for run in runs:
        meta_path = Path(run) / "run.json"
        if meta_path.is_symlink() or meta_path.exists():
            confine(run, meta_path, "The run's run.json")
        try:
            meta = read_json(meta_path)
            kwargs = dict(meta["model"].get("kwargs") or {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            kwargs = {}
        if not trust:
            kwargs = check_file_kwargs(kwargs, f"{str(meta_path)!r} (for --model {target})")
        try:
            inspect.signature(obj).bind(**kwargs)
        except TypeError:
            kwargs = {}  # the run's recorded kwargs are for another factory
        except ValueError:
            pass
        factories[run] = functools.partial(obj, **kwargs)
    return factories


@contextlib.contextmanager
def _executor(args: argparse.Namespace):
    """``--executor NAME`` as compare's executor; ``--scheduler ADDRESS``: a Dask client connected there."""
    if args.scheduler is None:
        yield args.executor
        return
    if args.executor not in (None, "dask"):
        raise InvalidSettingError(f"--scheduler runs on Dask; it cannot be used with --executor {args.executor}.")
    from ._dask import import_distributed

    with import_distributed().Client(args.scheduler) as client:
        yield client


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, resolve_measures
    from .data import Data

    settings = _parse_settings(args.set or [])
    _check_writable(args.out)
    names = [n.strip() for n in args.measures.split(",") if n.strip()]
    bases = {n.partition(".")[0] for n in names}
    stray = sorted(set(settings) - bases)
    if stray:
        raise UnknownMeasureError(
            f"--set names the measure(s) {stray}, which are not in --measures ({', '.join(names)}); "
            f"add them to --measures or correct the name."
        )
    specs = [(n, settings.get(n.partition(".")[0], {})) for n in names]
    measures = resolve_measures(specs)
    steps = _parse_steps(args.steps)
    models = _model_factory(args.model, args.runs, args.trust)
    runs = [_load_run(p, args, models.get(p) if models else None) for p in args.runs]
    steps = _pick_steps(steps, runs)
    needed = [label for label, m in measures.items() if m.needs_data]
    if args.loss and not args.data:
        raise InvalidSettingError("--loss is the loss of --data FILE; pass --data too.")
    if args.data:
        shared = Data.from_file(args.data, loss=args.loss) if needed else None
        data = {t.name: shared for t in runs}
    else:
        data = {t.name: _data_for(t, needed) for t in runs}
    with _executor(args) as executor:
        result = compare(
            runs, list(measures.values()), data=data, steps=steps, device=args.device,
            cache=args.cache, progress=not args.quiet, seed=args.seed, strict=args.strict,
            executor=executor, workers=args.workers,
        )
    path = result.save(args.out)
    print(f"wrote {path} ({len(result.measures)} measures x {result.dataset.sizes['step']} steps"
          f" x {len(result.runs)} runs; {len(result.errors)} failed cells)")
    cells = len(result.measures) * sum(len([s for s in t.steps if steps is None or s in steps]) for t in runs)
    if cells and len(result.errors) >= cells:
        first = result.errors.iloc[0]
        print(f"complexity-zoo compare: error: every cell failed; the first: {first['error']}: {first['message']}",
              file=sys.stderr)
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .comparison import Comparison

    result = Comparison.load(args.result)
    written = []
    for path in (args.tex, args.md, args.csv):
        if path:
            written.append(result.export(path, kind=args.kind, target=args.target) if args.kind == "correlations"
                           else result.export(path, kind=args.kind))
    if args.png:
        written.append(result.plot(args.png))
    if not written:
        print(result.to_dataframe().to_string(index=False))
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Train cpu-small with and without weight decay, compare every measure, write a report."""
    from ._threads import host_cores
    from .tasks.report import grokking_report

    workers = args.workers if args.workers is not None else min(4, host_cores())
    result, written = grokking_report(args.out, device=args.device, progress=not args.quiet, workers=workers)
    for path in written:
        print(f"wrote {path}")
    t = result.transitions()
    named = t[t["kind"].isin(["memorization", "generalization"])][["run", "series", "kind", "step"]]
    print(named.to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="complexity-zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("measures", help="list the registered measures")
    p.add_argument("pattern", nargs="?", default="*", help="glob on measure names")
    p.add_argument("--short", action="store_true", help="leave out the summaries (with --conventions: "
                   "only the switch and the agreement)")
    p.add_argument("--conventions", action="store_true",
                   help="the conventions table: each measure's reference, default convention, the setting "
                        "that reproduces the reference code, and the agreement measured (with its test)")
    p.set_defaults(func=_cmd_measures)

    p = sub.add_parser("compare", help="run measures over the checkpoints of run folders")
    p.add_argument("runs", nargs="+", help="run folders (run.json, metrics.csv, checkpoints/), Trainer, "
                   "timm or Lightning output folders (see --format), or hf://ORG/NAME: a Hub repository's "
                   "revisions (see --revisions)")
    p.add_argument("--measures", required=True, help="comma-separated names, e.g. l2,effective_rank")
    p.add_argument("--out", required=True, help="result file (.nc)")
    p.add_argument("--set", action="append", metavar="MEASURE.SETTING=VALUE", help="a measure setting")
    p.add_argument("--steps", help="comma-separated steps, or log:N for N log-spaced steps of each run "
                   "(default: all); only these are loaded, or fetched from the Hub")
    p.add_argument("--revisions", metavar="PATTERN", default=None,
                   help="for hf://ORG/NAME: a glob on its branches and tags, e.g. 'step*' (Pythia's 154 "
                        "checkpoints), or comma-separated revisions; offline (HF_HUB_OFFLINE=1) from the cache")
    p.add_argument("--delete-fetched", action="store_true",
                   help="for hf:// runs: delete each revision's weights that this command downloaded once they "
                        "are read (files already in the cache stay), so one revision is on disk at a time")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    p.add_argument("--cache", default=None, help="folder of finished cells; re-runs compute only the rest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict", action="store_true", help="stop at the first failing cell")
    p.add_argument("--model", metavar="PKG.MODULE:FACTORY", default=None,
                   help="build the model with this factory (called with the run's recorded kwargs when it "
                        "takes them) instead of the one run.json names")
    p.add_argument("--trust", action="store_true",
                   help="import the model factory run.json names even if it is not on the allow-list "
                        "(only for run folders you trust: it can run any code)")
    p.add_argument("--executor", choices=["serial", "threads", "processes", "dask"], default=None,
                   help="run the checkpoints in parallel: a thread or process pool, or a local Dask cluster "
                        "(each made for this command; results equal the serial ones)")
    p.add_argument("--workers", type=int, default=None, help="workers of --executor (default: one per core)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run on the Dask cluster whose scheduler is at ADDRESS (e.g. tcp://host:8786)")
    p.add_argument("--format", default="auto", choices=["auto", "run", "hf", "timm", "lightning"],
                   help="what wrote the folders: complexity-zoo (run.json), transformers.Trainer (checkpoint-N/), "
                        "timm (checkpoint-N.pth.tar), Lightning (*.ckpt, version_N/); auto tells by file names")
    p.add_argument("--data", metavar="FILE", default=None,
                   help="examples for the measures that need data: a .safetensors (or weights-only .pt) file of "
                        "tensors train.input_ids [train.labels, train.attention_mask] (a causal LM) or train.x, "
                        "train.y, and the same for test.")
    p.add_argument("--loss", default=None, choices=["causal_lm", "cross_entropy", "mse"],
                   help="the loss of --data (default: causal_lm for input_ids, else cross_entropy)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_compare)

    from .tasks.cli_train import add_train_parser

    add_train_parser(sub)

    p = sub.add_parser("demo", help="the whole pipeline on a small grokking run (CPU, a few minutes)")
    p.add_argument("--out", default="demo_out", help="folder for runs, cache, result, tables, figure")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that train the two runs at once and run the comparison's checkpoints "
                        "(default: one per core, at most 4; 1: all in this process). Results are the same.")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("report", help="tables and a figure from a saved comparison")
    p.add_argument("result", help="a .nc file written by compare")
    p.add_argument("--tex", help="LaTeX table (booktabs)")
    p.add_argument("--md", help="Markdown table")
    p.add_argument("--csv", help="CSV table")
    p.add_argument("--png", help="figure")
    p.add_argument("--kind", default="correlations", choices=["correlations", "transitions", "bounds", "values"])
    p.add_argument("--target", default="test_loss", help="what the correlations are with")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ComplexityZooError as e:
        print(f"complexity-zoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ComparisonInterrupted as e:
        print(f"complexity-zoo {args.command}: interrupted: {e}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
