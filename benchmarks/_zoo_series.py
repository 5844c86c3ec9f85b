"""The series of benchmarks/zoo.py, built locally in their real formats (no downloads).

Each series is random init plus a few training steps on synthetic data, saved the way its
ecosystem saves it: the cpu-small MLP as a run folder (``complexity_zoo.tasks.modular``), timm
ResNet-18 as ``train.py`` output (``timm.utils.CheckpointSaver`` files + ``update_summary``'s
``summary.csv``), and GPT-2-style causal LMs as ``transformers.Trainer`` output (a real
Trainer, ``save_only_model=True``: ``checkpoint-N/`` with ``model.safetensors``, ``config.json``,
``trainer_state.json``). ``load(name, root)`` returns the adapter's Trajectory and the Data the
data-dependent measures use.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from complexity_zoo.testing import TokenDataset

# Data sizes are fixed per series and recorded in the output.
IMG = dict(size=32, classes=10, n_train=256, n_test=128)
LM = dict(seq=64, n_train=64, n_test=32, batch=8)


@dataclass(frozen=True)
class Series:
    name: str
    kind: str  # "mlp" | "timm" | "hf"
    params: dict


GPT2_10M = dict(vocab_size=8192, n_positions=256, n_embd=320, n_layer=6, n_head=5, bos_token_id=8191,
                eos_token_id=8191)
GPT2_124M = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
SERIES = {
    "mlp-cpu-small": Series("mlp-cpu-small", "mlp", {}),
    "resnet18": Series("resnet18", "timm", {"arch": "resnet18"}),
    "gpt2-10m": Series("gpt2-10m", "hf", GPT2_10M),
    "gpt2-124m": Series("gpt2-124m", "hf", GPT2_124M),
}


def _done(folder: Path, n: int) -> bool:
    marker = folder / "_zoo_built.json"
    return marker.is_file() and json.loads(marker.read_text()) == _stamp(folder.name, n)


def _stamp(name: str, n: int) -> dict:
    return {"checkpoints": n, "params": SERIES[name].params, "version": 1}


def _mark(folder: Path, n: int) -> None:
    (folder / "_zoo_built.json").write_text(json.dumps(_stamp(folder.name, n)))


def build(series: Series, root: Path, n: int) -> Path:
    """Build ``series`` with ``n`` checkpoints under ``root`` unless it is already there."""
    folder = root / series.name
    if _done(folder, n):
        return folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    {"mlp": _build_mlp, "timm": _build_timm, "hf": _build_hf}[series.kind](series, folder, n)
    _mark(folder, n)
    return folder


def _build_mlp(series: Series, folder: Path, n: int) -> None:
    """cpu-small (p = 97, embedding 128, hidden 512), 600 steps, n checkpoints from step 0."""
    from complexity_zoo.tasks.modular import from_preset, train

    steps = [round(600 * i / max(n - 1, 1)) for i in range(n)]
    train(folder, **from_preset("cpu-small", epochs=75, checkpoints=steps), progress=False, overwrite=True)


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic images whose class sets the mean of one colour channel band (learnable)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, IMG["classes"], (n,), generator=g)
    x = torch.randn(n, 3, IMG["size"], IMG["size"], generator=g) * 0.5
    x[:, 0] += (y.float() / IMG["classes"] - 0.5)[:, None, None] * 2
    return x, y


def _build_timm(series: Series, folder: Path, n: int) -> None:
    """timm train.py's output: CheckpointSaver after each epoch (2 SGD steps), summary.csv."""
    import timm
    from timm.utils import CheckpointSaver, update_summary

    torch.manual_seed(0)
    model = timm.create_model(series.params["arch"], pretrained=False, num_classes=IMG["classes"])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    args = argparse.Namespace(model=series.params["arch"], num_classes=IMG["classes"], in_chans=3,
                              input_size=[3, IMG["size"], IMG["size"]], gp=None, model_kwargs={}, epochs=n)
    saver = CheckpointSaver(model, opt, args=args, checkpoint_dir=str(folder), recovery_dir=str(folder),
                            max_history=n, decreasing=True)
    x, y = _images(64, seed=1)
    xt, yt = _images(IMG["n_test"], seed=2)
    for epoch in range(n):
        model.train()
        for i in range(2):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[i * 32:(i + 1) * 32]), y[i * 32:(i + 1) * 32])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(xt)
            eval_loss = float(torch.nn.functional.cross_entropy(out, yt))
            top1 = float((out.argmax(1) == yt).float().mean()) * 100
        update_summary(epoch, {"loss": float(loss)}, {"loss": eval_loss, "top1": top1, "top5": 100.0},
                       str(folder / "summary.csv"), lr=0.05, write_header=epoch == 0)
        saver.save_checkpoint(epoch, metric=eval_loss)


def tokens(n: int, vocab: int, seed: int) -> torch.Tensor:
    """Synthetic token sequences with structure: t_{i+1} = (5 t_i + 3) mod vocab, 10% noise."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.empty(n, LM["seq"], dtype=torch.long)
    ids[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    for t in range(1, LM["seq"]):
        ids[:, t] = (5 * ids[:, t - 1] + 3) % vocab
    noise = torch.rand(n, LM["seq"], generator=g) < 0.1
    return torch.where(noise, torch.randint(0, vocab, (n, LM["seq"]), generator=g), ids)




def _build_hf(series: Series, folder: Path, n: int) -> None:
    """A real transformers.Trainer: 2 AdamW steps (batch 4) between checkpoints, eval at each."""
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    cfg = GPT2Config(**series.params)
    model = GPT2LMHeadModel(cfg)
    vocab = cfg.vocab_size
    args = TrainingArguments(
        output_dir=str(folder), max_steps=2 * n, save_steps=2, eval_strategy="steps", eval_steps=2,
        logging_steps=1, per_device_train_batch_size=4, per_device_eval_batch_size=8, learning_rate=1e-3,
        save_only_model=True, report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        dataloader_num_workers=0, seed=0, save_total_limit=None,
    )
    trainer = Trainer(model=model, args=args, train_dataset=TokenDataset(tokens(64, vocab, seed=1)),
                      eval_dataset=TokenDataset(tokens(16, vocab, seed=2)))
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()


def param_count(traj) -> int:
    model = traj.model_at(traj.steps[0])
    return sum(p.numel() for p in model.parameters())


def load(series: Series, folder: Path):
    """(Trajectory, Data) through the library's public path: the adapter, and a Data."""
    import complexity_zoo as cz

    if series.kind == "mlp":
        from complexity_zoo.tasks import task_data

        traj = cz.Trajectory.from_dir(folder)
        return traj, task_data(traj.task)
    if series.kind == "timm":
        from complexity_zoo.adapters import timm as timm_adapter

        traj = timm_adapter.load_trajectory(folder)
        x, y = _images(IMG["n_train"], seed=3)
        xt, yt = _images(IMG["n_test"], seed=2)
        return traj, cz.Data.from_tensors(train=(x, y), test=(xt, yt), loss="cross_entropy")
    from complexity_zoo.adapters import huggingface

    traj = huggingface.load_trajectory(folder)
    vocab = series.params["vocab_size"]
    data = huggingface.lm_data(tokens(LM["n_train"], vocab, seed=3), tokens(LM["n_test"], vocab, seed=4),
                               batch_size=LM["batch"])
    return traj, data
