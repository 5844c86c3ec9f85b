"""The authors' Kolmogorov estimator, run as published on our checkpoints, beside ours.

DeMoss et al. 2024 publish their estimator in github.com/brantondemoss/GrokkingComplexity
(``bayes_optimize_svd_quantization`` in ``main.py``, JAX + Flax + bayes_opt). This harness
loads their functions from a local copy of that repository (env ``COMPLEXITY_ZOO_GROKKING_REF``
or ``--ref``; their code is never part of complexity_zoo), converts a torch checkpoint of the
modular task to their Flax parameter tree (a Dense kernel is W^T), and runs their search with the
bounds of their ``wandb_callback`` (Δ in [1e-3, 1], τ in [0, 1], 10 random + 50 Bayesian
steps, ε = 1) on the same loss examples that ``kolmogorov.paper`` uses.

Run: ``COMPLEXITY_ZOO_GROKKING_REF=/path/to/GrokkingComplexity python examples/kolmogorov_reference.py
RUN_DIR --steps 200,1000`` (needs ``pip install 'complexity-zoo[paper-reference]'``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import math
import os
import sys
from pathlib import Path

import numpy as np

ENV = "COMPLEXITY_ZOO_GROKKING_REF"
NEEDED = ("compute_loss", "get_compressed_sizes", "svd_truncate", "quantize", "apply_svd_truncate_quantize",
          "get_compressed_sizes_svd", "bayes_optimize_svd_quantization")


def missing() -> str | None:
    """Why the reference cannot run here (None when it can)."""
    for module in ("jax", "flax", "bayes_opt"):
        if importlib.util.find_spec(module) is None:
            return f"the authors' estimator needs {module}: pip install 'complexity-zoo[paper-reference]'"
    path = os.environ.get(ENV)
    if not path or not (Path(path) / "main.py").exists() or not (Path(path) / "model.py").exists():
        return f"set {ENV} to a copy of github.com/brantondemoss/GrokkingComplexity (main.py, model.py)"
    return None


class Reference:
    """Their published functions (the last definition of each name in main.py, as Python keeps)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        import jax

        jax.config.update("jax_platform_name", "cpu")
        jax.config.update("jax_enable_x64", False)
        self.path = Path(path or os.environ[ENV])
        tree = ast.parse((self.path / "main.py").read_text())
        defs = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in NEEDED}
        absent = sorted(set(NEEDED) - set(defs))
        if absent:
            raise RuntimeError(f"{self.path / 'main.py'} defines none of {absent}")
        self.source = ast.unparse(ast.Module(body=list(defs.values()), type_ignores=[]))
        spec = importlib.util.spec_from_file_location("grokking_complexity_model", self.path / "model.py")
        self.models = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.models)

    def namespace(self, apply_model, vocab_size: int, train, test) -> dict:
        """Their functions bound to the globals their module would hold (model, vocab_size, data)."""
        import bz2
        import gzip
        import pickle

        import jax
        import jax.numpy as jnp
        from bayes_opt import BayesianOptimization
        from jax import tree_util

        ns = {"jax": jax, "jnp": jnp, "onp": np, "tree_util": tree_util, "bz2": bz2, "gzip": gzip, "io": io,
              "BytesIO": io.BytesIO, "pickle": pickle, "math": math, "BayesianOptimization": BayesianOptimization,
              "model": apply_model, "vocab_size": vocab_size, "epsilon": 1e-9,
              "train_data": train, "test_data": test, "mini_batch": train}
        exec(compile(self.source, str(self.path / "main.py"), "exec"), ns)
        return ns


def _dense(linear) -> dict:
    return {"kernel": _np(linear.weight).T.copy(), "bias": _np(linear.bias)}


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy()


