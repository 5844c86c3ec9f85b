"""The cache checks itself: a cell records its key and a checksum, an edited or misplaced cell is
recomputed (with a warning) and never served, a cache that cannot be written degrades to
computing without caching, and the CLI checks --out before any work."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

import complexity_zoo as cz
from complexity_zoo._cache import MAX_CELL_BYTES, ResultCache
from complexity_zoo.cli import main
from complexity_zoo.errors import CacheWarning
from complexity_zoo.testing import mlp


@pytest.fixture
def traj():
    return cz.Trajectory.from_state_dicts({0: mlp().state_dict(), 10: mlp().state_dict()}, model=mlp, name="r")


def _cells(cache, measure="l2"):
    return sorted((cache / measure).glob("*.json"))


def _root_can_write_anyway() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0  # root ignores permission bits


def test_a_cell_records_its_key_and_checksum(tmp_path, traj):
    cz.compare(traj, ["l2"], cache=tmp_path / "c", progress=False)
    record = json.loads(_cells(tmp_path / "c")[0].read_text())
    fields = record["key_fields"]
    assert ResultCache.key(**fields) == record["key"] == _cells(tmp_path / "c")[0].stem
    assert fields["measure_key"] == cz.get_measure("l2").key() and fields["data_id"] is None
    assert len(record["checksum"]) == 64 and record["run"] == "r"


def test_an_edited_value_is_recomputed_never_served(tmp_path, traj):
    cache = tmp_path / "c"
    first = cz.compare(traj, ["l2"], cache=cache, progress=False).dataset["l2"].values
    path = _cells(cache)[0]
    path.write_text(json.dumps({**json.loads(path.read_text()), "value": 12345.0}))
    with pytest.warns(CacheWarning, match="checksum does not match"):
        again = cz.compare(traj, ["l2"], cache=cache, progress=False).dataset["l2"].values
    np.testing.assert_array_equal(first, again)
    assert 12345.0 not in again and json.loads(path.read_text())["value"] != 12345.0


def test_another_measures_cell_under_this_key_is_not_served(tmp_path, traj):
    cache = tmp_path / "c"
    cz.compare(traj, ["l2", "param_count"], cache=cache, progress=False)
    target, other = _cells(cache, "l2")[0], _cells(cache, "param_count")[0]
    moved = {**json.loads(other.read_text()), "key": target.stem}  # even renamed to the l2 key
    target.write_text(json.dumps(moved))
    with pytest.warns(CacheWarning, match="do not digest to its key"):
        result = cz.compare(traj, ["l2"], cache=cache, progress=False)
    assert float(result.dataset["l2"].values.min()) < 100  # the l2 of a tiny MLP, not its parameter count


def test_a_huge_file_at_a_cells_path_is_not_read_whole(tmp_path, traj):
    cache = tmp_path / "c"
    cz.compare(traj, ["l2"], cache=cache, progress=False)
    path = _cells(cache)[0]
    with open(path, "r+b") as f:  # sparse: costs no disk
        f.truncate(MAX_CELL_BYTES + 10)
    with pytest.warns(CacheWarning, match="over 64 MiB"):
        cz.compare(traj, ["l2"], cache=cache, progress=False)


def test_a_folder_at_a_cells_path_degrades_to_no_caching(tmp_path, traj):
    cache = tmp_path / "c"
    first = cz.compare(traj, ["l2"], cache=cache, progress=False).dataset["l2"].values
    path = _cells(cache)[0]
    path.unlink()
    path.mkdir()
    with pytest.warns(CacheWarning) as caught:
        again = cz.compare(traj, ["l2"], cache=cache, progress=False).dataset["l2"].values
    np.testing.assert_array_equal(first, again)
    assert [str(w.message) for w in caught if "cannot be written" in str(w.message)]
    assert not list(cache.rglob("*.tmp")) and not list(cache.rglob(".*.tmp"))


@pytest.mark.skipif(_root_can_write_anyway(), reason="root writes to read-only folders")
def test_a_read_only_cache_degrades_to_no_caching(tmp_path, traj):
    cache = tmp_path / "c"
    cache.mkdir()
    cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.warns(CacheWarning, match="cannot be written") as caught:
            result = cz.compare(traj, ["l2"], cache=cache, progress=False)
    finally:
        cache.chmod(stat.S_IRWXU)
    assert np.isfinite(result.dataset["l2"].values).all() and len(caught) == 1


def test_a_failing_write_leaves_no_tmp_and_warns_once(tmp_path, traj, monkeypatch):
    cache = tmp_path / "c"

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    store = ResultCache(cache)
    monkeypatch.setattr(os, "fsync", full)
    with pytest.warns(CacheWarning, match="No space left") as caught:
        for i in range(3):
            store.put("l2", ResultCache.key(str(i), "m", "k", None), {"value": 1.0})
    assert len(caught) == 1 and not list(cache.rglob("*.tmp"))


def test_cli_out_is_checked_before_any_work(tmp_path, traj, capsys):
    root = traj.save(tmp_path / "run")
    (tmp_path / "taken").mkdir()
    assert main(["compare", str(root), "--measures", "l2", "--out", str(tmp_path / "taken"),
                 "--cache", str(tmp_path / "c"), "--quiet"]) == 2
    assert "is a folder" in capsys.readouterr().err and not (tmp_path / "c").exists()
    (tmp_path / "file").write_text("")
    assert main(["compare", str(root), "--measures", "l2", "--out", str(tmp_path / "file" / "r.nc"),
                 "--cache", str(tmp_path / "c"), "--quiet"]) == 2
    assert "cannot be written" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_cli_a_setting_given_twice_is_refused(tmp_path, traj, capsys):
    root = traj.save(tmp_path / "run")
    assert main(["compare", str(root), "--measures", "naive_compression", "--out", str(tmp_path / "r.nc"),
                 "--set", "naive_compression.compressor=lzma", "--set", "naive_compression.compressor=bz2"]) == 2
    assert "naive_compression.compressor twice" in capsys.readouterr().err


def test_strict_errors_name_the_step_and_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    state = mlp().state_dict()
    state = {k: v.clone() for k, v in state.items()}
    next(iter(state.values()))[0] = float("nan")
    save_file(state, str(tmp_path / "step_7.safetensors"))
    traj = cz.Trajectory.from_files([tmp_path / "step_7.safetensors"], model=mlp, name="nanrun")
    with pytest.raises(cz.errors.NonFiniteError, match=r"at step 7 of run 'nanrun'.*step_7.safetensors"):
        cz.compare(traj, ["l2"], progress=False, strict=True)
    assert torch.isnan(next(iter(state.values()))).any()


def test_a_cache_path_taken_by_a_file_degrades_to_no_caching(tmp_path, traj):
    (tmp_path / "c").write_text("not a folder")
    with pytest.warns(CacheWarning, match="cannot be written") as caught:
        result = cz.compare(traj, ["l2"], cache=tmp_path / "c", progress=False)
    assert np.isfinite(result.dataset["l2"].values).all() and len(caught) == 1
    assert (tmp_path / "c").read_text() == "not a folder"


@pytest.mark.parametrize("what", ["cell", "folder"])
def test_a_cell_or_folder_linked_out_of_the_cache_is_not_followed(tmp_path, traj, what):
    cache, outside = tmp_path / "c", tmp_path / "outside"
    cz.compare(traj, ["l2"], cache=cache, progress=False)
    outside.mkdir()
    cell = _cells(cache)[0]
    if what == "cell":  # a valid cell, moved out and linked back: still not read through the link
        (outside / cell.name).write_bytes(cell.read_bytes())
        cell.unlink()
        cell.symlink_to(outside / cell.name)
    else:
        for p in _cells(cache):
            (outside / p.name).write_bytes(p.read_bytes())
        for p in _cells(cache):
            p.unlink()
        (cache / "l2").rmdir()
        (cache / "l2").symlink_to(outside, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    with pytest.warns(CacheWarning, match="link|symbolic"):
        result = cz.compare(traj, ["l2"], cache=cache, progress=False)
    assert np.isfinite(result.dataset["l2"].values).all()
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before  # nothing written outside
    if what == "cell":
        assert not cell.is_symlink() and json.loads(cell.read_text())["key"] == cell.stem
