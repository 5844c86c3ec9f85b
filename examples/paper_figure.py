"""The paper's figure: complexity measures through grokking, with and without regularization.

    python examples/paper_figure.py                       # cpu-small vs cpu-small-noreg, CPU, minutes
    python examples/paper_figure.py --paper --device cuda  # paper-add-ours vs paper-add-noreg (GPU, hours)

Trains the runs (resuming what exists), compares every measure, and writes the figure and the
correlation table (and the rest of the report) under --out.
"""

from __future__ import annotations

import argparse

from complexity_zoo.tasks.report import grokking_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="the paper's add presets instead of cpu-small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="figures/paper_figure")
    parser.add_argument("--max-steps", type=int, default=25, help="checkpoints compared per run")
    args = parser.parse_args()
    presets = ("paper-add-ours", "paper-add-noreg") if args.paper else ("cpu-small", "cpu-small-noreg")
    result, written = grokking_report(args.out, presets, device=args.device, max_steps=args.max_steps)
    for path in written:
        print(f"wrote {path}")
    print(result.correlations().round(3).to_string(index=False))


if __name__ == "__main__":
    main()
