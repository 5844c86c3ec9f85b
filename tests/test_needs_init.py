"""The needs_init fact, lazy discovery of measure families, and a light import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import complexity_zoo as cz
from complexity_zoo import registry
from complexity_zoo.errors import MissingInitError, ModelError
from complexity_zoo.testing import check_measure, mlp, tiny_classifier, tiny_init


def _register_distance():
    @cz.register_measure("test_l1_from_init")
    class L1FromInit(cz.Measure):
        """Σ |θ − θ⁰| over all parameters."""

        needs_init = True

        def compute(self, model, data, init):
            return sum(float((p.detach() - init[n]).abs().sum()) for n, p in model.named_parameters())

    return L1FromInit


def _l1(a, b):
    return sum(float((a[k].detach() - b[k].detach()).abs().sum()) for k in a)


def test_a_needs_init_measure_takes_a_module_or_a_state_dict(scratch_registry):
    _register_distance()
    model, _ = tiny_classifier()
    init = tiny_init()
    m = cz.get_measure("test_l1_from_init")
    expected = _l1(dict(model.named_parameters()), dict(init.named_parameters()))
    assert m(model, init=init).value == pytest.approx(expected)
    assert m(model, init=init.state_dict()).value == pytest.approx(expected)
    with pytest.raises(MissingInitError, match="init="):
        m(model)
    with pytest.raises(ModelError, match="does not fit"):
        m(model, init=mlp(hidden=5))
    assert bool(cz.list_measures("test_l1*")["needs_init"].iloc[0])
    check_measure("test_l1_from_init")


def test_compare_supplies_the_first_checkpoint_or_the_explicit_init(scratch_registry, trajectory, tmp_path):
    _register_distance()
    first = trajectory.checkpoint(trajectory.steps[0]).state_dict()
    result = cz.compare(trajectory, ["test_l1_from_init", "l2"], progress=False, strict=True)
    for step in trajectory.steps:
        expected = _l1(trajectory.checkpoint(step).state_dict(), first)
        got = float(result.dataset["test_l1_from_init"].sel(run="tiny", step=step))
        assert got == pytest.approx(expected, rel=1e-6)
    assert float(result.dataset["test_l1_from_init"].sel(run="tiny").isel(step=0)) == 0.0

    other = {k: torch.zeros_like(v) for k, v in first.items()}
    cache = tmp_path / "cache"
    cz.compare(trajectory, ["test_l1_from_init"], progress=False, cache=str(cache), strict=True)
    trajectory.init = other
    again = cz.compare(trajectory, ["test_l1_from_init"], progress=False, cache=str(cache), strict=True)
    last = trajectory.steps[-1]
    zeros = {k: torch.zeros_like(v) for k, v in first.items()}
    assert float(again.dataset["test_l1_from_init"].sel(run="tiny", step=last)) == pytest.approx(
        _l1(trajectory.checkpoint(last).state_dict(), zeros), rel=1e-6)  # a new init is not a cache hit


def test_import_does_not_load_measure_families():
    code = ("import sys, complexity_zoo; "
            "fams = [m for m in sys.modules if m.startswith('complexity_zoo.measures.') "
            "and not m.rsplit('.', 1)[-1].startswith('_')]; "
            "heavy = {'matplotlib', 'scipy', 'weightwatcher', 'transformers'} & set(sys.modules); "
            "print(fams, sorted(heavy)); complexity_zoo.get_measure('l2'); "
            "print('complexity_zoo.measures.norms' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, second = out.stdout.strip().splitlines()
    assert first == "[] []"
    assert second == "True"


def test_a_new_family_module_is_discovered_without_edits(tmp_path, monkeypatch, scratch_registry):
    from complexity_zoo import measures

    (tmp_path / "zoo_new_family.py").write_text(
        "from complexity_zoo.measure import Measure\n"
        "from complexity_zoo.registry import register_measure\n\n"
        "@register_measure('test_new_family_measure')\n"
        "class New(Measure):\n"
        "    '''Always seven.'''\n\n"
        "    def compute(self, model, data=None):\n"
        "        return 7.0\n"
    )
    monkeypatch.setattr(measures, "__path__", [*measures.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    monkeypatch.delitem(sys.modules, "complexity_zoo.measures.zoo_new_family", raising=False)
    try:
        assert "zoo_new_family" in registry.builtin_modules()
        assert cz.get_measure("test_new_family_measure")(tiny_classifier()[0]).value == 7.0
        assert cz.list_measures("test_new*")["family"].iloc[0] == "zoo_new_family"
    finally:
        sys.modules.pop("complexity_zoo.measures.zoo_new_family", None)
