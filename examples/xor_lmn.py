"""Liu, Zhong & Tegmark's XOR experiment: does the linear mapping number see what L2 misses?

    python examples/xor_lmn.py [--out figures/xor_lmn] [--steps 20000]

5-bit XOR (parity), all 32 inputs, an 80/20 split; the paper's 3-layer SiLU MLP (hidden 100),
AdamW lr 1e-3, weight decay 0.2, 20,000 full-batch steps. The modular trainer does not cover
this task, so the loop is plain PyTorch; checkpoints go through Trajectory.from_state_dicts and
compare() like any other run. Writes figure.png, values.csv and correlations.md.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pandas as pd
import torch
from torch import nn

import complexity_zoo as cz


def xor_mlp(hidden: int = 100) -> nn.Module:
    """The paper's 3-layer SiLU MLP on 5 input bits, 2 logits."""
    return nn.Sequential(nn.Linear(5, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="figures/xor_lmn")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=5)))
    y = (x.sum(1) % 2).long()
    perm = torch.randperm(32)
    tr, te = perm[:26], perm[26:]
    data = cz.Data.from_tensors(train=(x[tr], y[tr]), test=(x[te], y[te]))
    model = xor_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.2)
    states, rows = {}, []
    for step in range(args.steps + 1):
        if step % args.every == 0:
            states[step] = {k: v.clone() for k, v in model.state_dict().items()}
            tr_ev, te_ev = data.evaluate(model, "train"), data.evaluate(model, "test")
            rows.append({"step": step, "train_loss": tr_ev["loss"], "train_acc": tr_ev["acc"],
                         "test_loss": te_ev["loss"], "test_acc": te_ev["acc"]})
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[tr]), y[tr]).backward()
        opt.step()
    run = cz.Trajectory.from_state_dicts(states, model=xor_mlp, metrics=pd.DataFrame(rows), name="xor5")
    result = cz.compare(run, ["l2", ("lmn", {"num_samples": 26})], data=data)
    out = Path(args.out)
    result.plot(out / "figure.png", title="5-bit XOR: LMN vs L2")
    result.export(out / "values.csv", kind="values")
    result.export(out / "correlations.md")
    print(result.correlations().round(3).to_string(index=False))
    print(result.transitions().round(3).to_string(index=False))


if __name__ == "__main__":
    main()
