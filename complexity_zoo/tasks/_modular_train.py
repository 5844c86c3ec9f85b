"""Training on the modular task: AdamW, the paper's regularizers, a resumable run folder.

The loop follows the authors' ``main.py`` (DeMoss et al. 2024): AdamW (lr 1e-3, betas
(0.9, 0.98), eps 1e-8, decoupled weight decay on every parameter), minibatches of 512 drawn
from a fresh permutation every epoch (the last one smaller), the gradient taken at
theta + N(0, sigma^2) when weight noise is on, and loss = CE + c * spectral entropy.
Differences, on purpose: the cross-entropy is not clipped at 1e-9 (the authors clip the
probabilities, which matters only when a label's probability is below 1e-9); metrics are
the loss and accuracy over the full train and test splits; the batch is
``min(batch_size, n_train)`` (the authors use ``min(512, n_train // 2)``, which differs only
for tiny training sets).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .._threads import check_threads, choose_threads, model_work, using_threads
from ..errors import CheckpointError, InvalidSettingError
from ..regularizers import spectral_entropy, weight_noise
from ..trajectory import RunWriter, factory_from_spec

MODELS = {"transformer": "complexity_zoo.tasks.modular:transformer",
          "mlp": "complexity_zoo.tasks.modular:mlp"}
RESUME_FILE = "resume.pt"
CONFIG_FILE = "train_config.json"
# Settings that may change when a run is resumed (they do not change what is computed,
# or, for epochs, only extend it).
_RESUMABLE_CHANGES = ("epochs", "device")


def geometric_epochs(epochs: int, base: float = 1.3) -> list[int]:
    """The paper's logging epochs: int(base**n) for n = 0..int(log(epochs)/log(base)), deduplicated.

    33 values for 10^4 epochs. (The authors test the 0-based loop index after the epoch ran,
    so their 'epoch e' is after e + 1 epochs; here e means e completed epochs.)
    """
    if epochs < 1:
        return []
    k = int(math.log(epochs) / math.log(base))
    return sorted({int(base**n) for n in range(k + 1)} & set(range(1, epochs + 1)))


def checkpoint_steps(
    schedule: str | Sequence[int], total_steps: int, steps_per_epoch: int, epochs: int
) -> list[int]:
    """Optimizer steps at which to checkpoint: always 0 and ``total_steps``, plus the schedule.

    ``"every:N"``: every N steps. ``"geometric"``: the ends of the paper's epochs
    int(1.3**n) (:func:`geometric_epochs`). A sequence of ints: those steps.
    """
    steps = {0, total_steps}
    if isinstance(schedule, str) and schedule == "geometric":
        steps |= {e * steps_per_epoch for e in geometric_epochs(epochs)}
    elif isinstance(schedule, str) and schedule.startswith("every:"):
        try:
            n = int(schedule.partition(":")[2])
        except ValueError:
            n = 0
        if n < 1:
            raise InvalidSettingError(f"checkpoints='every:N' needs a positive integer N; got {schedule!r}.")
        steps |= set(range(0, total_steps + 1, n))
    elif not isinstance(schedule, str) and isinstance(schedule, Sequence):
        bad = [s for s in schedule if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad:
            raise InvalidSettingError(f"checkpoint steps must be non-negative integers; got {bad}.")
        steps |= {s for s in schedule if s <= total_steps}
    else:
        raise InvalidSettingError(
            f"The 'checkpoints' schedule must be 'geometric', 'every:N' or a list of steps; "
            f"got {schedule!r} instead."
        )
    return sorted(steps)


def _check_settings(cfg: dict) -> None:
    def positive(name: str, integer: bool) -> None:
        v = cfg[name]
        ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
        if not ok or v <= 0 or v != v:
            kind = "a positive integer" if integer else "a positive number"
            raise InvalidSettingError(f"train: '{name}' must be {kind}; got {v!r}.")

    for name in ("epochs", "batch_size"):
        positive(name, True)
    for name in ("lr", "eps"):
        positive(name, False)
    for name in ("weight_decay", "spectral_penalty", "noise_std"):
        v = cfg[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or math.isinf(v):
            raise InvalidSettingError(f"train: '{name}' must be a finite number >= 0; got {v!r}.")
    b = cfg["betas"]
    if len(b) != 2 or not all(0 <= x < 1 for x in b):
        raise InvalidSettingError(f"train: 'betas' must be two numbers in [0, 1); got {b!r}.")
    if cfg["model"] not in MODELS:
        raise InvalidSettingError(
            f"train: 'model' must be one of {list(MODELS)}; got {cfg['model']!r} instead."
        )


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidSettingError(
            f"train: 'device' must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}."
        ) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSettingError("train: device='cuda' was asked for but CUDA is not available here.")
    return dev


def _prepare_folder(root: Path, cfg: dict, resume: bool, overwrite: bool) -> dict | None:
    """Check the folder against resume/overwrite; return the resume state if continuing."""
    has_run = (root / "run.json").exists()
    if has_run and resume:
        state_path = root / RESUME_FILE
        if not state_path.is_file():
            raise CheckpointError(f"{str(root)!r} holds a run but no {RESUME_FILE}; it cannot be resumed.")
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        old = json.loads(state["config"])
        diff = {k: (old.get(k), cfg[k]) for k in cfg
                if k not in _RESUMABLE_CHANGES and old.get(k) != cfg[k]}
        if diff:
            raise InvalidSettingError(
                f"train(resume=True): the run in {str(root)!r} was trained with other settings "
                f"(setting: (recorded, now)) {diff}. Use the recorded settings or another folder."
            )
        return state
    if has_run and not overwrite:
        raise InvalidSettingError(
            f"{str(root)!r} already holds a run; pass resume=True to continue it or "
            f"overwrite=True to start again."
        )
    if has_run:  # overwrite: remove what an earlier run of ours left, nothing else
        for f in (root / "checkpoints").glob("step_*.safetensors"):
            f.unlink()
        for name in (RESUME_FILE, CONFIG_FILE):
            (root / name).unlink(missing_ok=True)
    return None


def train(
    out: str | os.PathLike,
    *,
    p: int = 113,
    op: str = "+",
    train_frac: float = 0.3,
    data_seed: int | None = None,
    model: str = "transformer",
    model_kwargs: dict | None = None,
    epochs: int = 10_000,
    batch_size: int = 512,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-8,
    weight_decay: float = 1.0,
    spectral_penalty: float = 0.0,
    noise_std: float = 0.0,
    checkpoints: str | Sequence[int] = "geometric",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[int, dict], None] | None = None,
    threads: int | None = None,
) -> Path:
    """Train a model on ``dataset(p, op, train_frac, data_seed)`` and write a run folder.

    Defaults are the paper's (DeMoss et al. 2024): AdamW lr 1e-3, betas (0.9, 0.98), eps
    1e-8, batch 512 reshuffled each epoch. ``weight_decay`` is AdamW's decoupled decay (1.0
    in the paper's regularized runs); ``spectral_penalty`` multiplies
    :func:`~complexity_zoo.regularizers.spectral_entropy` in the loss (paper: 0.1);
    ``noise_std`` takes each gradient at theta + N(0, noise_std^2) (paper: 1e-2 add/mul,
    1e-3 sub/div). ``model`` is ``"transformer"`` or ``"mlp"``, built with
    ``p`` and ``model_kwargs``. ``step`` counts optimizer steps.

    At every checkpoint (``"geometric"``: the paper's epochs int(1.3**n); ``"every:N"``:
    every N steps; or a list of steps; always step 0 and the last step) the train/test loss
    and accuracy over the full splits and the epoch are logged, and the weights written to
    ``out`` (``run.json``, ``metrics.csv``, ``checkpoints/``), with ``train_config.json`` and
    ``resume.pt`` (model, optimizer, RNG states). ``resume=True`` continues such a folder
    (the settings must match; ``epochs`` may grow); ``overwrite=True`` starts it again.
    ``seed`` fixes the initialization, the shuffling and the noise (``data_seed``, default
    ``seed``, the split): the same seed gives the same run on the same device (bit for bit
    on the CPU; on CUDA some kernels, e.g. the embedding backward, are nondeterministic
    unless ``torch.use_deterministic_algorithms(True)``).
    ``callback(step, metrics)`` runs after each checkpoint is written; if it raises, the run
    stops and can be resumed from that checkpoint. ``threads``: torch threads while training
    (default: one for a model under 2M parameters, else torch's setting; ``$COMPLEXITY_ZOO_THREADS``
    also sets it; see :mod:`complexity_zoo._threads`); torch's setting is restored after.
    Returns the run folder.
    """
    from .modular import dataset  # the data module imports this one

    data_seed = seed if data_seed is None else data_seed
    cfg = dict(
        p=p, op=op, train_frac=float(train_frac), data_seed=data_seed, model=model,
        model_kwargs=dict(model_kwargs or {}), epochs=epochs, batch_size=batch_size, lr=lr,
        betas=list(betas), eps=eps, weight_decay=weight_decay, spectral_penalty=spectral_penalty,
        noise_std=noise_std, checkpoints=checkpoints if isinstance(checkpoints, str) else list(checkpoints),
        seed=seed, device=str(device),
    )
    _check_settings(cfg)
    check_threads(threads)
    dev = _device(device)
    data = dataset(p, op, train_frac, data_seed)
    cfg["op"] = data.task["op"]
    if "p" in cfg["model_kwargs"]:
        raise InvalidSettingError("train: give the modulus as p=..., not inside model_kwargs.")
    spec = {"factory": MODELS[model], "kwargs": {"p": p, **cfg["model_kwargs"]}}
    root = Path(out)
    state = _prepare_folder(root, cfg, resume, overwrite)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = factory_from_spec(spec)().to(dev)
        except TypeError as e:
            raise InvalidSettingError(f"train: bad model_kwargs for {model!r}: {e}") from e
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    shuffle_rng = torch.Generator().manual_seed(seed + 1)
    noise_rng = torch.Generator(device=dev).manual_seed(seed + 2)

    n_train = data.n("train")
    bs = min(batch_size, n_train)
    per_epoch = math.ceil(n_train / bs)
    total = epochs * per_epoch
    wanted = set(checkpoint_steps(checkpoints, total, per_epoch, epochs))
    writer = RunWriter(root, model=spec, task=data.task, overwrite=overwrite and state is None)
    (root / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")

    step = 0
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        shuffle_rng.set_state(state["shuffle_rng"])
        noise_rng.set_state(state["noise_rng"])
        step = int(state["step"])

    def checkpoint(epoch_start_rng: torch.Tensor) -> dict:
        net.eval()
        tr = data.evaluate(net, "train", device=dev)
        te = data.evaluate(net, "test", device=dev)
        net.train()
        metrics = {"train_loss": tr["loss"], "train_acc": tr["acc"], "test_loss": te["loss"],
                   "test_acc": te["acc"], "epoch": step / per_epoch}
        writer.write_checkpoint(step, net.state_dict(), metrics)
        # Mid-epoch, resuming must redraw this epoch's permutation: keep the RNG as it was
        # when the epoch began; at an epoch's end, the RNG as it is now.
        rng = shuffle_rng.get_state() if step % per_epoch == 0 else epoch_start_rng
        tmp = root / (RESUME_FILE + ".tmp")
        torch.save({"step": step, "model": net.state_dict(), "optimizer": opt.state_dict(),
                    "shuffle_rng": rng, "noise_rng": noise_rng.get_state(),
                    "config": json.dumps(cfg)}, tmp)
        os.replace(tmp, root / RESUME_FILE)
        bar.set_postfix(train_acc=f"{tr['acc']:.3f}", test_acc=f"{te['acc']:.3f}")
        if callback is not None:
            callback(step, metrics)
        return metrics

    from tqdm.auto import tqdm

    stack = contextlib.ExitStack()
    bar = tqdm(total=total, initial=step, disable=not progress, desc=f"modular {cfg['op']} p={p}",
               unit="step", dynamic_ncols=True)
    try:
        stack.enter_context(using_threads(choose_threads(model_work(net), threads=threads)))
        if step == 0:
            checkpoint(shuffle_rng.get_state())
        net.train()
        while step < total:
            epoch_start_rng = shuffle_rng.get_state()
            batches = data.batches("train", batch_size=bs, device=dev, shuffle=True, generator=shuffle_rng)
            for batch in itertools.islice(batches, step % per_epoch, None):
                opt.zero_grad(set_to_none=True)
                with weight_noise(net, noise_std, noise_rng):
                    loss = data.per_example_loss(net, batch).mean()
                    if spectral_penalty:
                        loss = loss + spectral_penalty * spectral_entropy(net)
                    loss.backward()
                opt.step()
                step += 1
                bar.update(1)
                if step in wanted:
                    checkpoint(epoch_start_rng)
    finally:
        stack.close()
        bar.close()
    return root
