"""The registry: lookup, presets, errors, optional dependencies and entry-point plugins."""

from __future__ import annotations

import warnings

import pytest

import complexity_zoo as cz
from complexity_zoo import registry
from complexity_zoo.errors import (
    DuplicateMeasureError,
    MissingDependencyError,
    PluginWarning,
    UnknownMeasureError,
    UnknownSettingError,
)
from complexity_zoo.testing import check_measure


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownMeasureError, match="Did you mean 'effective_rank'"):
        cz.get_measure("efective_rank")
    with pytest.raises(KeyError):  # still a KeyError for callers that catch the builtin
        cz.get_measure("no_such_measure_at_all")


def test_unknown_setting_lists_the_valid_ones():
    with pytest.raises(UnknownSettingError, match="Its settings are: compressor"):
        cz.get_measure("naive_compression", level=3)
    with pytest.raises(TypeError):
        cz.get_measure("l2", anything=1)


def test_registering_a_name_twice_is_an_error(scratch_registry):
    @cz.register_measure("test_twice")
    class First(cz.Measure):
        """First."""

        def compute(self, model, data=None):
            return 1.0

    with pytest.raises(DuplicateMeasureError, match="already registered"):

        @cz.register_measure("test_twice")
        class Second(cz.Measure):
            """Second."""

            def compute(self, model, data=None):
                return 2.0


def test_decorator_returns_the_class_and_presets_apply(scratch_registry):
    class Scaled(cz.Measure):
        """Parameter count times a factor."""

        factor: float = 1.0
        offset: float = 0.0
        presets = {"double": {"factor": 2.0}}

        def compute(self, model, data=None):
            return self.factor * sum(p.numel() for p in model.parameters()) + self.offset

    assert cz.register_measure("test_scaled")(Scaled) is Scaled
    m = cz.get_measure("test_scaled.double", offset=1.0)
    assert (m.factor, m.offset) == (2.0, 1.0)
    with pytest.raises(UnknownMeasureError, match="test_scaled.double"):
        cz.get_measure("test_scaled.triple")
    row = cz.list_measures("test_sc*").iloc[0]
    assert (row["name"], row["presets"], row["summary"]) == ("test_scaled", "double", "Parameter count times a factor.")
    check_measure("test_scaled")


def test_missing_dependency_names_the_extra(scratch_registry, model_and_data):
    @cz.register_measure("test_needs_extra")
    class NeedsExtra(cz.Measure):
        """Needs a package that is not installed."""

        requires = ("zoo_module_that_does_not_exist",)
        extra = "devinterp"

        def compute(self, model, data=None):
            return 0.0

    table = cz.list_measures("test_needs_extra")
    assert not table["available"].iloc[0]
    with pytest.raises(MissingDependencyError, match=r"complexity-zoo\[devinterp\]"):
        cz.get_measure("test_needs_extra")(model_and_data[0])


def test_list_measures_columns():
    table = cz.list_measures()
    assert list(table.columns) == [
        "name", "family", "unit", "needs_data", "needs_init", "tensors_only", "causal_lm", "stochastic", "available",
        "presets", "summary"]
    assert {"l2", "param_count", "effective_rank", "spectral_entropy", "stable_rank",
            "naive_compression"} <= set(table["name"])
    assert table.set_index("name").loc["naive_compression", "unit"] == "bits"
    assert table.set_index("name").loc["stable_rank", "tensors_only"]
    assert not table.set_index("name").loc["path_norm", "tensors_only"]
    assert not table.set_index("name").loc["path_norm", "causal_lm"] and table.set_index("name").loc["lmn", "causal_lm"]


def test_installed_plugin_registers_through_its_entry_point(model_and_data):
    """tests/plugin_dist is a real distribution that `make test` pip-installs."""
    from importlib import metadata

    try:
        metadata.distribution("zoo-toy-plugin")
    except metadata.PackageNotFoundError:
        pytest.fail("zoo-toy-plugin is not installed: run `make test`, which installs tests/plugin_dist")
    measure = cz.get_measure("toy_max_abs")
    model = model_and_data[0]
    expected = max(float(p.detach().abs().max()) for p in model.parameters())
    assert measure(model).value == expected
    assert "toy_max_abs" in set(cz.list_measures()["name"])
    check_measure("toy_max_abs")


def test_broken_plugin_warns_instead_of_crashing(tmp_path, monkeypatch):
    """A distribution whose entry point fails to import: a PluginWarning, and the rest works."""
    (tmp_path / "zoo_broken_plugin.py").write_text("raise RuntimeError('plugin bug')\n")
    info = tmp_path / "zoo_broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[complexity_zoo.measures]\nbroken_one = zoo_broken_plugin:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded_plugins", set(registry._loaded_plugins))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = cz.list_measures()
    assert "l2" in set(table["name"])
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert len(messages) == 1 and "broken_one" in messages[0] and "plugin bug" in messages[0]
