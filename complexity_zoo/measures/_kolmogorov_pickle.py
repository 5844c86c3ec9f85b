"""The bytes the authors' code pickles, without JAX: ``pickle.dumps(jax.tree_util.tree_flatten(tree))``.

DeMoss et al. size a coarse model as bzip2 of that pickle (``get_compressed_sizes`` in their
main.py): a list of JAX arrays, each pickled as ``jax._src.array._reconstruct_array`` around the
numpy array's own ``__reduce__`` plus ``{'weak_type': False}``, then the tree's ``PyTreeDef``
(the default registry and one tuple per node, in post-order). This module writes the same
opcodes with stand-ins for the two JAX globals, so that the size is theirs byte for byte where
JAX itself is not installed. Checked byte-equal against jax 0.10 / jaxlib 0.10 (module of the
PyTreeDef class: ``jaxlib._jax.pytree``; older jaxlib names it differently, a few bytes) by
tests/test_kolmogorov_reference.py.
"""

from __future__ import annotations

import io
import pickle
import sys

import numpy as np

# jaxlib's PyTreeDef node kinds (pytree.h): a leaf, a tuple, a dict (keys sorted).
_LEAF, _TUPLE, _DICT = 0, 2, 5


class _Global:
    """A global that pickles as ``module.name`` without being importable here."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object) -> None:  # save_reduce wants a callable
        raise TypeError("a pickling stand-in, never called")


_RECONSTRUCT_ARRAY = _Global("jax._src.array", "_reconstruct_array")
_PYTREEDEF = _Global("jaxlib._jax.pytree", "PyTreeDef")
_DEFAULT_REGISTRY = _Global("jax._src.tree_util", "default_registry")
_WEAK_TYPE = sys.intern("weak_type")


class _JaxArray:
    """Pickles as a committed, strongly typed jax.Array holding ``value`` does."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = value

    def __reduce__(self) -> tuple:
        fun, args, state = self.value.__reduce__()
        return _RECONSTRUCT_ARRAY, (fun, args, state, {_WEAK_TYPE: False})


class _TreeDef:
    """Pickles as jaxlib's PyTreeDef: NEWOBJ of the class, then (registry, nodes) as its state."""

    def __init__(self, nodes: list[tuple]) -> None:
        self.nodes = nodes


class _Pickler(pickle._Pickler):  # the pure-Python pickler writes the C pickler's bytes
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_global(self, obj: _Global) -> None:
        self.save(obj.module)
        self.save(obj.name)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    def _save_treedef(self, obj: _TreeDef) -> None:
        self.save(_PYTREEDEF)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self.save((_DEFAULT_REGISTRY, obj.nodes))
        self.write(pickle.BUILD)

    dispatch[_Global] = _save_global
    dispatch[_TreeDef] = _save_treedef


def _flatten(tree: object, leaves: list, nodes: list) -> tuple[int, int]:
    """Leaves and PyTreeDef nodes of a tree of dicts, 2-tuples and arrays; (leaves, nodes) counts."""
    if isinstance(tree, dict):
        keys = sorted(tree)
        counts = [_flatten(tree[k], leaves, nodes) for k in keys]
        n_leaves, n_nodes = sum(c[0] for c in counts), sum(c[1] for c in counts) + 1
        nodes.append((_DICT, len(keys), [sys.intern(k) for k in keys], None, n_leaves, n_nodes))
        return n_leaves, n_nodes
    if isinstance(tree, tuple):
        counts = [_flatten(t, leaves, nodes) for t in tree]
        n_leaves, n_nodes = sum(c[0] for c in counts), sum(c[1] for c in counts) + 1
        nodes.append((_TUPLE, len(tree), None, None, n_leaves, n_nodes))
        return n_leaves, n_nodes
    leaves.append(_JaxArray(np.ascontiguousarray(tree, dtype=np.float32)))
    nodes.append((_LEAF, 0, None, None, 1, 1))
    return 1, 1


def tree_pickle(tree: dict) -> bytes:
    """``pickle.dumps(jax.tree_util.tree_flatten(tree))`` for a tree of dicts, tuples and float32
    arrays (each a JAX array in their code), at this interpreter's default protocol."""
    leaves: list[_JaxArray] = []
    nodes: list[tuple] = []
    _flatten(tree, leaves, nodes)
    out = io.BytesIO()
    _Pickler(out, protocol=pickle.DEFAULT_PROTOCOL).dump((leaves, _TreeDef(nodes)))
    return out.getvalue()
