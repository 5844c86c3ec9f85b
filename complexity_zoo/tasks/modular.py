"""Modular arithmetic, the reference task that makes grokking trajectories.

Faithful to DeMoss et al., "The Complexity Dynamics of Grokking" (arXiv 2412.09810; authors'
code github.com/brantondemoss/GrokkingComplexity, ``data_gen.py``, ``model.py``, ``main.py``),
whose tasks are those of Power et al. 2022, "Grokking: Generalization beyond overfitting on
small algorithmic datasets".

- :func:`dataset`: every pair (a, b) once, a seeded random train/test split, inputs as token
  sequences ``[a, op, b, =]`` (op token ``p``, ``=`` token ``p + 1``), label ``a op b mod p``.
- :func:`transformer`, :func:`mlp`: model factories a run folder records by import path.
- :func:`train`: AdamW with the paper's regularizers, written as a run folder.
- :data:`PRESETS`, :func:`from_preset`: the paper's settings and a CPU-sized grokking run.
"""

from __future__ import annotations

import torch

from ..data import Data
from ..errors import DataError
from ._modular_models import MAX_P, ModularMLP, ModularTransformer, mlp, transformer
from ._modular_train import checkpoint_steps, train
from .presets import PRESETS, from_preset

__all__ = [
    "OPS",
    "PRESETS",
    "ModularMLP",
    "ModularTransformer",
    "checkpoint_steps",
    "dataset",
    "from_preset",
    "is_prime",
    "labels",
    "mlp",
    "normalize_op",
    "train",
    "transformer",
]

#: The operations of Power et al. / DeMoss et al., by the name a run folder records.
#: Each maps to its name in the authors' ``data_gen.py``.
OPS: dict[str, str] = {
    "+": "addition",
    "-": "subtraction",
    "*": "multiplication",
    "/": "division",
    "x^2+y^2": "x2_plus_y2",
    "x^2+xy+y^2": "x2_plus_xy_plus_y2",
}
_ALIASES: dict[str, str] = {
    **{name: op for op, name in OPS.items()},
    "add": "+", "sub": "-", "mul": "*", "div": "/",
}


def normalize_op(op: str) -> str:
    """The canonical name of an operation (``"add"`` and ``"addition"`` give ``"+"``)."""
    key = op.replace(" ", "") if isinstance(op, str) else op
    if key in OPS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise DataError(
        f"The 'op' of the modular task must be one of {list(OPS)} (or the aliases "
        f"{sorted(_ALIASES)}). Got {op!r} instead."
    )


# Deterministic Miller-Rabin: these bases decide every n < 3.3e24 (Sorenson & Webster 2015).
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
_MR_LIMIT = 3_317_044_064_679_887_385_961_981


def is_prime(n: int) -> bool:
    """Whether ``n`` is prime: deterministic Miller-Rabin (exact for n < 3.3e24, in microseconds;
    larger n are refused rather than answered by chance)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise DataError(f"is_prime takes an integer; got {n!r}.")
    if n < 2:
        return False
    for q in _MR_BASES:
        if n % q == 0:
            return n == q
    if n >= _MR_LIMIT:
        raise DataError(f"is_prime is exact below {_MR_LIMIT}; got {n}.")
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def labels(a: torch.Tensor, b: torch.Tensor, p: int, op: str) -> torch.Tensor:
    """``a op b mod p`` for integer tensors; division multiplies by b's inverse (p prime)."""
    op = normalize_op(op)
    a, b = a.long(), b.long()
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "*":
        return (a * b) % p
    if op == "/":
        inverse = torch.tensor([0] + [pow(int(v), -1, p) for v in range(1, p)], dtype=torch.long)
        return (a * inverse[b]) % p
    if op == "x^2+y^2":
        return (a * a + b * b) % p
    return (a * a + a * b + b * b) % p  # "x^2+xy+y^2"


def _check(p: int, op: str, train_frac: float, seed: int) -> str:
    op = normalize_op(op)
    if isinstance(p, bool) or not isinstance(p, int):
        raise DataError(f"The modulus 'p' must be an integer; got {p!r}.")
    if p > MAX_P:
        raise DataError(
            f"The modulus p={p} is too large for the modular task: it holds all p^2 pairs "
            f"({p * p:.3g} here) in memory, so p must be at most {MAX_P}."
        )
    if op == "/" and (p < 3 or not is_prime(p)):
        raise DataError(
            f"Division needs a prime modulus p >= 3 so that every b != 0 has an inverse; got p={p}."
        )
    if p < 2:
        raise DataError(f"The modulus 'p' must be at least 2; got {p}.")
    if not isinstance(train_frac, (int, float)) or isinstance(train_frac, bool) or not 0 < train_frac < 1:
        raise DataError(f"'train_frac' must be a number in (0, 1); got {train_frac!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"'seed' must be an integer; got {seed!r}.")
    return op


def dataset(
    p: int = 113,
    op: str = "+",
    train_frac: float = 0.3,
    seed: int = 0,
    *,
    tokens: bool = True,
) -> Data:
    """All pairs (a, b) of ``a op b mod p``, split at random into train and test.

    Every pair appears exactly once (p^2 pairs; p(p - 1) for division, which skips b = 0).
    The split is a ``torch.randperm`` seeded with ``seed``; the first ``int(train_frac * N)``
    examples train, the rest test, as in the authors' ``main.py``. With ``tokens=True``
    inputs are ``[a, p, b, p + 1]`` (vocabulary p + 2: op token p, '=' token p + 1);
    with ``tokens=False`` they are the pairs ``[a, b]``. Labels are in ``range(p)``.
    ``data.task`` records the arguments, so ``tasks.task_data(data.task)`` rebuilds it.
    """
    op = _check(p, op, train_frac, seed)
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    if op == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
    y = labels(a, b, p, op)
    if tokens:
        x = torch.stack([a, torch.full_like(a, p), b, torch.full_like(a, p + 1)], dim=1)
    else:
        x = torch.stack([a, b], dim=1)
    n = x.shape[0]
    n_train = int(train_frac * n)
    if n_train < 1 or n_train >= n:
        raise DataError(
            f"train_frac={train_frac} of {n} examples leaves an empty split ({n_train} train); "
            f"choose a fraction that keeps at least one example on each side."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train_idx, test_idx = order[:n_train], order[n_train:]
    spec = {"name": "modular", "p": p, "op": op, "train_frac": float(train_frac), "seed": seed,
            "tokens": bool(tokens)}
    return Data.from_tensors(
        train=(x[train_idx], y[train_idx]),
        test=(x[test_idx], y[test_idx]),
        loss="cross_entropy",
        task=spec,
    )

