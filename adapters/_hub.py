"""Hub checkpoint suites: revisions chosen by pattern, fetched one at a time through huggingface_hub's cache.

A suite such as Pythia's is one repository with a branch per checkpoint (``step0`` ...
``step143000``). The revisions that exist come from ``huggingface_hub.list_repo_refs`` online,
or from the local cache's ``refs/`` folder offline (``HF_HUB_OFFLINE=1``, or when the Hub cannot
be reached). A revision's weights are fetched only when its checkpoint is loaded, with
``hf_hub_download`` (resumable, into the usual cache), and read with safetensors or
``torch.load(weights_only=True)``. With ``keep=False`` the weight files a load fetched are
deleted from the cache once they are read (blobs another snapshot still links are kept; files
that were already cached are never deleted), so at most one revision's weights are on disk at a
time. A checkpoint's cache identity is its commit, known before anything is fetched.

Disk, estimated from parameter counts (not measured here): a Pythia-1B revision is 1.01e9
parameters stored in fp16, about 2.0 GB of weights, so all 154 revisions kept take about
310 GB of cache; with ``keep=False`` about 2 GB at a time (one revision; the weights are then
held in memory, about 2 GB as stored plus the fp32 model of about 4 GB). Measures that need the
initialization re-read the first revision for every checkpoint, which with ``keep=False``
means a fetch each time: keep the suite, or set the trajectory's ``init`` to those weights.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from complexity_zoo._io import load_state_dict_file
from complexity_zoo._steps import unique_steps
from complexity_zoo.errors import CheckpointError, CheckpointNotFoundError, TrajectoryError, UntrustedCodeError
from complexity_zoo.trajectory import Checkpoint, step_from_filename

from ._common import require

Revisions = str | Callable[[str], bool] | Iterable[str] | Mapping[int, str]
_TRUE = {"1", "on", "yes", "true"}


def _hub():
    return require("huggingface_hub", "hf", "Hub revisions")


def offline() -> bool:
    """Whether huggingface_hub is told to stay offline (its constant, or ``HF_HUB_OFFLINE`` now)."""
    return bool(_hub().constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def repo_cache(repo: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/models--ORG--NAME``, huggingface_hub's folder for a model repository."""
    root = Path(cache_dir) if cache_dir is not None else Path(_hub().constants.HF_HUB_CACHE)
    return root / ("models--" + repo.replace("/", "--"))


