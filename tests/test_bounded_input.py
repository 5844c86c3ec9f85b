"""Small files, bounded costs: a checkpoint's pickle, a safetensors header and a task's parameters
are checked against bounds before anything is allocated for them."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import complexity_zoo as cz
from complexity_zoo import _io, _pickle_bounds
from complexity_zoo._stream import open_tensors
from complexity_zoo.errors import DataError, InvalidSettingError, LimitExceededError
from complexity_zoo.tasks import modular
from complexity_zoo.testing import mlp

BOMB = '''
import resource, sys, zipfile
path, n = sys.argv[1], int(sys.argv[2])
with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:  # data.pkl: one string of n bytes
    z.writestr("archive/version", "3\\n")
    with z.open("archive/data.pkl", "w", force_zip64=True) as f:
        f.write(b"\\x80\\x02X" + n.to_bytes(4, "little"))
        for _ in range(n >> 20):
            f.write(b"a" * (1 << 20))
        f.write(b".")
if sys.argv[3] == "load":
    from complexity_zoo.adapters import timm as zoo_timm
    try:
        zoo_timm.load_checkpoint_file(path)
    except Exception as e:
        print(type(e).__name__, e)
    print("PEAK_GIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
'''


def _bomb(tmp_path, n: int, load: bool = False) -> subprocess.CompletedProcess:
    script = tmp_path / "bomb.py"
    script.write_text(BOMB)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "checkpoint-0.pth.tar"), str(n),
                           "load" if load else "build"], capture_output=True, text=True, check=True)


def test_a_deflated_pickle_that_inflates_is_refused_before_reading(tmp_path):
    from complexity_zoo.adapters import timm as zoo_timm

    _bomb(tmp_path, 17 << 20)  # 17 MiB of one letter: a 17 KB file
    path = tmp_path / "checkpoint-0.pth.tar"
    assert path.stat().st_size < 200_000
    with pytest.raises(LimitExceededError, match=r"data.pkl' inflates from \d+ to \d+ bytes, over 64 times"):
        zoo_timm.load_checkpoint_file(path)


@pytest.mark.slow
def test_the_1_gib_pickle_bomb_fails_with_peak_memory_under_1_5_gib(tmp_path):
    out = _bomb(tmp_path, 1 << 30, load=True).stdout
    assert "LimitExceededError" in out, out
    peak = float(out.split("PEAK_GIB")[1])
    assert peak < 1.5, out  # unbounded, this file peaked at 3.7-3.9 GiB before torch refused it


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("bound, value", [("item_bytes", 1000), ("opcodes", 40), ("pickle_bytes", 300)])
def test_pickle_payloads_over_the_bounds_are_refused(tmp_path, monkeypatch, legacy, bound, value):
    path = tmp_path / "c_0.pt"
    torch.save({"state_dict": mlp().state_dict(), "note": "x" * 2000}, path,
               _use_new_zipfile_serialization=not legacy)
    assert set(cz.Trajectory.from_files([path], model=mlp).model_at(0).state_dict())  # loads under the defaults
    if legacy and bound == "pickle_bytes":
        pytest.skip("a legacy file has no data.pkl entry whose size is declared")
    monkeypatch.setitem(_pickle_bounds.LIMITS, bound, value)
    with pytest.raises(LimitExceededError, match=f"c_0.pt.*over the bound of {value}.*{bound}"):
        cz.Trajectory.from_files([path], model=mlp).model_at(0)
    with pytest.raises(LimitExceededError):
        open_tensors(path)


def test_a_truncated_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "c_0.pt"
    torch.save(mlp().state_dict(), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(cz.errors.NotACheckpointError, match="c_0.pt"):
        cz.Trajectory.from_files([path], model=mlp).model_at(0)


def test_a_safetensors_header_of_too_many_tensors_is_refused_before_parsing(tmp_path):
    path = tmp_path / "step_0.safetensors"
    n = _io.MAX_TENSORS + 10
    header = b"{" + b",".join(b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(n)) + b"}"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(LimitExceededError, match=f"step_0.safetensors.*bound of {_io.MAX_TENSORS} tensors"):
        cz.Trajectory.from_files([path], model=mlp).model_at(0)
    with pytest.raises(LimitExceededError, match="tensors"):
        open_tensors(path)


def test_a_safetensors_file_within_the_bounds_reads(tmp_path, monkeypatch):
    path = tmp_path / "step_0.safetensors"
    save_file(mlp().state_dict(), str(path))
    monkeypatch.setattr(_io, "MAX_TENSORS", len(mlp().state_dict()))
    assert set(cz.Trajectory.from_files([path], model=mlp).checkpoint(0).state_dict()) == set(mlp().state_dict())
    monkeypatch.setattr(_io, "MAX_TENSORS", 1)
    with pytest.raises(LimitExceededError):
        cz.Trajectory.from_files([path], model=mlp).checkpoint(0).state_dict()


# -- task parameters --------------------------------------------------------------------------
def test_is_prime_agrees_with_an_independent_test():
    sympy = pytest.importorskip("sympy")
    rng = random.Random(0)
    numbers = list(range(3000)) + [561, 1105, 3215031751, 2152302898747, 3474749660383, 341550071728321,
                                   3825123056546413051, 318665857834031151167461, 2**61 - 1, 2**79 - 67]
    numbers += [rng.randrange(2**64) for _ in range(2000)] + [rng.randrange(2**80) | 1 for _ in range(500)]
    assert [modular.is_prime(n) for n in numbers] == [sympy.isprime(n) for n in numbers]
    with pytest.raises(DataError, match="exact below"):
        modular.is_prime(2**127 - 1)


def test_a_modulus_too_large_for_the_task_is_refused_at_once():
    for op in ("/", "+"):
        with pytest.raises(DataError, match="too large.*at most 8192"):
            modular.dataset(p=2**61 - 1, op=op)  # was trial division, then p^2 pairs
    with pytest.raises(DataError, match="too large"):
        cz.tasks.task_data({"name": "modular", "p": 2**61 - 1, "op": "/"})
    with pytest.raises(InvalidSettingError, match="bound"):
        modular.transformer(p=2**40)
    with pytest.raises(InvalidSettingError, match="parameters, over the bound"):
        modular.mlp(p=113, d_hidden=2**40)
    assert modular.dataset(p=97, op="/").n("train") == int(0.3 * 97 * 96)


def test_metrics_with_thousands_of_columns_are_refused_before_any_work(tmp_path):
    root = cz.Trajectory.from_state_dicts({0: mlp().state_dict()}, model=mlp).save(tmp_path / "run")
    columns = [f"m{i}" for i in range(20_000)]
    (root / "metrics.csv").write_text("step," + ",".join(columns) + "\n0," + ",".join("1" for _ in columns) + "\n")
    with pytest.raises(cz.errors.TrajectoryError, match=r"metrics.csv' have 20000 columns.*bound of 1000"):
        cz.Trajectory.from_dir(root)
    import pandas as pd

    wide = pd.DataFrame({"step": [0], **{f"m{i}": [1.0] for i in range(1000)}})
    assert len(cz.Trajectory.from_state_dicts({0: mlp().state_dict()}, model=mlp, metrics=wide).metrics.columns) == 1001


def test_json_files_of_a_folder_are_bounded_before_reading(tmp_path, monkeypatch):
    root = cz.Trajectory.from_state_dicts({0: mlp().state_dict()}, model=mlp).save(tmp_path / "run")
    monkeypatch.setattr(_io, "MAX_JSON_BYTES", 64)
    with pytest.raises(LimitExceededError, match="run.json.*over 64 bytes"):
        cz.Trajectory.from_dir(root)


@pytest.mark.parametrize("args", [{"num_classes": 10**12}, {"num_classes": "ten"}, {"num_classes": 0},
                                  {"num_classes": 3, "in_chans": 10**9}, {"num_classes": 3, "in_chans": True}])
def test_timm_sizes_stored_in_a_checkpoint_are_bounded(tmp_path, args):
    import argparse

    from complexity_zoo.adapters import timm as zoo_timm

    header = {"arch": "resnet18", "args": argparse.Namespace(**args)}
    with pytest.raises(cz.errors.CheckpointError, match=r"c.pth.tar.*stores (num_classes|in_chans)=.*expected"):
        zoo_timm._model_kwargs(tmp_path / "c.pth.tar", header, {}, None)
