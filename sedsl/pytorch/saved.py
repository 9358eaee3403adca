"""Files torch wrote that a user names: weights (`export --weights`, `excite --weights`) and
training checkpoints. One loader for all of them, so each mistake reads the same everywhere: a
missing file, a folder or device, a file that is no torch file, a whole pickled module where a
state dict belongs. Nothing is unpickled but tensors and plain containers (`weights_only`)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sedsl import extras, files
from sedsl.errors import ModelError

_SAVED = "a state dict saved with torch.save(model.state_dict(), ...), or a .safetensors file"


def read(path: Path, what: str = "weights") -> Any:
    """What torch.save wrote to `path` (tensors and plain containers only), or a .safetensors
    file's tensors; a ModelError that says what is wrong otherwise."""
    name = files.shown(path)
    try:
        files.regular(path)
    except files.Unusable as err:
        raise ModelError(f"cannot read {what} {name}: {err.reason}") from None
    if path.suffix == ".safetensors":
        safetensors = extras.require("safetensors.torch", "analysis", ".safetensors weights")
        try:
            return safetensors.load_file(str(path))
        except Exception as err:  # the format's own errors: no common base class
            raise ModelError(f"cannot read {what} {name}: {_first_line(err)}", _SAVED) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # not a pickle: "Unsupported operand"
            raise ModelError(f"cannot read {what} {name}: not a file torch.save wrote",
                             _SAVED) from None
        # weights_only met a Python object: a whole module, an optimizer, a custom class
        raise ModelError(f"{name} is not a plain state dict: it holds pickled Python objects "
                         "(a whole model?), which sedsl does not load",
                         "save the weights alone: torch.save(model.state_dict(), path)") from None
    except EOFError:
        raise ModelError(f"cannot read {what} {name}: it is empty or cut short", _SAVED) \
            from None
    except Exception:  # not a torch file: zip and pickle errors alike
        raise ModelError(f"cannot read {what} {name}: not a file torch.save wrote", _SAVED) \
            from None


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in `path`: a plain one, or the `model` of a sedsl train checkpoint."""
    state = read(path)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]  # a sedsl train checkpoint
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        kind = type(state).__name__ if not isinstance(state, Mapping) else "mapping of other things"
        raise ModelError(f"{files.shown(path)} holds a {kind}, not a state dict (names to "
                         "tensors)", _SAVED)
    return dict(state)


def _first_line(err: Exception) -> str:
    text = str(err).strip().split("\n")[0] or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