def cached_refs(repo: str, cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Branch or tag name -> commit, as the local cache's ``refs/`` records them."""
    refs = repo_cache(repo, cache_dir) / "refs"
    if not refs.is_dir():
        return {}
    return {p.name: p.read_text().strip() for p in sorted(refs.iterdir()) if p.is_file()}


def available_revisions(repo: str, cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Every branch and tag of ``repo`` -> its commit: from the Hub online, the local cache offline."""
    hub = _hub()
    why = "huggingface_hub is offline (HF_HUB_OFFLINE)"
    if not offline():
        try:
            refs = hub.list_repo_refs(repo)
            return {r.name: r.target_commit for r in [*refs.branches, *refs.tags]}
        except hub.errors.RepositoryNotFoundError as e:
            raise CheckpointNotFoundError(f"The Hub has no repository {repo!r} (or it is private): {e}") from e
        except Exception as e:  # the Hub cannot be reached: the cache may still hold the suite
            why = f"the Hub could not be reached ({type(e).__name__}: {e})"
    found = cached_refs(repo, cache_dir)
    if not found:
        raise CheckpointNotFoundError(
            f"{why}, and the cache {str(repo_cache(repo, cache_dir))!r} records no revisions of {repo!r}."
        )
    return found


def choose(revisions: Revisions, available: Iterable[str]) -> Mapping[int, str] | list[str]:
    """The revisions a pattern or filter picks from ``available``; a list or mapping as given.

    A string is a glob pattern (``"step*"``), never a sequence of names; a callable keeps the
    names for which it returns True."""
    if isinstance(revisions, Mapping):
        return revisions
    names = sorted(available)
    if isinstance(revisions, str):
        picked = fnmatch.filter(names, revisions)
        what = f"the pattern {revisions!r}"
    elif callable(revisions):
        picked = [n for n in names if revisions(n)]
        what = f"the filter {getattr(revisions, '__name__', revisions)!r}"
    else:
        return [str(r) for r in revisions]
    if not picked:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise TrajectoryError(f"No revision matches {what}; the revisions are: {shown or 'none'}.")
    return picked


def steps_of(revisions: Iterable[str] | Mapping[int, str]) -> dict[int, str]:
    """Step -> revision, the step read from each name (its last number) unless given as a mapping."""
    if isinstance(revisions, Mapping):
        return {int(step): str(rev) for step, rev in revisions.items()}
    def step(rev: str) -> int:
        try:
            return step_from_filename(rev)
        except TrajectoryError:
            raise TrajectoryError(
                f"The revision {rev!r} has no step number in its name: pass revisions as a "
                f"mapping {{step: revision}}, or a pattern that leaves it out."
            ) from None

    by_step = unique_steps(((step(str(rev)), str(rev)) for rev in revisions), "The revisions")
    if not by_step:
        raise TrajectoryError("revisions is empty: name at least one revision.")
    return by_step


# -- fetching --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Where one repository's files come from: the Hub through the cache at ``cache_dir``."""

    repo: str
    cache_dir: str | None = None

    def get(self, name: str, commit: str) -> tuple[Path | None, bool]:
        """The cached path of ``name`` at ``commit`` (fetched if need be and allowed) and whether
        this call fetched it; None when the revision has no such file."""
        hub = _hub()
        cached = hub.try_to_load_from_cache(self.repo, name, cache_dir=self.cache_dir, revision=commit)
        if isinstance(cached, str):
            return Path(cached), False
        if cached is not None or offline():  # known to be absent, or not cached and nothing may be fetched
            return None, False
        try:
            return Path(hub.hf_hub_download(self.repo, name, revision=commit, cache_dir=self.cache_dir)), True
        except hub.errors.EntryNotFoundError:
            return None, False

    def need(self, name: str, commit: str, rev: str) -> tuple[Path, bool]:
        path, fetched = self.get(name, commit)
        if path is None:
            where = "the cache (offline)" if offline() else "the Hub"
            raise CheckpointNotFoundError(f"{self.repo!r} at revision {rev!r} ({commit}) has no {name} in {where}.")
        return path, fetched

    def weight_files(self, commit: str, rev: str, preferred: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
        """The files of one revision's weights in the order of ``preferred`` (an index: it and its
        shards), and those of them this call fetched."""
        for name in preferred:
            path, fetched = self.get(name, commit)
            if path is None:
                continue
            files, new = [path], [path] if fetched else []
            if name.endswith(".index.json"):
                for shard in _shards(path):
                    shard_path, shard_fetched = self.need(shard, commit, rev)
                    files.append(shard_path)
                    new += [shard_path] if shard_fetched else []
            return files, new
        where = "the cache (offline)" if offline() else "the Hub"
        raise CheckpointNotFoundError(
            f"{self.repo!r} at revision {rev!r} ({commit}) has none of {list(preferred)} in {where}."
        )


def _shards(index: Path) -> list[str]:
    import json

    try:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{str(index)!r} is not a shard index with a 'weight_map': {e!r}") from e
    for name in names:  # plain relative names only: the shard lives in the same snapshot
        if not isinstance(name, str) or not name or name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise UntrustedCodeError(f"The shard index {str(index)!r} names {name!r}, not a file of its revision.")
    return names


def release(files: Iterable[Path], repo_dir: Path) -> None:
    """Delete fetched snapshot files and their blobs, unless another snapshot links the blob."""
    files = list(files)
    if not files:
        return
    blobs = {f: f.resolve() for f in files}
    for f in files:
        f.unlink(missing_ok=True)
    still = {p.resolve() for p in (repo_dir / "snapshots").glob("*/**/*") if p.is_symlink()}
    for blob in set(blobs.values()):
        if blob.parent.name == "blobs" and blob not in still:
            blob.unlink(missing_ok=True)


_LAST: dict[tuple, dict[str, Tensor]] = {}  # keep=False: the one revision last read, by (repo, cache, commit)
_LOCK = threading.Lock()


def load_revision(source: Source, commit: str, rev: str, preferred: tuple[str, ...], keep: bool,
                  fix: Callable[[dict[str, Tensor]], dict[str, Tensor]]) -> dict[str, Tensor]:
    """One revision's state dict; with ``keep=False`` the files this load fetched are deleted after
    reading, and the tensors are held in memory until another revision is read, so the cells of
    one checkpoint (each streamed measure opens it anew) fetch it once."""
    key = (source.repo, source.cache_dir, commit)
    with _LOCK:
        if not keep and key in _LAST:
            return dict(_LAST[key])
        files, fetched = source.weight_files(commit, rev, preferred)
        try:
            state: dict[str, Tensor] = {}
            for path in files:
                if not path.name.endswith(".index.json"):
                    state.update(load_state_dict_file(path))
        finally:
            if not keep:
                release(fetched, repo_cache(source.repo, source.cache_dir))
        state = fix(state)
        if not keep:
            _LAST.clear()
            _LAST[key] = state
        return dict(state)


@dataclass
class HubCheckpoint(Checkpoint):
    """A Hub revision: its cache identity is the repository and commit, known without a download."""

    commit: str = ""

    def fingerprint(self) -> str:
        return f"hf:{self.source}@{self.commit}"


def resolve(repo: str, revisions: Iterable[str], commits: Mapping[str, str]) -> dict[str, str]:
    """Each revision's commit: a branch or tag of ``commits``, or a full commit hash as given."""
    out = {}
    for rev in revisions:
        commit = commits.get(rev)
        if commit is None and len(rev) == 40 and all(c in "0123456789abcdef" for c in rev):
            commit = rev
        if commit is None:
            near = ", ".join(sorted(commits)[:10]) + (", ..." if len(commits) > 10 else "")
            raise CheckpointNotFoundError(f"{repo!r} has no revision {rev!r} (it has: {near}).")
        out[rev] = commit
    return out


def hub_checkpoints(source: Source, by_step: Mapping[int, str], commits: Mapping[str, str], keep: bool,
                    preferred: tuple[str, ...], fix: Callable) -> list[Checkpoint]:
    """One lazy :class:`HubCheckpoint` per step, in step order (``commits``: from :func:`resolve`)."""
    out = []
    for step, rev in sorted(by_step.items()):
        load = functools.partial(load_revision, source, commits[rev], rev, preferred, keep, fix)
        out.append(HubCheckpoint(step, load, source=source.repo, variant=rev, commit=commits[rev]))
    return out
