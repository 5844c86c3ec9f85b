"""Tiny causal language models and a Hub-cache checkpoint suite, for tests and offline examples.

The models are GPT-2, GPT-NeoX (Pythia's: rotary embeddings on a quarter of each head, parallel
attention and MLP) and Llama-style (RMSNorm, SwiGLU, grouped-query attention), built from
configs; nothing is downloaded. :func:`hub_cache_suite` writes checkpoints of one training run
as branches ``step0``, ``step10``, ... of a repository in huggingface_hub's cache layout
(``models--ORG--NAME/{refs/<branch>, snapshots/<commit>/..., blobs/}``), in the format
``save_pretrained`` writes, so the Hub code paths run with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn


class TokenDataset(torch.utils.data.Dataset):
    """Token sequences as ``transformers.Trainer`` takes them: ``{"input_ids", "labels"}`` per row."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_gpt2(seed: int = 0, **config: int) -> nn.Module:
    """A randomly initialized GPT-2 built from a config (2 layers, 32 wide, vocabulary 100 unless
    ``config`` says otherwise), in eval mode: nothing is downloaded. Needs ``transformers``."""
    import transformers

    torch.manual_seed(seed)
    sizes = {"n_layer": 2, "n_head": 2, "n_embd": 32, "vocab_size": 100, "n_positions": 32, **config}
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**sizes)).eval()


def tiny_gpt_neox(seed: int = 0, **config) -> nn.Module:
    """A randomly initialized GPT-NeoX as Pythia configures it (rotary on 25% of each head,
    parallel residual, untied head), 2 layers, 32 wide, 4 heads, vocabulary 100; eval mode."""
    import transformers

    torch.manual_seed(seed)
    sizes = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 128,
             "vocab_size": 100, "max_position_embeddings": 32, "rotary_pct": 0.25, "use_parallel_residual": True,
             "tie_word_embeddings": False, **config}
    return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**sizes)).eval()


def tiny_llama(seed: int = 0, **config) -> nn.Module:
    """A randomly initialized Llama-style model (RMSNorm, SwiGLU MLP, grouped-query attention:
    4 query heads sharing 2 key/value heads), 2 layers, 32 wide, vocabulary 100; eval mode."""
    import transformers

    torch.manual_seed(seed)
    sizes = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 32, **config}
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**sizes)).eval()


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"gpt2": tiny_gpt2, "gpt_neox": tiny_gpt_neox,
                                                      "llama": tiny_llama}


def lm_tokens(n: int, seq: int, vocab: int, seed: int) -> torch.Tensor:
    """Seeded token sequences with structure to learn: each next token is the previous plus 1 or 2
    (mod ``vocab``), chosen at random, so a model's loss falls from log(vocab) towards log 2."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (n, 1), generator=g)
    jumps = torch.randint(1, 3, (n, seq - 1), generator=g)
    return torch.cat([start, start + jumps.cumsum(1)], 1) % vocab


def train_lm(model: nn.Module, tokens: torch.Tensor, steps: Iterable[int], *, lr: float = 3e-3,
             batch_size: int = 8, seed: int = 0) -> Iterable[tuple[int, nn.Module]]:
    """Train ``model`` with Adam on next-token cross-entropy over ``tokens``, yielding
    (step, model) at each of ``steps`` (ascending; step 0 is the initialization)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    done = 0
    for step in sorted(set(int(s) for s in steps)):
        model.train()
        while done < step:
            batch = tokens[torch.randint(0, len(tokens), (batch_size,), generator=g)]
            opt.zero_grad()
            model(batch, labels=batch).loss.backward()
            opt.step()
            done += 1
        model.eval()
        yield step, model


def _commit(repo: str, branch: str) -> str:
    return hashlib.sha1(f"{repo}@{branch}".encode()).hexdigest()


def _store(repo_dir: Path, commit: str, folder: Path) -> None:
    """The files of ``folder`` as snapshot ``commit``: each a link to its content-addressed blob."""
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    for file in sorted(folder.iterdir()):
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        target = repo_dir / "blobs" / blob
        if not target.exists():
            shutil.copyfile(file, target)
        link = snapshot / file.name
        if link.exists() or link.is_symlink():
            link.unlink()
        try:
            link.symlink_to(os.path.relpath(target, snapshot))
        except OSError:  # no symlinks (Windows without developer mode): huggingface_hub copies too
            shutil.copyfile(target, link)


def hub_cache_suite(cache_dir: str | os.PathLike, repo: str = "org/tiny-pythia",
                    steps: Iterable[int] = (0, 10, 20, 40, 80), *, arch: str = "gpt_neox", seed: int = 0,
                    tokens: torch.Tensor | None = None, **config) -> torch.Tensor:
    """A checkpoint suite as huggingface_hub caches it: branch ``step<N>`` per step of one run.

    Trains a tiny ``arch`` model (:data:`ARCHITECTURES`) on ``tokens`` (default: seeded
    :func:`lm_tokens`, 64 sequences of 16 tokens over the model's vocabulary) and stores each
    checkpoint with ``save_pretrained`` (``config.json`` and ``model.safetensors``) under
    ``cache_dir/models--ORG--NAME``, a ``main`` ref on the last one. Returns the tokens.
    """
    model = ARCHITECTURES[arch](seed, **config)
    vocab = model.config.vocab_size
    tokens = lm_tokens(64, 16, vocab, seed) if tokens is None else tokens
    org, name = repo.split("/")
    repo_dir = Path(cache_dir) / f"models--{org}--{name}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    commit = None
    with tempfile.TemporaryDirectory() as tmp:
        for step, trained in train_lm(model, tokens, steps, seed=seed):
            folder = Path(tmp) / f"step{step}"
            trained.save_pretrained(folder)
            commit = _commit(repo, f"step{step}")
            _store(repo_dir, commit, folder)
            (repo_dir / "refs" / f"step{step}").write_text(commit)
    if commit is not None:
        (repo_dir / "refs" / "main").write_text(commit)
    return tokens