class _MLPApply:
    """Our ModularMLP in JAX on their MLP's parameter names: their interface (``apply(params, x)``
    -> logits (B, 1, C))."""

    @staticmethod
    def apply(params, x):
        import jax.numpy as jnp

        p = params["params"]
        emb = p["embedding"]["embedding"]
        a, b = (x[:, 0], x[:, 2]) if x.shape[1] == 4 else (x[:, 0], x[:, 1])
        h = jnp.concatenate([emb[a], emb[b]], axis=-1)
        h = jnp.maximum(h @ p["mlp_layers_0"]["kernel"] + p["mlp_layers_0"]["bias"], 0)
        return (h @ p["output_layer"]["kernel"] + p["output_layer"]["bias"])[:, None, :]


class _TransformerApply:
    """Our ModularTransformer in JAX on their parameter tree (their TransformerDecoder's names).

    Not their TransformerDecoder itself: its einsum 'bhqk,bhvd->bhqd' sums the values over all
    positions (attention weights summing to 1), so it computes another function than ours.
    """

    def __init__(self, n_heads: int, d_head: int, n_layers: int) -> None:
        self.n_heads, self.d_head, self.n_layers = n_heads, d_head, n_layers

    def apply(self, params, x):
        import jax
        import jax.numpy as jnp

        p = params["params"]

        def dense(q, h):
            return h @ q["kernel"] + q["bias"]

        def norm(q, h):
            mu = h.mean(-1, keepdims=True)
            var = ((h - mu) ** 2).mean(-1, keepdims=True)
            return (h - mu) / jnp.sqrt(var + 1e-6) * q["scale"] + q["bias"]

        b, t = x.shape
        h = p["embedding"]["embedding"][x] + p["positional_embedding"]["embedding"][jnp.arange(t)]
        for i in range(self.n_layers):
            layer = p[f"decoder_layers_{i}"]
            att = layer["self_attn"]

            def heads(z):
                return z.reshape(b, t, self.n_heads, self.d_head).transpose(0, 2, 1, 3)

            q, k, v = (heads(dense(att[n], h)) for n in ("q_proj", "k_proj", "v_proj"))
            w = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(self.d_head), axis=-1)
            o = (w @ v).transpose(0, 2, 1, 3).reshape(b, t, self.n_heads * self.d_head)
            h = norm(layer["ln1"], h + dense(att["out_proj"], o))
            ffn = layer["ffn"]
            h = norm(layer["ln2"], h + dense(ffn["layer2"], jax.nn.gelu(dense(ffn["layer1"], h), approximate=True)))
        return dense(p["output_layer"], h)


def convert(ref: Reference, model):
    """(apply object, Flax params, vocab size) of a modular-task torch model."""
    from complexity_zoo.tasks._modular_models import ModularMLP, ModularTransformer

    if isinstance(model, ModularMLP):
        params = {"params": {"embedding": {"embedding": _np(model.embed.weight)},  # their MLP's names
                             "mlp_layers_0": _dense(model.hidden), "output_layer": _dense(model.out)}}
        return _MLPApply(), params, model.p
    if isinstance(model, ModularTransformer):
        blocks = list(model.blocks)
        attn = blocks[0].attn
        apply_model = _TransformerApply(attn.n_heads, attn.d_head, len(blocks))
        if model.n_positions != model.vocab_size:
            raise ValueError("their positional table has vocab_size rows; build the transformer with n_positions=None")
        p = {"embedding": {"embedding": _np(model.embed.weight)},
             "positional_embedding": {"embedding": _np(model.pos_embed.weight)},
             "output_layer": _dense(model.unembed)}
        for i, blk in enumerate(blocks):
            p[f"decoder_layers_{i}"] = {
                "self_attn": {"q_proj": _dense(blk.attn.q), "k_proj": _dense(blk.attn.k),
                              "v_proj": _dense(blk.attn.v), "out_proj": _dense(blk.attn.out)},
                "ffn": {"layer1": _dense(blk.ff1), "layer2": _dense(blk.ff2)},
                "ln1": {"scale": _np(blk.ln1.weight), "bias": _np(blk.ln1.bias)},
                "ln2": {"scale": _np(blk.ln2.weight), "bias": _np(blk.ln2.bias)}}
        return apply_model, {"params": p}, model.vocab_size
    raise TypeError(f"no Flax layout for {type(model).__name__}")


