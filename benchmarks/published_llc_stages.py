"""``stages`` on a published LLC series against its published stage boundaries.

The series: the local learning coefficient of the two-layer attention-only language model of
Hoogland et al. ("The developmental landscape of in-context learning", arXiv 2402.02364; TMLR
2025 as "Loss landscape degeneracy drives stagewise development in transformers"), estimated
every 100 steps from 0 to 49,900. The authors' repository (github.com/timaeus-research/icl)
holds it as ``analysis/language/L2W256-llc_1.csv``, a Weights & Biases export (columns "Step",
"... - llc/mean", its __MIN and __MAX). It carries no licence, so it is not copied into this
repository: download it and pass its path.

The paper's stage boundaries for this model (LM1 | LM2 | LM3 | LM4 | LM5): 900, 6,500, 8,500 and
17,700 steps, read off the LLC curve where its slope vanishes or dips to a near-plateau.

    python benchmarks/published_llc_stages.py --csv L2W256-llc_1.csv
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from complexity_zoo.analysis import stages

PUBLISHED = (900.0, 6500.0, 8500.0, 17700.0)


def compare(steps: np.ndarray, values: np.ndarray) -> list[dict]:
    """Each published boundary with the nearest unused boundary ``stages`` found within a
    factor of 1.5 of it (its step, kind, interval, relative error, whether the interval holds the
    published step), then the found boundaries that match none."""
    found = stages(steps, values)
    rows, used = [], set()
    for truth in PUBLISHED:
        near = min((i for i in range(len(found)) if i not in used),
                   key=lambda i: abs(np.log(found[i]["step"] / truth)), default=None)
        if near is None or abs(np.log(found[near]["step"] / truth)) > np.log(1.5):
            rows.append({"published": truth})
            continue
        used.add(near)
        f = found[near]
        rows.append({"published": truth, "found": f["step"], "kind": f["kind"], "low": f["low"], "high": f["high"],
                     "error": f["step"] / truth - 1, "covered": f["low"] <= truth <= f["high"]})
    return rows + [{"published": np.nan, "found": f["step"], "kind": f["kind"], "low": f["low"], "high": f["high"]}
                   for i, f in enumerate(found) if i not in used]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="the W&B export: step in the first column, the LLC in the second")
    args = parser.parse_args()
    table = pd.read_csv(args.csv)
    steps, values = table.iloc[:, 0].to_numpy(float), table.iloc[:, 1].to_numpy(float)
    print(f"{len(steps)} checkpoints, steps {steps[0]:.0f} to {steps[-1]:.0f}")
    print(pd.DataFrame(compare(steps, values)).to_string(index=False, float_format=lambda x: f"{x:.3g}"))


if __name__ == "__main__":
    main()
