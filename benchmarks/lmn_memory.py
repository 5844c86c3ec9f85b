"""Peak memory of LMN on a GPT-2-style LM: bounded by ``max_elements`` versus the unbounded path.

    python benchmarks/lmn_memory.py [--vocab 512 --seq 8 --n-embd 32 --n-layer 2 --num-samples 100]
        [--modes bounded,unbounded,git:619ce99]

Each mode runs in its own process and reports the peak resident memory (``ru_maxrss``) above
what the process held after building the model and data, the wall time and the value:
``bounded`` is the default (``max_elements`` = 2**24 outputs per forward), ``unbounded``
``max_elements=None`` (``batch_size // num_points`` pairs per forward, the chunking LMN had before
``max_elements``), ``git:REV`` the lmn.py of a git revision (read with ``git show``), run on a
wrapper that returns the logits tensor, from the same layer (the input of ``transformer.drop``,
i.e. the embeddings). All three measure the same quantity, so their values should agree.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    import torch
    import transformers

    import complexity_zoo as cz

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = transformers.GPT2Config(n_layer=args.n_layer, n_head=max(1, args.n_embd // 32), n_embd=args.n_embd,
                                     vocab_size=args.vocab, n_positions=max(args.seq, 8))
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, args.vocab, (max(args.num_samples, 2) * 2, args.seq))
    data = cz.Data(train=(ids,), loss="causal_lm")
    settings = dict(num_samples=args.num_samples, seed=0)
    if args.mode.startswith("git:"):
        source = subprocess.run(["git", "show", f"{args.mode[4:]}:complexity_zoo/measures/lmn.py"], check=True,
                                capture_output=True, text=True).stdout
        source = source.replace('@register_measure("lmn")', '@register_measure("lmn_at_revision")')
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            absolute = source.replace("from ..", "from complexity_zoo.")
            f.write(absolute.replace("from .", "from complexity_zoo.measures."))
        spec = importlib.util.spec_from_file_location("lmn_at_revision", f.name)
        module = importlib.util.module_from_spec(spec)
        sys.modules["lmn_at_revision"] = module
        spec.loader.exec_module(module)

        class Logits(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x, use_cache=False).logits

        measure, target = module.LinearMappingNumber(layer="inner.transformer.drop", **settings), Logits(model)
    else:
        extra = {"max_elements": None} if args.mode == "unbounded" else {}
        measure, target = cz.get_measure("lmn", layer="transformer.drop", **settings, **extra), model
    base = rss_mb()
    start = time.perf_counter()
    value = measure(target, data).value
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"mode": args.mode, "params": params, "outputs_per_point": args.seq * args.vocab,
                      "baseline_mb": round(base), "peak_mb": round(peak), "peak_above_baseline_mb": round(peak - base),
                      "seconds": round(seconds, 1), "lmn": value}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--seq", type=int, default=8)
    parser.add_argument("--n-embd", type=int, default=32)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--modes", default="bounded,unbounded")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        return child(args)
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--mode", mode, "--vocab", str(args.vocab), "--seq", str(args.seq),
               "--n-embd", str(args.n_embd), "--n-layer", str(args.n_layer), "--num-samples", str(args.num_samples)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        print(out.stdout.strip() or f"{mode}: failed (rc {out.returncode}): {out.stderr.strip()[-400:]}", flush=True)


if __name__ == "__main__":
    main()
