"""Comparison: the result of compare(), an xarray Dataset with dims (run, step), and its errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .errors import (
    ComplexityZooError,
    ComplexityZooWarning,
    InvalidSettingError,
    ResultNotFoundError,
    UnknownMeasureError,
)

ERROR_COLUMNS = ["run", "step", "measure", "error", "message"]


class DroppedRunsWarning(ComplexityZooWarning):
    """run_correlations() left a measure's runs out, or used a value from before a run's last step."""


class Comparison:
    """Measures and metrics over checkpoints, with provenance, uncertainty and failures.

    Each measure is a variable of ``dataset`` (attrs: ``role="measure"``, unit, settings), with
    ``{measure}_stderr`` for stochastic ones, ``{measure}_{diagnostic}`` for sampler
    diagnostics, ``{measure}_extras`` (JSON text per cell) and ``{measure}_seconds``; the runs'
    logged metrics are variables with ``role="metric"``.
    """

    def __init__(self, dataset: xr.Dataset, errors: list[dict] | pd.DataFrame | None = None) -> None:
        self.dataset = dataset
        self._transitions: pd.DataFrame | None = None
        self.errors = pd.DataFrame(errors if errors is not None else [], columns=ERROR_COLUMNS)

    def __repr__(self) -> str:
        return (
            f"Comparison(runs={list(self.runs)}, steps={self.dataset.sizes['step']}, "
            f"measures={self.measures}, errors={len(self.errors)})"
        )

    def _names(self, role: str) -> list[str]:
        return [k for k, v in self.dataset.data_vars.items() if v.attrs.get("role") == role]

    @property
    def measures(self) -> list[str]:
        return self._names("measure")

    @property
    def metrics(self) -> list[str]:
        return self._names("metric")

    @property
    def runs(self) -> list[str]:
        return [str(r) for r in self.dataset["run"].values]

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy table: one row per run, step and measure (value, stderr, unit), NaN kept."""
        frames = []
        for m in self.measures:
            da = self.dataset[m]
            df = da.to_dataframe(name="value").reset_index()[["run", "step", "value"]]
            err = f"{m}_stderr"
            df["stderr"] = (
                self.dataset[err].to_dataframe(name="s")["s"].to_numpy() if err in self.dataset else np.nan
            )
            df.insert(2, "measure", m)
            df["unit"] = da.attrs.get("unit", "")
            frames.append(df)
        columns = ["run", "step", "measure", "value", "stderr", "unit"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    def extras(self, measure: str, step: int, run: str | None = None) -> dict[str, Any]:
        """The extras one cell recorded (per-layer values, traces, chosen settings)."""
        if measure not in self.measures:
            raise UnknownMeasureError(f"No measure {measure!r} here; the measures are {self.measures}.")
        run = run if run is not None else self.runs[0]
        text = str(self.dataset[f"{measure}_extras"].sel(run=run, step=step).item())
        return json.loads(text) if text else {}

    def layers(self, measure: str) -> pd.DataFrame:
        """Per-layer values of ``measure`` as a tidy table (run, step, layer, value)."""
        from .analysis.layers import layers_table

        return layers_table(self.dataset, measure)

    # -- analyses ---------------------------------------------------------------------------
    def _series(self, run: str) -> dict[str, np.ndarray]:
        names = [m for m in self.metrics if m not in ("epoch",)] + self.measures
        return {n: self.dataset[n].sel(run=run).values.astype(float) for n in names}

    def _stderr(self, run: str) -> dict[str, np.ndarray]:
        return {m: self.dataset[f"{m}_stderr"].sel(run=run).values.astype(float)
                for m in self.measures if f"{m}_stderr" in self.dataset}

    def transitions(self) -> pd.DataFrame:
        """Regime changes of every metric and measure, with lead/lag to generalization.

        One row per transition: run, series, kind (memorization, generalization, peak,
        fall_onset, change_point, stage), step, strength, uncertainty (half the interval),
        flag (a caveat: a run still rising at its end, a capped number of change points; for
        a stage its kind: peak, trough or plateau), low and high (an interval for the step),
        significance, lag_steps and lag_fraction relative to the run's generalization step. The
        memorization and generalization intervals include the binomial noise of an accuracy on
        the train/test split given to compare() (when the accuracies are multiples of 1/n), else
        on the number of examples their granularity shows. Computed once per Comparison; every
        method that needs transitions reuses them.
        """
        if self._transitions is None:
            from .analysis.transitions import detect, examples_measured_on, lead_lag

            steps = self.dataset["step"].values.astype(float)
            recorded = {split: json.loads(self.dataset.attrs.get(f"n_{split}", "{}")) for split in ("train", "test")}
            frames = []
            for run in self.runs:
                series = self._series(run)
                n = {f"{split}_acc": examples_measured_on(series[f"{split}_acc"], recorded[split].get(run))
                     for split in ("train", "test") if f"{split}_acc" in series}
                frames.append(detect(steps, series, run, self._stderr(run), n))
            table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
            self._transitions = lead_lag(table, float(steps[0]), float(steps[-1]))
        return self._transitions.copy()

    def correlations(
        self,
        target: str = "test_loss",
        methods: tuple[str, ...] = ("pearson", "spearman", "kendall"),
        window: tuple[float, float] | str | None = None,
        adjust: str = "table",
    ) -> pd.DataFrame:
        """Each measure against ``target`` across checkpoints, per run (analysis.correlation).

        Columns: n; levels (co-trending, an interval only): n_eff, r, ci_low, ci_high;
        innovations (H0: no co-movement beyond each series' trend under its noise model, chosen
        by AIC among analysis.noise_models.MODELS, stderr-weighted where the measure has one):
        n_eff_diff, r_diff and its interval, p, p_adjusted (Holm over the whole table, or per
        run × method with ``adjust="run"``; the family is in ``attrs["p_family"]``),
        p_reliable, noise_model, trend_edf, ljung_box_p; flags signs_disagree and
        shared_curvature; granger_p and granger_reliable. ``window``: (first_step, last_step), or
        "post_memorization" (from each run's memorization step on).
        """
        from .analysis.correlation import METHODS, correlation_table

        if target not in self.dataset:
            raise InvalidSettingError(f"No series {target!r} to correlate with; the metrics are {self.metrics}.")
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise InvalidSettingError(f"Unknown correlation methods {unknown}; choose from {sorted(METHODS)}.")
        steps = self.dataset["step"].values
        masks = {run: np.ones(len(steps), bool) for run in self.runs}
        if window == "post_memorization":
            t = self.transitions()
            mem = t[t["kind"] == "memorization"].set_index("run")["step"]
            masks = {run: steps >= mem.get(run, np.inf) for run in self.runs}
        elif window is not None:
            if isinstance(window, str) or len(window) != 2:
                raise InvalidSettingError(f"window must be (first, last) or 'post_memorization'; got {window!r}.")
            masks = {run: (steps >= window[0]) & (steps <= window[1]) for run in self.runs}
        series = {run: {m: self.dataset[m].sel(run=run).values[masks[run]].astype(float)
                        for m in self.measures if m != target} for run in self.runs}
        targets = {run: self.dataset[target].sel(run=run).values[masks[run]].astype(float) for run in self.runs}
        at = {run: steps[masks[run]].astype(float) for run in self.runs}
        errs = {run: {m: e[masks[run]] for m, e in self._stderr(run).items()} for run in self.runs}
        return correlation_table(series, targets, target, tuple(methods), steps=at, stderr=errs, adjust=adjust)

    def run_correlations(self, hyperparameters: pd.DataFrame | None = None, *, seed: str | None = None,
                         gap: str = "loss") -> pd.DataFrame:
        """The across-runs evaluation table of Jiang et al. 2020 and Dziugaite et al. 2020.

        One row per measure, from its final value in each run against the final generalization
        gap: ``gap="loss"`` test_loss - train_loss, ``"accuracy"`` train_acc - test_acc (Jiang et
        al.'s 0-1 gap). Kendall τ (sign average over all runs), tau-b and its p; with
        ``hyperparameters`` (one row per run, indexed by run): granulated ψ and τ per axis
        (columns psi_{axis}), robust sign-error (mean, worst) and the conditional mutual
        information. A ``seed`` column (named by ``seed``) is not an axis: ψ and the CMI use each
        setting's mean over seeds (measure and gap averaged; a complete grid of settings), and
        sign-error pairs runs with equal seeds across the two settings of an environment.
        ``p`` tests H0 "measure and gap independent across runs" (runs i.i.d.). A measure with
        no finite value in some run is left out of the statistics (its row keeps ``n_runs``);
        one whose last finite value is before a run's last step uses that earlier value. Both
        raise a :class:`DroppedRunsWarning` naming the measure and runs.
        """
        import warnings

        from .analysis.runs import conditional_mutual_information, granulated_kendall, kendall_gap, sign_error

        metrics = {"loss": ("test_loss", "train_loss"), "accuracy": ("train_acc", "test_acc")}
        if gap not in metrics:
            raise InvalidSettingError(f"gap must be 'loss' or 'accuracy'; got {gap!r}.")
        high, low = metrics[gap]
        if len(self.runs) < 3 or not {high, low} <= set(self.metrics):
            raise InvalidSettingError(f"run_correlations() needs 3+ runs with {high} and {low} metrics.")
        last, stale = {}, {}
        for v in self.measures + [high, low]:
            last[v], stale[v] = self._last_finite(v, with_stale=True)
        gaps = last[high] - last[low]
        hp = None if hyperparameters is None else hyperparameters.loc[self.runs].reset_index(drop=True)
        if hp is not None and seed is not None and seed not in hp.columns:
            raise InvalidSettingError(f"seed column {seed!r} is not among the hyperparameters {list(hp.columns)}.")
        rows = []
        for m in self.measures:
            values = last[m]
            finite = np.isfinite(values) & np.isfinite(gaps)
            if stale[m].any():
                warnings.warn(f"run_correlations: {m!r} is not finite at the last step of runs "
                              f"{[r for r, s in zip(self.runs, stale[m]) if s]}; their last finite value is used.",
                              DroppedRunsWarning, stacklevel=2)
            if not finite.all():
                warnings.warn(f"run_correlations: {m!r} left out of the statistics: no finite value (or gap) "
                              f"in runs {[r for r, f in zip(self.runs, finite) if not f]}.",
                              DroppedRunsWarning, stacklevel=2)
                rows.append({"measure": m, "n_runs": int(finite.sum())})
                continue
            k = kendall_gap(values, gaps)
            row = {"measure": m, "n_runs": k["n"], "kendall_tau": k["tau"], "kendall_tau_b": k["tau_b"], "p": k["p"]}
            if hp is not None:
                axes_hp = hp.drop(columns=[seed]) if seed else hp
                x, y, grid = values, gaps, axes_hp
                if seed is not None:  # one point per setting: the mean over its seeds
                    cols = list(axes_hp.columns)
                    means = axes_hp.assign(_x=values, _y=gaps).groupby(cols, sort=True)[["_x", "_y"]].mean()
                    x, y, grid = means["_x"].to_numpy(), means["_y"].to_numpy(), means.index.to_frame(index=False)
                g = granulated_kendall(x, y, grid)
                row["granulated_psi"] = g["psi"]
                row.update({f"psi_{a}": t for a, t in zip(g["axes"]["axis"], g["axes"]["tau"])})
                s = sign_error(values, gaps, hp, seed=seed)
                row.update({"sign_error_mean": s["mean"], "sign_error_worst": s["worst"],
                            "environments": s["environments"]})
                row["cmi"] = conditional_mutual_information(x, y, grid)["cmi"]
            rows.append(row)
        return pd.DataFrame(rows)

    def _last_finite(self, name: str, with_stale: bool = False):
        """Each run's last finite value of a variable (NaN for a run with none); with ``with_stale``
        also a flag per run: that value comes from before the run's last step."""
        values = self.dataset[name].transpose("run", "step").values.astype(float)
        out = np.full(len(values), np.nan)
        stale = np.zeros(len(values), dtype=bool)
        for i, row in enumerate(values):
            fin = np.nonzero(np.isfinite(row))[0]
            if len(fin):
                out[i] = row[fin[-1]]
                stale[i] = fin[-1] != len(row) - 1
        return (out, stale) if with_stale else out

    def bounds(self, n: int | dict[str, int] | None = None, delta: float = 0.05, num_classes: int | None = None,
               union_size: int | None = None) -> pd.DataFrame:
        """Occam, kl and binomial-tail bounds for every measure in bits, at every step.

        Each bound pairs the bits with the training error of the model those bits describe:
        the coarse-grained model's errors that the measure recorded (``kolmogorov``), or the
        trained model's ``train_acc`` metric for a ``lossless`` measure; otherwise the bound is
        NaN and ``errors_of`` says why. ``test_error`` is that same model's. ``n``: training
        examples (default: what the measure or compare() recorded); ``delta`` the confidence;
        ``union_size`` the number of candidates the reported bound was picked from, paid as
        ln(union_size) (analysis.bounds); default: every step it reports (the number of
        checkpoints), so any row of the table may be picked; pass 1 for one step fixed in advance.
        """
        from .analysis.bounds import bounds_table, prefix_free_bits
        from .registry import get_measure

        recorded = json.loads(self.dataset.attrs.get("n_train", "{}"))
        sizes = n if isinstance(n, dict) else {r: (n if n is not None else recorded.get(r)) for r in self.runs}
        columns = ["run", "step", "measure", "bits", "code_bits", "n", "errors_of", "train_error", "train_loss",
                   "test_error"]
        names = json.loads(self.dataset.attrs.get("measures", "{}"))
        rows = []
        for m in [m for m in self.measures if self.dataset[m].attrs.get("unit") == "bits"]:
            try:
                lossless = get_measure(names.get(m, {}).get("name", m)).lossless
            except ComplexityZooError:
                lossless = False
            for run in self.runs:
                for step in self.dataset["step"].values:
                    rows.append({"run": run, "step": int(step), "measure": m,
                                 **self._bound_inputs(m, run, int(step), lossless, sizes.get(run))})
        table = pd.DataFrame(rows, columns=[c for c in columns if c != "code_bits"])
        missing = table[table["n"].isna() & table["bits"].notna()]["run"].unique().tolist()
        if missing:
            raise InvalidSettingError(f"bounds() needs the number of training examples for runs {missing}: pass n=...")
        table.insert(4, "code_bits", [prefix_free_bits(b) if np.isfinite(b) else np.nan for b in table["bits"]])
        classes = num_classes or self.dataset.attrs.get("num_classes")
        chance = 1 - 1 / int(classes) if classes else 1.0
        union = union_size if union_size is not None else max(self.dataset.sizes["step"], 1)
        return bounds_table(table, delta=delta, chance_error=chance, union_size=union)

    def _bound_inputs(self, measure: str, run: str, step: int, lossless: bool, n: int | None) -> dict:
        """The bits of one cell and the errors of the model they describe."""
        cell = self.dataset.sel(run=run, step=step)
        bits = float(cell[measure])
        extras = self.extras(measure, step, run) if f"{measure}_extras" in self.dataset else {}
        if extras.get("coarse_train_error") is not None:
            return {"bits": bits, "n": extras.get("n_train", n), "errors_of": "coarse-grained model (recorded)",
                    "train_error": extras["coarse_train_error"], "train_loss": extras.get("coarse_train_loss"),
                    "test_error": extras.get("coarse_test_error")}
        def metric(name: str) -> float:
            return float(cell[name]) if name in self.dataset else np.nan

        if lossless:
            return {"bits": bits, "n": n, "errors_of": "trained model (lossless code)",
                    "train_error": 1 - metric("train_acc"), "train_loss": metric("train_loss"),
                    "test_error": 1 - metric("test_acc")}
        return {"bits": bits, "n": n, "errors_of": "unknown: no errors recorded for the coded model",
                "train_error": np.nan, "train_loss": np.nan, "test_error": np.nan}

    # -- output -------------------------------------------------------------------------------
    def export(self, path: str | os.PathLike, kind: str = "correlations", caption: str | None = None,
               label: str | None = None, **options: Any) -> Path:
        """Write a table as .tex (booktabs), .md or .csv, chosen by the suffix of ``path``.

        ``kind``: "correlations", "transitions", "bounds" or "values"; ``options`` go to the
        method that makes the table (e.g. ``target=``, ``window=`` for correlations).
        """
        from .analysis.export import correlations_wide, write_table

        makers = {
            "correlations": lambda: correlations_wide(self.correlations(**options)),
            "transitions": lambda: self.transitions(**options),
            "bounds": lambda: self.bounds(**options),
            "values": lambda: self.to_dataframe(),
        }
        if kind not in makers:
            raise InvalidSettingError(f"export kind must be one of {sorted(makers)}; got {kind!r}.")
        table = makers[kind]()
        caption = caption or f"{kind.capitalize()} of {', '.join(self.measures)} ({', '.join(self.runs)})."
        return write_table(table, path, caption, label or f"tab:{kind}")

    def plot(self, path: str | os.PathLike, measures: list[str] | None = None, title: str | None = None) -> Path:
        """Accuracy on top, measures normalized below, log step axis, transitions marked."""
        from .analysis.plot import plot_comparison

        chosen = measures or [m for m in self.measures if np.isfinite(self.dataset[m].values).any()]
        return plot_comparison(self.dataset, chosen, self.transitions(), path, title)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole result (values, metrics, extras, errors, provenance) as netCDF."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds = self.dataset.copy()
        ds.attrs["errors"] = self.errors.to_json(orient="records")
        tmp = path.with_name(path.name + ".tmp")
        try:
            ds.to_netcdf(tmp, engine="netcdf4")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed write leaves no half-written .tmp
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Comparison:
        path = Path(path)
        if not path.is_file():
            raise ResultNotFoundError(f"No saved comparison at {str(path)!r}.")
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
        errors = json.loads(ds.attrs.pop("errors", "[]"))
        for name, var in ds.data_vars.items():  # netCDF gives text back as object arrays
            if var.attrs.get("role") == "extras":
                ds[name] = var.astype(str)
        ds["run"] = ds["run"].astype(str)
        return cls(ds, errors)
