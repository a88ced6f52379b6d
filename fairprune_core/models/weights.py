"""A user's weights file (``--weights``) read into the state of a model, without running code.

Taken: a plain state dict saved with ``torch.save(model.state_dict(), path)`` (read with
``weights_only=True``), a ``.safetensors`` file, a FairPrune checkpoint, or a training checkpoint
that holds its state dict under ``state_dict``, ``model_state_dict`` or ``model``. Names saved by
``nn.DataParallel`` (``module.``) or a wrapper (``model.``, ``net.``) are unwrapped. Anything that
does not fit the architecture (a 7-class head for 4-class data) is one :class:`ModelFileError`
naming the first mismatches and the fix.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch

from .config import ModelConfig, ModelFileError
from .registry import state_problems, summarise

__all__ = ["initial_state", "load_state", "read_weights"]

_WRAPPING_KEYS = ("state_dict", "model_state_dict", "model")
_PREFIXES = ("module.", "model.", "net.")


def read_weights(
    path: str | Path, config: ModelConfig, *, note: Callable[[str], None] = print
) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` for the model ``config`` describes, checked name by name and shape
    by shape before anything is built (BatchNorm's ``num_batches_tracked`` may be absent)."""
    path = Path(path)
    state = load_state(path)
    state = _unwrap(state, path, config, note)
    problems = [p for p in state_problems(config, _shapes(state)) if not p.endswith("num_batches_tracked missing")]
    if problems:
        raise ModelFileError(
            f"--weights {path}: its tensors do not fit {config.arch} with {config.num_classes} classes at "
            f"{config.image_size}px ({summarise(problems)}). {_fix(problems, config)}"
        )
    return state


def initial_state(
    path: str | Path, config: ModelConfig, *, note: Callable[[str], None] = print
) -> dict[str, torch.Tensor]:
    """Weights to START training from (``pretrain.py --weights``: fine-tuning, e.g. ImageNet weights of
    the same architecture). A classification head for other classes (1000 ImageNet outputs) is left
    out, to be freshly initialised, and said; any other mismatch is a :class:`ModelFileError`."""
    from .head import find_head
    from .registry import _meta_model

    path = Path(path)
    state = _unwrap(load_state(path), path, config, note)
    head, _ = find_head(_meta_model(config), config.num_classes)
    shapes = _shapes(state)
    problems = [p for p in state_problems(config, shapes) if not p.endswith("num_batches_tracked missing")]
    in_head = [p for p in problems if p.startswith(f"{head}.") and "has shape" in p]
    others = [p for p in problems if p not in in_head]
    if others:
        raise ModelFileError(
            f"--weights {path}: its tensors do not fit {config.arch} ({summarise(others)}). {_fix(others, config)}"
        )
    if in_head:
        note(
            f"--weights {path}: its head {head!r} is for other classes ({summarise(in_head)}); it starts freshly "
            f"initialised, the rest of the network from the file"
        )
    return {k: v for k, v in state.items() if not any(p.startswith(f"{k} ") for p in in_head)}


def _fix(problems: list[str], config: ModelConfig) -> str:
    if all("has shape" in p for p in problems):
        return (
            f"Same names, other shapes: the file holds another head or size of {config.arch} (a model trained on "
            f"other classes, or at another image size for a ViT). Use weights trained on this data's "
            f"{config.num_classes} classes (sweeps/pretrain.py --model {config.arch} trains them)"
        )
    return f"Pass the --model the weights were saved from (names like {problems[0].split()[0]!r} are {config.arch}'s)"


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, whatever the architecture (nothing unpickled)."""
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(f"--weights {path}: not a readable safetensors file ({exc})") from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    except pickle.UnpicklingError:
        raise ModelFileError(
            f"--weights {path} holds Python objects beyond tensors (a whole pickled model?), which FairPrune never "
            f"unpickles: unpickling can run code. Save the state dict instead: torch.save(model.state_dict(), path)"
        ) from None
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise ModelFileError(f"--weights {path}: not a torch file, or truncated ({exc})") from None
    if isinstance(payload, dict):
        for key in _WRAPPING_KEYS:
            if isinstance(payload.get(key), dict) and not isinstance(payload.get(key), torch.Tensor):
                payload = payload[key]  # a training checkpoint (FairPrune's included): its state dict
                break
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ModelFileError(
            f"--weights {path} is not a state dict (a mapping of names to tensors); save one with "
            f"torch.save(model.state_dict(), path)"
        )
    return payload


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _unwrap(
    state: dict[str, torch.Tensor], path: Path, config: ModelConfig, note: Callable[[str], None]
) -> dict[str, torch.Tensor]:
    """Strip a prefix every name carries (``module.`` of DataParallel) when that makes the names fit."""
    if not state_problems(config, _shapes(state)):
        return state
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if len(state_problems(config, _shapes(stripped))) < len(state_problems(config, _shapes(state))):
                note(f"--weights {path}: names carry the prefix {prefix!r} (a wrapper's); read without it")
                return stripped
    return state
