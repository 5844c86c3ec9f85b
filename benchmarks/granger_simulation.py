"""Type-I of ``correlate(...)["granger_p"]`` on the noise models' residuals: two independent
series (trend plus noise of one family each) per draw; the share of draws with granger_p < 0.05.

    OMP_NUM_THREADS=1 python benchmarks/granger_simulation.py --draws 100
"""

from __future__ import annotations

import argparse

import numpy as np

from complexity_zoo.analysis.correlation import correlate_batch
from complexity_zoo.analysis.simulation import pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100)
    args = parser.parse_args()
    rates = []
    for fam in ("white", "ar1", "ou", "brownian", "t3"):
        for sch in ("even", "geometric", "random"):
            for n in (30, 60):
                x, y, s = pairs(fam, sch, n, args.draws, seed=n + 7)
                out = correlate_batch(x, y, s, granger=True)
                p = np.asarray(out["granger_p"], float)
                ok = np.isfinite(p)
                rates.append(float(np.mean(p[ok] < 0.05)))
                print(f"granger type-I {fam} {sch} n={n}: {rates[-1]:.3f} (of {ok.sum()})", flush=True)
    print(f"mean {np.mean(rates):.3f}, max {np.max(rates):.3f} over {len(rates)} cells")


if __name__ == "__main__":
    main()
