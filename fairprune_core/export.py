"""Pruned models whose saved form grows with the weights KEPT, not with the dense model.

:class:`PrunedVGG` behaves exactly like :class:`~fairprune_core.model.VGG` (same forward, same
weights, pruned ones exactly zero) but pickles itself as the model config, one bit per prunable
weight (the mask, ``np.packbits``) and the float32 values of the kept weights, plus the dense
unpruned tensors (biases). That is what ``torch.save`` and ``mlflow.pytorch.log_model(...,
serialization_format="pickle")`` write, and loading rebuilds the dense model, so
``mlflow.pytorch.load_model(uri)`` returns a module that predicts exactly like the original.

Bytes for a prunable tensor of ``n`` weights with ``k`` kept: ``4 k + n / 8`` (float32) instead
of ``4 n``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .model import VGG, ModelConfig

__all__ = ["PrunedVGG", "pack_pruned", "to_pruned_module"]


class PrunedVGG(VGG):
    """A VGG-11 with pruning masks; pickles sparsely (see module docstring)."""

    masks: dict[str, torch.Tensor]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _unpack_pruned, (self.config.to_dict(), pack_pruned(self, self.masks), self.training)


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


def _unpack_pruned(config: dict, packed: dict[str, dict[str, Any]], training: bool = False) -> PrunedVGG:
    model = PrunedVGG(ModelConfig(**config))
    state, masks = {}, {}
    for name, entry in packed.items():
        if "dense" in entry:
            state[name] = entry["dense"]
            continue
        n = int(np.prod(entry["shape"]))
        mask = torch.from_numpy(np.unpackbits(entry["bits"].numpy(), count=n).astype(bool))
        dense = torch.zeros(n, dtype=entry["values"].dtype)
        dense[mask] = entry["values"]
        state[name] = dense.reshape(entry["shape"])
        masks[name] = mask.reshape(entry["shape"])
    model.load_state_dict(state)
    model.masks = masks
    return model.train(training)


def to_pruned_module(model: VGG, masks: Mapping[str, torch.Tensor]) -> PrunedVGG:
    """A :class:`PrunedVGG` copy of ``model`` carrying ``masks`` (pruned weights must be zero)."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if (params[name].detach()[~mask.bool()] != 0).any():
            raise ValueError(f"{name}: weights outside its mask are not zero; apply the masks first")
    return _unpack_pruned(model.config.to_dict(), pack_pruned(model, masks), model.training)
