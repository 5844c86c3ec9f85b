"""Tables for papers: LaTeX (booktabs, ready to \\input), Markdown and CSV, chosen by suffix."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from ..errors import InvalidSettingError

SUFFIXES = (".tex", ".md", ".csv")
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def fmt(value: object) -> str:
    """Numbers with 3 significant digits (integers as they are); text unchanged."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "--"
        if value == int(value) and abs(value) < 1e7:
            return str(int(value))
        return f"{value:.3g}"
    return str(value)


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table environment with caption and label."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(latex_escape(fmt(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_markdown(df: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "| " + " | ".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + " |"
    body = ["| " + " | ".join(fmt(v).replace("|", r"\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_table(df: pd.DataFrame, path: str | os.PathLike, caption: str, label: str) -> Path:
    """Write ``df`` in the format that the suffix of ``path`` names.

    The table's notes (``df.attrs`` "hypotheses" and "p_family") join the LaTeX caption and
    follow a Markdown table as a paragraph."""
    notes = [str(df.attrs[k]) for k in ("hypotheses", "p_family") if df.attrs.get(k)]
    if notes:
        caption = " ".join([caption.rstrip(), *(n[0].upper() + n[1:] + "." for n in notes)])
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise InvalidSettingError(f"export() writes {SUFFIXES}; got {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".md":
        path.write_text(to_markdown(df) + ("\n" + caption + "\n" if notes else ""))
    else:
        path.write_text(to_latex(df, caption, label))
    return path


def correlations_wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, measure, method): r on levels and on the innovations, each with its
    95% interval, the Holm-adjusted p of the innovations (blank where the noise model does not
    fit: the flag says so), the noise models and the caveat flags."""
    rows = []
    for rec in table.itertuples(index=False):
        flags = [f for f, on in (("signs disagree", rec.signs_disagree), ("shared curvature", rec.shared_curvature),
                                 ("noise model does not fit: p unreliable", not rec.p_reliable)) if bool(on)]
        rows.append({
            "run": rec.run, "measure": rec.measure, "method": rec.method, "n": int(rec.n),
            "n_eff": rec.n_eff,
            "r levels [95% CI]": f"{fmt(rec.r)} [{fmt(rec.ci_low)}, {fmt(rec.ci_high)}]",
            "r innovations [95% CI]": f"{fmt(rec.r_diff)} [{fmt(rec.r_diff_ci_low)}, {fmt(rec.r_diff_ci_high)}]",
            "p innovations (Holm)": rec.p_adjusted if bool(rec.p_reliable) else float("nan"),
            "noise model": rec.noise_model,
            "Granger p": rec.granger_p if bool(rec.granger_reliable) else float("nan"),
            "flags": ", ".join(flags),
        })
    out = pd.DataFrame(rows)
    out.attrs.update(table.attrs)
    if not out.empty and out["run"].nunique() == 1:
        out = out.drop(columns="run")
    if not out.empty and out["method"].nunique() == 1:
        out = out.drop(columns="method")
    return out
