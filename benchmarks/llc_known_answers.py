"""devinterp's normal-crossing known-answer cases through both LLC backends at the same settings
(10 chains x 5000 draws, full batch of 1000, γ 0, n_beta = n / ln n): lr 4e-4 for the regular case
[0, 1] beside SGLD's exact expected estimate, lr 2e-4 (devinterp's) for the singular ones.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/llc_known_answers.py   # ~12 min on 2 cores

Prints value, standard error over chains and the chains' sd (devinterp's test band is ± 2 sd).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_llc_known_answers import N, Polynomial, normal_crossing_data, sgld_expected_estimate  # noqa: E402

import complexity_zoo as cz  # noqa: E402

CASES = [([0, 1], 4e-4, 0.5), ([1, 1], 2e-4, 0.5), ([0, 2], 2e-4, 0.25), ([1, 2], 2e-4, 0.25), ([2, 2], 2e-4, 0.25),
         ([0, 3], 2e-4, 1 / 6), ([1, 3], 2e-4, 1 / 6), ([2, 3], 2e-4, 1 / 6), ([3, 3], 2e-4, 1 / 6)]

if __name__ == "__main__":
    x, y, data = normal_crossing_data()
    n_beta = N / math.log(N)
    print(f"[0, 1] SGLD's exact expected estimate at lr 4e-4: {sgld_expected_estimate(x, y, 4e-4, n_beta, 5000):.4f}")
    for powers, lr, truth in CASES:
        for backend in ("torch", "devinterp"):
            r = cz.get_measure("llc", lr=lr, localization=0.0, n_beta=n_beta, num_chains=10, num_draws=5000,
                               batch_size=N, seed=42, backend=backend)(Polynomial(powers), data)
            print(f"{powers} lr {lr:g} truth {truth:.3f} {backend:9s} {r.value:.4f} ± {r.stderr:.4f} "
                  f"(chain sd {r.stderr * math.sqrt(10):.4f})", flush=True)
