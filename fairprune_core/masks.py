"""Which weights pruning may remove, and applying a pruning mask (True = kept)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["apply_masks", "prunable_parameters", "pruned_fraction"]


def prunable_parameters(model: nn.Module, *, include_biases: bool = False) -> list[str]:
    """Names of the weights pruning may remove: convolution and linear weights (and biases if
    asked), on any architecture; attention's input projections count as linear weights. Never
    normalisation layers, embeddings or a ViT's class token."""
    names = []
    for mname, module in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(module, nn.modules.conv._ConvNd | nn.Linear):
            names.append(prefix + "weight")
            if include_biases and module.bias is not None:
                names.append(prefix + "bias")
        elif isinstance(module, nn.MultiheadAttention):
            projections = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
            names += [prefix + n for n in projections if getattr(module, n, None) is not None]
            if include_biases and module.in_proj_bias is not None:
                names.append(prefix + "in_proj_bias")
    if not names:
        raise ValueError("the model has no conv or linear weights to prune")
    return names


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero every pruned weight (``mask == False``) in place; returns the model."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))
    return model


def pruned_fraction(masks: Mapping[str, torch.Tensor] | None) -> float:
    """Share of the masked weights that are pruned (0 for a dense model)."""
    if not masks:
        return 0.0
    total = sum(m.numel() for m in masks.values())
    return 1 - sum(int(m.sum()) for m in masks.values()) / total
