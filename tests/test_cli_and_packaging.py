"""The command line, and how the package installs (adapters stay private, imports stay light)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import complexity_zoo as cz
from complexity_zoo.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_measures_command_lists_the_registry(capsys):
    assert main(["measures"]) == 0
    out = capsys.readouterr().out
    for name in ("l2", "effective_rank", "naive_compression"):
        assert name in out


def test_compare_command_writes_a_loadable_result(tmp_path, trajectory, capsys):
    run = trajectory.save(tmp_path / "run")
    out = tmp_path / "res.nc"
    assert main(["compare", str(run), "--measures", "l2,naive_compression", "--out", str(out), "--quiet",
                 "--set", "naive_compression.compressor=zlib"]) == 0
    result = cz.Comparison.load(out)
    assert result.measures == ["l2", "naive_compression"] and result.dataset.sizes["step"] == 5
    assert '"zlib"' in result.dataset["naive_compression"].attrs["settings"]


def test_compare_command_refuses_what_it_would_ignore(tmp_path, trajectory, capsys):
    run = str(trajectory.save(tmp_path / "run"))
    out = str(tmp_path / "x.nc")
    cases = [
        (["--set", "kolmogorv.epsilon=0.01"], "not in --measures"),  # a typo
        (["--set", "naive_compression.compressor=zlib"], "not in --measures"),  # a measure not asked for
        (["--set", "l2.nonsense=1"], "has no setting 'nonsense'"),
        (["--steps", "0,100.7"], "--steps takes comma-separated non-negative integers"),
        (["--steps", "ten"], "--steps takes"),
    ]
    for extra, message in cases:
        assert main(["compare", run, "--measures", "l2", "--out", out, "--quiet", *extra]) == 2, extra
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.nc").exists()


def test_cli_errors_are_one_clear_line(tmp_path, trajectory, capsys):
    run = trajectory.save(tmp_path / "run")
    assert main(["compare", str(run), "--measures", "l2,efective_rank", "--out", str(tmp_path / "x.nc")]) == 2
    err = capsys.readouterr().err
    assert "Unknown measure 'efective_rank'" in err and "Did you mean 'effective_rank'" in err


def test_adapters_install_only_inside_the_package(tmp_path):
    import complexity_zoo.adapters as adapters

    assert Path(adapters.__file__).resolve().parent == REPO / "adapters"
    # Ours must not leak as a top-level package (asked from a neutral folder, as a user would).
    code = "import importlib.util as u; s = u.find_spec('adapters'); print(s.origin if s else None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert not out.stdout.strip().startswith(str(REPO))


def test_import_is_light_and_console_script_runs(tmp_path):
    code = ("import sys, complexity_zoo; "
            "heavy = {'transformers', 'timm', 'devinterp', 'dask', 'lightning', 'matplotlib'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "[]"
    script = Path(sys.executable).parent / "complexity-zoo"
    res = subprocess.run([str(script), "measures", "--short"], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 0 and "effective_rank" in res.stdout


def test_report_command_writes_tables_and_a_figure(tmp_path, trajectory):
    run = trajectory.save(tmp_path / "run")
    out = tmp_path / "res.nc"
    assert main(["compare", str(run), "--measures", "l2,effective_rank", "--out", str(out), "--quiet"]) == 0
    assert main(["report", str(out), "--kind", "values", "--md", str(tmp_path / "v.md"),
                 "--png", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "v.md").read_text().startswith("| run | step | measure")
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert main(["report", str(out), "--tex", str(tmp_path / "c.tex"), "--target", "train_loss"]) == 0
    assert r"\begin{tabular}" in (tmp_path / "c.tex").read_text()


def test_compare_command_fails_when_every_cell_failed(tmp_path, trajectory, capsys):
    run = trajectory.save(tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    meta["model"]["kwargs"] = {"hidden": 3}  # a factory it takes, an architecture the weights do not fit
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.warns(cz.errors.MeasureFailedWarning):
        code = main(["compare", str(run), "--measures", "l2", "--out", str(tmp_path / "x.nc"), "--quiet"])
    assert code == 1 and "every cell failed" in capsys.readouterr().err
