"""Hub checkpoint suites offline: revisions by pattern from a huggingface_hub cache the test builds."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from complexity_zoo.errors import CheckpointNotFoundError, OutsideFolderError, TrajectoryError

transformers = pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")

from complexity_zoo.adapters import _hub  # noqa: E402
from complexity_zoo.adapters import huggingface as hf  # noqa: E402
from complexity_zoo.testing import hub_cache_suite  # noqa: E402

REPO = "org/tiny-pythia"
STEPS = [0, 10, 20, 40, 80]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """A GPT-NeoX suite as branches step0 ... step80 (and main) of a Hub cache; its tokens."""
    cache = tmp_path_factory.mktemp("hub")
    tokens = hub_cache_suite(cache, REPO, STEPS)
    return cache, tokens


@pytest.fixture
def offline(suite, monkeypatch):
    cache, _ = suite
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_pattern_gives_every_step_sorted(offline):
    traj = hf.load_trajectory(REPO, revisions="step*")
    assert traj.steps == STEPS and traj.name == "tiny-pythia"
    model = traj.model_at(80)
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    stored = huggingface_hub.try_to_load_from_cache(REPO, "model.safetensors", revision="step80")
    reference = transformers.GPTNeoXForCausalLM.from_pretrained(str(Path(stored).parent)).state_dict()
    ours = model.state_dict()  # transformers' own loader, with its renames (embed_out -> lm_head)
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)


def test_patterns_filters_lists_and_mappings_agree(offline):
    assert hf.load_trajectory(REPO, revisions="step[24]0").steps == [20, 40]
    assert hf.load_trajectory(REPO, revisions=lambda r: r.startswith("step") and int(r[4:]) >= 20).steps == [20, 40, 80]
    assert hf.load_trajectory(REPO, revisions=["step10", "step0"]).steps == [0, 10]
    by_map = hf.load_trajectory(REPO, revisions={7: "step40"})
    assert by_map.steps == [7]
    a, b = by_map.model_at(7).state_dict(), hf.load_trajectory(REPO, revisions="step40").model_at(40).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_string_is_never_iterated_and_misses_are_named(offline):
    with pytest.raises(TrajectoryError, match=r"No revision matches the pattern 'ckpt\*'; the revisions are: main, "):
        hf.load_trajectory(REPO, revisions="ckpt*")
    with pytest.raises(TrajectoryError, match="'main' has no step number"):
        hf.load_trajectory(REPO, revisions="*")
    with pytest.raises(CheckpointNotFoundError, match="has no revision 'step5'"):
        hf.load_trajectory(REPO, revisions=["step5"])
    with pytest.raises(CheckpointNotFoundError, match="records no revisions of 'org/absent'"):
        hf.load_trajectory("org/absent", revisions="step*")


def test_fingerprints_are_commits_and_nothing_is_read_before_a_load(offline, monkeypatch):
    reads = []
    real = _hub.load_state_dict_file
    monkeypatch.setattr(_hub, "load_state_dict_file", lambda p: reads.append(p) or real(p))
    traj = hf.load_trajectory(REPO, revisions="step*")
    prints = [traj.checkpoint(s).fingerprint() for s in STEPS]
    assert reads == [] and len(set(prints)) == 5
    assert prints[0] == f"hf:{REPO}@{_hub.cached_refs(REPO)['step0']}"
    traj.model_at(20)
    assert len(reads) == 1


def test_keep_false_deletes_only_what_a_load_fetched(offline, tmp_path, monkeypatch):
    """Offline nothing is fetched, so nothing is deleted; a fetch (simulated by a copy of the
    suite whose files count as fetched) is deleted after the read, shared blobs kept."""
    cache = tmp_path / "cache"
    hub_cache_suite(cache, REPO, [0, 10])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    repo_dir = _hub.repo_cache(REPO)
    traj = hf.load_trajectory(REPO, revisions="step*", keep=False)
    traj.model_at(10)
    assert len(list((repo_dir / "snapshots").glob("*/model.safetensors"))) == 2  # offline: not fetched, kept

    _hub._LAST.clear()  # the revision last read stays in memory: forget it, so the next load reads files
    real_get = _hub.Source.get
    monkeypatch.setattr(_hub.Source, "get", lambda self, name, commit: (real_get(self, name, commit)[0], True))
    blobs_before = set((repo_dir / "blobs").iterdir())
    state = hf.load_trajectory(REPO, revisions="step*", keep=False).model_at(10).state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())
    left = list((repo_dir / "snapshots").glob("*/model.safetensors"))
    assert len(left) == 1 and left[0].parent.name == _hub.cached_refs(REPO)["step0"]
    gone = blobs_before - set((repo_dir / "blobs").iterdir())
    assert len(gone) == 1  # step10's weights; the config blobs both snapshots link stay
    assert (repo_dir / "snapshots" / _hub.cached_refs(REPO)["step10"] / "config.json").is_file()


def test_local_mirrors_take_patterns_too(suite, tmp_path):
    cache, _ = suite
    repo_dir = _hub.repo_cache(REPO, cache)
    for rev, commit in _hub.cached_refs(REPO, cache).items():
        if rev != "main":
            shutil.copytree(repo_dir / "snapshots" / commit, tmp_path / rev)  # files, as local_dir= writes
    assert hf.load_trajectory(tmp_path, revisions="step*").steps == STEPS
    (tmp_path / "step0").rename(tmp_path / "elsewhere")
    (tmp_path / "step0").symlink_to(repo_dir / "snapshots" / _hub.cached_refs(REPO, cache)["step0"])
    with pytest.raises(OutsideFolderError, match="step0"):  # a mirror is confined like any folder
        hf.load_trajectory(tmp_path, revisions="step*")


# -- the command line --------------------------------------------------------------------------
def test_compare_a_hub_suite_by_pattern_writes_every_step(offline, tmp_path, capsys):
    from complexity_zoo.cli import main
    from complexity_zoo.comparison import Comparison

    out = tmp_path / "x.nc"
    rc = main(["compare", f"hf://{REPO}", "--revisions", "step*", "--measures", "l2,stable_rank",
               "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    frame = Comparison.load(out).to_dataframe()
    assert sorted(set(frame["step"])) == STEPS and set(frame["measure"]) == {"l2", "stable_rank"}
    assert frame["value"].notna().all()


def test_steps_log_n_loads_only_the_subset(offline, tmp_path, capsys, monkeypatch):
    from complexity_zoo.cli import main
    from complexity_zoo.comparison import Comparison

    loaded = []
    real = _hub.load_revision
    monkeypatch.setattr(_hub, "load_revision", lambda *a: loaded.append(a[2]) or real(*a))
    rc = main(["compare", f"hf://{REPO}", "--revisions", "step*", "--steps", "log:3", "--measures", "l2",
               "--out", str(tmp_path / "y.nc"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(set(Comparison.load(tmp_path / "y.nc").to_dataframe()["step"])) == [0, 10, 80]
    assert sorted(loaded) == ["step0", "step10", "step80"]


def test_hub_runs_say_what_they_need(offline, tmp_path, capsys):
    from complexity_zoo.cli import main

    for argv, why in [([f"hf://{REPO}"], "needs --revisions"), (["hf://tiny-pythia", "--revisions", "step*"],
                                                                "hf://ORG/NAME"),
                      ([f"hf://{REPO}", "--revisions", "step*", "--steps", "log:x"], "log:N takes"),
                      ([str(tmp_path), "--revisions", "step*"], "is a folder")]:
        rc = main(["compare", *argv, "--measures", "l2", "--out", str(tmp_path / "z.nc"), "--quiet"])
        assert rc == 2 and why in capsys.readouterr().err, argv


def test_log_spaced_subsets_of_pythias_154_steps():
    from complexity_zoo._steps import log_spaced

    pythia = [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))
    assert len(pythia) == 154
    picked = log_spaced(pythia, 20)
    assert len(picked) == 20 == len(set(picked)) and picked[0] == 0 and picked[-1] == 143000
    assert set(picked) <= set(pythia) and picked == sorted(picked)
    gaps = [math.log(b + 1) - math.log(a + 1) for a, b in zip(picked, picked[1:])]
    assert max(gaps) < 2 * math.log(143001) / 19  # no gap much wider than even log spacing
    assert log_spaced(STEPS, 9) == STEPS and log_spaced(STEPS, 1) == [80]  # one step: the last
    with pytest.raises(TrajectoryError, match="at least one step"):
        log_spaced(STEPS, 0)


def test_keep_false_fetches_a_revision_once_for_all_its_cells_and_pickles(offline, tmp_path, monkeypatch):
    import pickle

    import complexity_zoo as cz

    cache = tmp_path / "cache"
    hub_cache_suite(cache, REPO, [0, 10])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    calls = []
    real_files = _hub.Source.weight_files
    monkeypatch.setattr(_hub.Source, "weight_files",
                        lambda self, commit, rev, pref: calls.append(rev) or real_files(self, commit, rev, pref))
    traj = hf.load_trajectory(REPO, revisions="step*", keep=False)
    result = cz.compare(traj, ["l2", "stable_rank", "param_count"], progress=False)
    assert result.errors.empty and calls == ["step0", "step10"]  # three streamed cells each, one read
    again = pickle.loads(pickle.dumps(traj))  # what a process pool ships
    a, b = again.model_at(0).state_dict(), traj.model_at(0).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
