"""The LLC estimator against theory and against devinterp, over many seeds.

    python examples/llc_checks.py [--seeds 12]

The tests (tests/test_llc.py) run each check at one seed; this gives the spread over seeds,
which one seed's chain spread underestimates. Three checks:
- regular: least squares with d = 5 at its minimum. Expected: equipartition in the localized
  Gaussian, (d/2) n_beta h / (n_beta h + γ) with h = 2, times the SGLD step's variance
  inflation 1 / (1 - a/2), a = lr (n_beta h + γ) / 2 (exact for this Gaussian).
- singular: y = a b x at a = b = 0, λ = 1/2 with multiplicity 2; at finite n_beta about
  λ - (m - 1) / ln(n_beta).
- agreement: backend="torch" vs backend="devinterp", same settings, devinterp's conventions.
About 4 minutes on 2 CPU cores (the devinterp runs need the devinterp extra).
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.testing import ProductModel, least_squares


def over_seeds(model: nn.Module, data: cz.Data, seeds: int, **settings) -> tuple[float, float]:
    """Mean of the estimate over seeds 0..seeds-1, and its standard error."""
    values = [cz.get_measure("llc", seed=s, **settings)(model, data).value for s in range(seeds)]
    return float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(seeds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=12)
    args = parser.parse_args()

    model, data = least_squares()
    kw = dict(lr=3e-4, localization=1.0, batch_size=500, num_chains=4, num_draws=1500, num_burnin_steps=300)
    nb, h, gamma = 500 / math.log(500), 2.0, 1.0
    a = kw["lr"] * (nb * h + gamma) / 2
    expected = 5 / 2 * nb * h / (nb * h + gamma) / (1 - a / 2)
    mean, se = over_seeds(model, data, args.seeds, **kw)
    print(f"regular, d = 5: {mean:.3f} ± {se:.3f} (expected {expected:.3f}; d/2 = 2.5)")

    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 1, generator=g)
    product_data = cz.Data.from_tensors(train=(x, 0.5 * torch.randn(1000, 1, generator=g)), loss="mse")
    kw = dict(lr=1e-3, localization=1.0, batch_size=1000, num_chains=4, num_draws=3000, num_burnin_steps=300)
    mean, se = over_seeds(ProductModel(), product_data, args.seeds, **kw)
    print(f"singular, y = abx: {mean:.3f} ± {se:.3f} (expected about {0.5 - 1 / math.log(1000 / math.log(1000)):.3f};"
          " d/2 = 1)")

    model, data = least_squares(n=400, seed=3)
    kw = dict(lr=1e-3, localization=100.0, batch_size=400, num_chains=4, num_draws=300, num_burnin_steps=50,
              include_burnin=True)
    ours = over_seeds(model, data, args.seeds, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = over_seeds(model, data, args.seeds, backend="devinterp", **kw)
    print(f"agreement: torch {ours[0]:.3f} ± {ours[1]:.3f}, devinterp {ref[0]:.3f} ± {ref[1]:.3f}, "
          f"difference {(ours[0] - ref[0]) / math.hypot(ours[1], ref[1]):.2f} standard errors")


if __name__ == "__main__":
    main()
