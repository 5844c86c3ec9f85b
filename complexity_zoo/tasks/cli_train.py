"""``complexity-zoo train modular ...``: train a reference task from the command line.

Flags override the preset (``--preset cpu-small``); without a preset they override
``train()``'s defaults, which are the paper's. ``add_train_parser(subparsers)`` adds the
``train`` command to the main parser; its handler is set as ``func``.
"""

from __future__ import annotations

import argparse
import json

from ..errors import InvalidSettingError

# flag dest -> train() keyword, for the flags that map one to one
_DIRECT = ("p", "op", "train_frac", "data_seed", "model", "epochs", "batch_size", "lr",
           "weight_decay", "spectral_penalty", "noise_std", "checkpoints", "seed")
_MODEL_FLAGS = ("n_layers", "d_model", "d_mlp", "d_embed", "d_hidden")


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` (with the task ``modular``) to the ``complexity-zoo`` subcommands."""
    train = subparsers.add_parser("train", help="train a reference task and write a run folder")
    tasks = train.add_subparsers(dest="task", required=True)
    p = tasks.add_parser(
        "modular",
        help="modular arithmetic (DeMoss et al. 2024 / Power et al. 2022)",
        description="Train on a op b mod p; flags override the preset. Presets: paper-{add,sub,"
        "mul,div}[-noreg|-ours], cpu-small, cpu-small-noreg.",
    )
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--preset", default=None, help="named settings, e.g. cpu-small or paper-add-ours")
    p.add_argument("--p", type=int, help="modulus (default 113)")
    p.add_argument("--op", help="+ - * / x^2+y^2 x^2+xy+y^2 (or add, sub, mul, div)")
    p.add_argument("--train-frac", type=float, help="fraction of pairs used for training")
    p.add_argument("--data-seed", type=int, help="seed of the train/test split (default: --seed)")
    p.add_argument("--model", choices=["transformer", "mlp"])
    p.add_argument("--n-layers", type=int, help="transformer layers (paper: 1 add/mul, 2 sub/div)")
    p.add_argument("--d-model", type=int, help="transformer width")
    p.add_argument("--d-mlp", type=int, help="transformer feed-forward width")
    p.add_argument("--d-embed", type=int, help="MLP embedding width")
    p.add_argument("--d-hidden", type=int, help="MLP hidden width")
    p.add_argument("--model-kwargs", type=json.loads, help="more model settings as JSON")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float, help="AdamW decoupled weight decay")
    p.add_argument("--spectral-penalty", type=float, help="coefficient of the spectral entropy (paper 0.1)")
    p.add_argument("--noise-std", type=float, help="Gaussian weight noise std (paper 1e-2 / 1e-3)")
    p.add_argument("--checkpoints", help="'geometric' (paper) or 'every:N' optimizer steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)
    return train


def train_kwargs(args: argparse.Namespace) -> dict:
    """The ``train()`` keyword arguments the parsed flags ask for (preset, then flags)."""
    from .presets import from_preset

    kwargs = from_preset(args.preset) if args.preset else {}
    for name in _DIRECT:
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    model_kwargs = dict(kwargs.get("model_kwargs") or {})
    if args.preset and args.model and args.model != from_preset(args.preset)["model"]:
        model_kwargs = {}  # the preset's sizes belong to its own model
    for name in _MODEL_FLAGS:
        value = getattr(args, name)
        if value is not None:
            model_kwargs[name] = value
    if args.model_kwargs is not None:
        if not isinstance(args.model_kwargs, dict):
            raise InvalidSettingError(f"--model-kwargs must be a JSON object; got {args.model_kwargs!r}.")
        model_kwargs.update(args.model_kwargs)
    if model_kwargs or "model_kwargs" in kwargs:
        kwargs["model_kwargs"] = model_kwargs
    kwargs.update(device=args.device, progress=not args.quiet, resume=args.resume,
                  overwrite=args.overwrite)
    return kwargs


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``complexity-zoo train modular``: train, then print the run folder."""
    from .modular import train

    out = train(args.out, **train_kwargs(args))
    print(f"wrote {out}")
    return 0
