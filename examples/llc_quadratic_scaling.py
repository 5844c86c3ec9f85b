"""Does the LLC estimate scale like the quadratic network's learning coefficient?

    python examples/llc_quadratic_scaling.py [--out figures/llc_quadratic] [--seed 0]

The check of arXiv 2603.01192 (Grokking via singular learning theory): the network
f(x) = V (W^T x)^2, W in R^{2p x K}, V in R^{p x K}, no biases, on one-hot modular-addition
inputs x = [e_a; e_b] with target e_{(a+b) mod p}, and the loss 1/2 |P (y - f(x))|^2 with P
the centring projection I - 11^T/p over the p outputs (our reading of their P⊥: it makes the
loss per-example, which minibatch SGLD needs). In the generalizing basin its learning
coefficient is K(3p - 1)/2. The authors found SGLD's absolute values unreliable and
validated only that the estimates scale linearly in K and p, so this measures the scaling
exponents: the slope of log λ̂ against log K at p = 53, and against log(3p - 1) at K = 160
(linear scaling: both near 1).

Checkpoints: each (p, K) is trained on half of the p^2 pairs (AdamW, lr 1e-3, weight decay
1, 3,000 full-batch steps) and must reach test accuracy 1 (the generalizing basin; K >= 2p
fits the training set closely). The LLC runs twice: with the authors' SGLD settings
(lr 1e-4, n_beta 30, γ 5, 3 chains, 100 burn-in, 600 draws) and with the setting that
``calibrate_llc`` finds converged on (p, K) = (53, 160) (lr 3e-3, γ 100), applied to every
checkpoint. Minibatch = the whole training half (their batch size is not stated). Writes
scaling.csv. About 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

import complexity_zoo as cz

K_SERIES_P, P_SERIES_K = 53, 160  # the K series runs at p = 53, the p series at K = 160
GRID = [(K_SERIES_P, 120), (K_SERIES_P, 160), (K_SERIES_P, 200), (61, P_SERIES_K), (71, P_SERIES_K)]
SETTINGS = {
    "authors": dict(lr=1e-4, n_beta=30.0, localization=5.0, num_chains=3, num_burnin_steps=100, num_draws=600),
    "calibrated": dict(lr=3e-3, n_beta=30.0, localization=100.0, num_chains=3, num_burnin_steps=100,
                       num_draws=600),
}


class QuadraticNetwork(nn.Module):
    """f(x) = V (W^T x)^2 without biases."""

    def __init__(self, p: int, k: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(2 * p, k) / math.sqrt(2 * p))
        self.V = nn.Parameter(torch.randn(p, k) / math.sqrt(k))

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.W).pow(2) @ self.V.T


def centred_square_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """1/2 |P (y - f(x))|^2 per example, P = I - 11^T/p removing the mean over outputs."""
    r = model(batch[0]) - batch[1]
    return 0.5 * (r - r.mean(1, keepdim=True)).pow(2).sum(1)


def modular_addition(p: int, seed: int) -> cz.Data:
    """All p^2 pairs as [e_a; e_b] -> e_{(a+b) mod p}, split in half at random."""
    a, b = (t.reshape(-1) for t in torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij"))
    one_hot = nn.functional.one_hot
    x = torch.cat([one_hot(a, p), one_hot(b, p)], 1).float()
    y = one_hot((a + b) % p, p).float()
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    train, test = perm[: p * p // 2], perm[p * p // 2 :]
    return cz.Data.from_tensors(train=(x[train], y[train]), test=(x[test], y[test]), loss=centred_square_loss)


def train_generalizing(p: int, k: int, seed: int, steps: int = 3000) -> tuple[nn.Module, cz.Data, float]:
    """A checkpoint in the generalizing basin, its data, and its test accuracy."""
    data = modular_addition(p, seed)
    torch.manual_seed(seed)
    model = QuadraticNetwork(p, k)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0)
    batch = data.tensors("train")
    for _ in range(steps):
        opt.zero_grad()
        centred_square_loss(model, batch).mean().backward()
        opt.step()
    x, y = data.tensors("test")
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y.argmax(1)).float().mean().item()
    return model, data, accuracy


def scaling_table(settings: dict[str, dict], seed: int = 0, grid=GRID) -> pd.DataFrame:
    """One row per (setting, p, K): the estimate, its theory value and diagnostics."""
    rows = []
    for p, k in grid:
        model, data, accuracy = train_generalizing(p, k, seed)
        for name, kw in settings.items():
            r = cz.get_measure("llc", batch_size=data.n("train"), seed=seed, **kw)(model, data)
            rows.append({"setting": name, "p": p, "K": k, "test_acc": accuracy, "llc": r.value,
                         "stderr": r.stderr, "theory": k * (3 * p - 1) / 2, "r_hat": r.diagnostics["r_hat"],
                         "ess_bulk": r.diagnostics["ess_bulk"]})
    return pd.DataFrame(rows)


def exponents(table: pd.DataFrame) -> dict[str, float]:
    """Log-log slopes of the estimate along the K series and the p series of ``GRID``."""
    k_series = table[table["p"] == K_SERIES_P]
    p_series = table[table["K"] == P_SERIES_K]
    return {
        "K": float(np.polyfit(np.log(k_series["K"]), np.log(k_series["llc"]), 1)[0]),
        "p": float(np.polyfit(np.log(3 * p_series["p"] - 1), np.log(p_series["llc"]), 1)[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="figures/llc_quadratic")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = scaling_table(SETTINGS, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "scaling.csv", index=False)
    pd.set_option("display.width", 160)
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    for name, rows in table.groupby("setting", sort=False):
        e = exponents(rows)
        print(f"{name}: exponent in K {e['K']:.2f}, in (3p - 1) {e['p']:.2f} (linear scaling: 1)")


if __name__ == "__main__":
    main()