def _rows(x, y) -> np.ndarray:
    return np.concatenate([x.numpy(), y.numpy()[:, None]], axis=1).astype(np.int32)


def authors_bits(ref: Reference, model, data, loss_data, epsilon: float = 1.0, seed: int = 0,
                 init_points: int = 10, n_iter: int = 50) -> dict:
    """Run their ``bayes_optimize_svd_quantization`` as published; sizes in bits.

    ``loss_data``: the examples their loss is measured on (the loop's last minibatch in their
    script; here the subset ``kolmogorov.paper`` draws, so both searches see the same loss).
    """
    import jax.numpy as jnp

    apply_model, params, vocab = convert(ref, model)
    x, y = loss_data.train[0], loss_data.train[1]
    ns = ref.namespace(apply_model, vocab, _rows(*data.train), _rows(*data.test))
    with contextlib.redirect_stdout(io.StringIO()):  # their objective prints every probe
        results, tau, train_loss, test_loss = ns["bayes_optimize_svd_quantization"](
            params, epsilon, jnp.asarray(x.numpy().astype(np.int32)), jnp.asarray(y.numpy().astype(np.int32)),
            min_threshold=0.0, max_threshold=1.0, min_bin_size=1e-3, max_bin_size=1.0,
            n_iter=n_iter, init_points=init_points, rng=[seed])
    return {"bits": 8 * results["bzip2"], "tau": float(tau), "train_loss": float(train_loss),
            "test_loss": float(test_loss)}


def authors_size(ref: Reference, model, data, tau: float, delta: float) -> dict:
    """Their compressed size (bits) and loss of the coarse-graining (τ, Δ) of ``model``."""
    import jax

    apply_model, params, vocab = convert(ref, model)
    ns = ref.namespace(apply_model, vocab, _rows(*data.train), _rows(*data.test))
    coarse = ns["apply_svd_truncate_quantize"](params, tau, delta, components=True)
    coarse = jax.tree_util.tree_map(lambda v: ns["jnp"].where(v == -0.0, 0.0, v), coarse)
    full = ns["apply_svd_truncate_quantize"](params, tau, delta)
    tr = _rows(*data.train)
    loss = float(ns["compute_loss"](full, tr[:, :-1], tr[:, -1]))
    return {"bits": 8 * ns["get_compressed_sizes_svd"](coarse)["bzip2"], "train_loss": loss}


def main() -> None:
    import complexity_zoo as cz
    from complexity_zoo.tasks import task_data

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", help="a modular-task run folder")
    parser.add_argument("--steps", default=None, help="comma-separated steps (default: all)")
    parser.add_argument("--ref", default=None, help=f"the authors' repository (default: ${ENV})")
    args = parser.parse_args()
    if args.ref:
        os.environ[ENV] = args.ref
    why = missing()
    if why:
        sys.exit(why)
    ref = Reference()
    traj = cz.Trajectory.from_dir(args.run)
    data = task_data(traj.task)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else traj.steps
    paper, default = cz.get_measure("kolmogorov.paper"), cz.get_measure("kolmogorov")
    print("step  authors_kbit  paper_kbit  paper/authors  default_kbit  default/authors", flush=True)
    for step in steps:
        model = traj.model_at(step)
        theirs = authors_bits(ref, model, data, paper._data(data))
        ours, ours_default = paper(model, data).value, default(model, data).value
        print(f"{step:5d}  {theirs['bits'] / 1e3:12.1f}  {ours / 1e3:10.1f}  {ours / theirs['bits']:13.4f}  "
              f"{ours_default / 1e3:12.1f}  {ours_default / theirs['bits']:15.4f}", flush=True)


if __name__ == "__main__":
    main()
