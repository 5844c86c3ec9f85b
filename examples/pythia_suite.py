"""A public checkpoint suite (Pythia-style: one Hub branch per checkpoint) through complexity_zoo.

Picks ``--steps`` log-spaced revisions of those ``--revisions`` matches, measures each checkpoint
with weight-only measures (``l2``, ``stable_rank``, ``log_prod_spectral``) and data measures
(``hessian_trace``, ``pacbayes_flatness``, ``inverse_margin``, ``lmn``) on next-token data,
records the suite's evaluation loss at each checkpoint, and correlates every measure with it
across checkpoints (``Comparison.correlations("test_loss")``).

Offline (what the tests run): ``--demo DIR`` first writes a tiny GPT-NeoX suite (Pythia's
architecture: rotary embeddings, parallel attention) as branches step0 ... step256 of a Hub
cache in DIR/hub with ``complexity_zoo.testing.hub_cache_suite``, trained on a synthetic token
stream whose held-out part is the evaluation data, and reads it with ``HF_HUB_OFFLINE=1``::

    python examples/pythia_suite.py --demo out/pythia_demo --quick

Online (not testable in CI: it downloads), e.g. 12 of Pythia-14m's 154 revisions, each fetched
when it is measured and deleted afterwards with ``--delete-fetched``::

    python examples/pythia_suite.py --repo EleutherAI/pythia-14m --steps 12 --tokens tokens.safetensors

``--tokens`` is a safetensors file of ``train.input_ids`` and ``test.input_ids`` (N, T) in the
model's vocabulary (as ``complexity-zoo compare --data`` takes it). Without it the online path
tokenizes a toy corpus (this library's own module docstrings) with the repository's tokenizer:
enough to see the pipeline work, not a measurement of Pythia.

Writes ``suite.nc`` (the Comparison), ``values.csv`` and ``correlations.csv`` under ``--out``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import complexity_zoo as cz
from complexity_zoo._steps import log_spaced
from complexity_zoo.adapters import huggingface as hf

DEMO_REPO = "demo/tiny-pythia"
DEMO_STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256]


def measures(quick: bool) -> list:
    """Weight-only measures, then data measures (smaller searches with ``quick``)."""
    small = quick
    return ["l2", "stable_rank", "log_prod_spectral",
            ("hessian_trace", {"num_probes": 4 if small else 20}),
            ("pacbayes_flatness", {"search_depth": 5 if small else 15, "montecarlo_samples": 2 if small else 10}),
            "inverse_margin",
            ("lmn", {"num_samples": 8 if small else 64})]


def toy_tokens(repo: str, n: int = 48, seq: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A toy corpus for the online path: this library's module docstrings, tokenized."""
    import transformers

    import complexity_zoo

    root = Path(complexity_zoo.__file__).parent
    text = "\n\n".join(p.read_text().split('"""')[1] for p in sorted(root.rglob("*.py")) if '"""' in p.read_text())
    tok = transformers.AutoTokenizer.from_pretrained(repo)
    ids = torch.tensor(tok(text)["input_ids"][: n * seq]).reshape(-1, seq)
    half = len(ids) * 3 // 4
    return ids[:half], ids[half:]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", default="EleutherAI/pythia-14m")
    p.add_argument("--revisions", default="step*", help="glob on the repository's branches")
    p.add_argument("--steps", type=int, default=12, help="how many log-spaced revisions to measure")
    p.add_argument("--tokens", default=None, help="safetensors file of train.input_ids and test.input_ids")
    p.add_argument("--demo", metavar="DIR", default=None, help="build a tiny offline suite in DIR and use it")
    p.add_argument("--delete-fetched", action="store_true", help="delete each fetched revision once read")
    p.add_argument("--quick", action="store_true", help="smaller searches and samples")
    p.add_argument("--out", default=None, help="results folder (default: --demo DIR, else pythia_out)")
    args = p.parse_args(argv)

    cache_dir = None
    if args.demo:
        from complexity_zoo.testing import hub_cache_suite, lm_tokens

        os.environ["HF_HUB_OFFLINE"] = "1"
        cache_dir = Path(args.demo) / "hub"
        args.repo = DEMO_REPO
        if not (cache_dir / ("models--" + DEMO_REPO.replace("/", "--"))).is_dir():
            hub_cache_suite(cache_dir, DEMO_REPO, DEMO_STEPS, arch="gpt_neox")
        train = lm_tokens(64, 16, 100, seed=0)  # the suite's own training stream (hub_cache_suite's default)
        test = lm_tokens(32, 16, 100, seed=1)  # held out: the same process, other draws
    elif args.tokens:
        data = cz.Data.from_file(args.tokens)
        train, test = data.train[0], data.test[0]
    else:
        train, test = toy_tokens(args.repo)
    data = hf.lm_data(train, test, batch_size=16)
    out = Path(args.out or args.demo or "pythia_out")
    out.mkdir(parents=True, exist_ok=True)

    suite = hf.load_trajectory(args.repo, revisions=args.revisions, keep=not args.delete_fetched,
                               cache_dir=cache_dir)
    steps = log_spaced(suite.steps, args.steps)
    print(f"{args.repo}: {len(suite.steps)} revisions match {args.revisions!r}; measuring steps {steps}")
    run = suite.subset(steps)
    for step in steps:  # the suite's evaluation loss at each checkpoint
        scores = data.evaluate(run.model_at(step), "test")
        run.checkpoint(step).metrics.update(test_loss=scores["loss"], test_acc=scores["acc"])
    result = cz.compare(run, measures(args.quick), data=data, progress=False)
    result.save(out / "suite.nc")
    result.export(out / "values.csv", kind="values")
    table = result.correlations("test_loss", methods=("spearman",))
    table.to_csv(out / "correlations.csv", index=False)
    print(table[["measure", "n", "r", "r_diff", "p"]].round(3).to_string(index=False))
    return out


if __name__ == "__main__":
    main()
