"""Slow: benchmarks/zoo.py --quick end to end (MLP, 10M LM, ResNet-18; measures, peers, memory)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"


def test_quick_zoo_writes_the_scale_report(tmp_path):
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path / "work"), "--out", str(out),
                    "--memory-checkpoints", "5"], check=True, timeout=3600)
    report = json.loads((out / "zoo.json").read_text())
    rows = {(r["series"], r["measure"]): r for r in report["rows"]}
    for series in ("mlp-cpu-small", "resnet18", "gpt2-10m"):
        row = rows[(series, "l2")]
        assert row["status"] == "ok" and row["checkpoints"] == 2, row
        assert row["s_per_ckpt"] > 0 and row["peak_rss_mib"] >= row["base_rss_mib"] > 0
    assert rows[("gpt2-10m", "l2")]["params"] > 9e6 and rows[("resnet18", "l2")]["params"] > 1e7
    # every (series, measure) has a status, and a failure or skip says why
    assert all(r["status"] in {"ok", "failed", "skipped", "timeout"} for r in report["rows"])
    assert all(r["error"] for r in report["rows"] if r["status"] != "ok")
    scale = {s["measure"]: s for s in report["scaling"]}
    assert scale["l2"]["sizes"] == 3 and scale["l2"]["hours_1b_x100"] > 0
    text = (out / "zoo.md").read_text()
    assert "## Peers" in text and "WeightWatcher" in text and "devinterp" in text
    assert "## Memory" in text and "largest tensor" in text
    assert (out / "zoo.csv").is_file()
