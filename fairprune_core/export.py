"""Pruned models whose saved form grows with the weights KEPT, not with the dense model.

A pruned module (:func:`pruned_class` of its architecture: ``PrunedVGG``, ``PrunedResNet``, ...)
is an instance of the architecture's own class and behaves exactly like it (same forward, same
weights, pruned ones exactly zero) but pickles itself as the model config, one bit per prunable
weight (the mask, ``np.packbits``) and the float32 values of the kept weights, plus the dense
unpruned tensors (biases). That is what ``torch.save`` and ``mlflow.pytorch.log_model(...,
serialization_format="pickle")`` write, and loading rebuilds the dense model, so
``mlflow.pytorch.load_model(uri)`` returns a module that predicts exactly like the original.

Bytes for a prunable tensor of ``n`` weights with ``k`` kept: ``4 k + n / 8`` (float32) instead
of ``4 n``.

The same packed form is also written as safetensors (:func:`save_safetensors`): tensors plus a
JSON header, read back by :func:`load_safetensors` without unpickling anything, for users who
run with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` or will not unpickle a file they did not
write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .models import VGG, ModelFileError, build_model, check_state_shapes, config_from_file

__all__ = [
    "SAFETENSORS_FILE",
    "PrunedVGG",
    "load_safetensors",
    "pack_pruned",
    "pruned_class",
    "save_safetensors",
    "to_pruned_module",
]

SAFETENSORS_FILE = "pruned_model.safetensors"
_FORMAT = "fairprune-pruned/2"
_FORMATS = (_FORMAT, "fairprune-pruned-vgg/1")  # read: this one, and the VGG-only one before it


def _reduce(self: nn.Module) -> tuple[Any, tuple[Any, ...]]:
    return _unpack_pruned, (self.config.to_dict(), pack_pruned(self, self.masks), self.training)


_PRUNED: dict[type, type] = {}


def pruned_class(cls: type[nn.Module]) -> type[nn.Module]:
    """The architecture class ``cls`` with pruning masks (``.masks``), pickling sparsely (see the module
    docstring): a subclass, so a pruned ResNet is a ``torchvision.models.ResNet``. Pickle never stores the
    class itself (``__reduce__`` rebuilds from the config), so the subclass made here needs no import path."""
    if cls not in _PRUNED:
        _PRUNED[cls] = type(f"Pruned{cls.__name__}", (cls,), {"__reduce__": _reduce, "__module__": __name__})
    return _PRUNED[cls]


PrunedVGG = pruned_class(VGG)


def pack_pruned(model: torch.nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """``{name: {"shape", "bits", "values"}}`` for masked tensors, ``{"dense": tensor}`` otherwise."""
    packed: dict[str, dict[str, Any]] = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        if name in masks:
            mask = masks[name].detach().cpu().bool().reshape(-1)
            bits = np.packbits(mask.numpy())
            packed[name] = {
                "shape": tuple(t.shape),
                "bits": torch.from_numpy(bits),  # tensors are stored raw by torch.save
                "values": t.reshape(-1)[mask].clone(),
            }
        else:
            packed[name] = {"dense": t.clone()}
    return packed


def _unpack_pruned(
    config: dict, packed: dict[str, dict[str, Any]], training: bool = False, where: str = "a pruned model"
) -> nn.Module:
    model_config = config_from_file(config, where)
    shapes = {k: tuple(e["shape"]) if "shape" in e else tuple(e["dense"].shape) for k, e in packed.items()}
    check_state_shapes(model_config, shapes, where)
    model = build_model(model_config)
    model.__class__ = pruned_class(type(model))
    state, masks = {}, {}
    for name, entry in packed.items():
        if "dense" in entry:
            state[name] = entry["dense"]
            continue
        n = int(np.prod(entry["shape"]))
        mask = torch.from_numpy(np.unpackbits(entry["bits"].numpy(), count=n).astype(bool))
        if entry["bits"].numel() != (n + 7) // 8 or int(mask.sum()) != entry["values"].numel():
            raise ModelFileError(
                f"{where}: {name} keeps {entry['values'].numel()} values for a mask of {int(mask.sum())} kept "
                f"weights; the file is damaged or was edited: re-create it"
            )
        dense = torch.zeros(n, dtype=entry["values"].dtype)
        dense[mask] = entry["values"]
        state[name] = dense.reshape(entry["shape"])
        masks[name] = mask.reshape(entry["shape"])
    model.load_state_dict(state)
    model.masks = masks
    return model.train(training)


def to_pruned_module(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A pruned (:func:`pruned_class`) copy of ``model`` carrying ``masks`` (pruned weights must be zero)."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if (params[name].detach()[~mask.bool()] != 0).any():
            raise ValueError(f"{name}: weights outside its mask are not zero; apply the masks first")
    return _unpack_pruned(model.config.to_dict(), pack_pruned(model, masks), model.training)


def save_safetensors(model: nn.Module, masks: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write ``model`` with ``masks`` as safetensors: ``<name>.bits``/``<name>.values`` for masked
    tensors, ``<name>.dense`` otherwise; the model config and shapes in the JSON header."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, entry in pack_pruned(model, masks).items():
        if "dense" in entry:
            tensors[f"{name}.dense"] = entry["dense"].contiguous()
        else:
            tensors[f"{name}.bits"], tensors[f"{name}.values"] = entry["bits"], entry["values"].contiguous()
            shapes[name] = list(entry["shape"])
    meta = {"format": _FORMAT, "config": json.dumps(model.config.to_dict()), "shapes": json.dumps(shapes)}
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def load_safetensors(path: str | Path) -> nn.Module:
    """The pruned model :func:`save_safetensors` wrote (nothing unpickled, no code run)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") not in _FORMATS:
            raise ValueError(
                f"{path}: not a FairPrune pruned model (format {meta.get('format')!r}, expected {_FORMAT!r})"
            )
        try:
            shapes = json.loads(meta["shapes"])
            config = json.loads(meta["config"])
            packed: dict[str, dict[str, Any]] = {}
            for key in f.keys():  # noqa: SIM118 (safe_open has keys(), not iteration)
                name, kind = key.rsplit(".", 1)
                entry = packed.setdefault(name, {})
                entry[kind] = f.get_tensor(key)
                if kind == "bits":
                    entry["shape"] = tuple(shapes[name])
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(
                f"{path}: its header or tensor names are not FairPrune's ({exc}); re-create it"
            ) from None
    return _unpack_pruned(config, packed, where=str(path)).eval()
