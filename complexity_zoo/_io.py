"""Reading and writing weights safely: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .errors import CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
# Keys under which training scripts commonly nest the model's state dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a weights-only torch file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"Checkpoint file {str(path)!r} does not exist.")
    if path.name.endswith(SAFETENSORS_SUFFIXES):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {e}") from e
    if not path.name.endswith(TORCH_SUFFIXES):
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint this library reads: expected one of "
            f"{SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}."
        )
    obj = torch_load_weights_only(path)
    return state_dict_from_object(obj, path)


def torch_load_weights_only(path: Path, safe_globals: list | None = None, *, mmap: bool = False) -> object:
    """``torch.load(weights_only=True)``, turning refusals into a clear error.

    ``mmap=True`` maps the tensors instead of reading them, so reading a big training
    checkpoint only for its small entries (a step, an epoch) stays cheap.
    """
    try:
        if safe_globals:
            with torch.serialization.safe_globals(list(safe_globals)):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        wanted = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" It asks for the global {wanted.group(1)!r}." if wanted else ""
        raise UnsafeCheckpointError(
            f"Refusing to load {str(path)!r}: it holds pickled Python objects, not only tensors, "
            f"and unpickling can run arbitrary code.{what} If you trust the file, load it "
            f"yourself (torch.load(..., weights_only=False)), keep its state dict, and pass it "
            f"to Trajectory.from_state_dicts; or re-save it with safetensors."
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r} is not a readable torch checkpoint: {e}") from e


def state_dict_from_object(obj: object, path: Path) -> dict[str, Tensor]:
    """Find the tensors in a loaded object: a state dict, or one nested under a common key."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        for key in NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                isinstance(v, Tensor) for v in inner.values()
            ):
                return dict(inner)
    raise CheckpointError(
        f"{str(path)!r} holds no state dict: expected a mapping of names to tensors, or one "
        f"nested under {NESTED_KEYS}; got {type(obj).__name__}."
    )


def save_state_dict_file(path: str | os.PathLike, state_dict: Mapping[str, Tensor]) -> None:
    """Write a state dict as safetensors, atomically (a crash never leaves half a file)."""
    from safetensors.torch import save_file

    path = Path(path)
    # Copies break shared storage (tied weights), which safetensors refuses.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
