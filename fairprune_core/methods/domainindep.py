"""DomainIndep: the domain-independent model (Wang, Qinami, Karakozis, Genova, Nair, Hata,
Russakovsky, "Towards Fairness in Visual Recognition: Effective Strategies for Bias
Mitigation", CVPR 2020, Sec. 5.3; the FairPrune paper's [27]).

A shared encoder with one classifier per group: the last layer has ``K x G`` outputs
``s(k, d | x)`` (class ``k``, group ``d``). Training applies the softmax within the sample's
own group only:

    L = CE( [s(1, g | x), ..., s(K, g | x)], y )

At inference no group is needed. Of the original's rules we use the sum of the per-group class
scores, ``yhat = argmax_k sum_d s(k, d | x)`` (its "sum of scores"; the alternative sums the
per-group probabilities). That rule is linear in the last layer, so the trained network is
folded into the plain architecture with ``K`` outputs (its linear head, found by
:func:`~fairprune_core.models.find_head`), ``W'_k = sum_d W_(d, k)``, ``b'_k = sum_d b_(d, k)``:
it predicts exactly as the rule does, and is pruned, evaluated and exported like any other.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..models import ModelConfig, build_model, find_head
from .base import Method, MethodContext, MethodOutput, train_with

__all__ = ["DomainIndep", "DomainIndepMode", "fold_heads", "group_logits", "sum_rule"]


def group_logits(outputs: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``(N, G*K)`` outputs -> ``(N, G, K)``: output ``d*K + k`` is class ``k`` of group ``d``."""
    n, gk = outputs.shape
    return outputs.view(n, num_groups, gk // num_groups)


def sum_rule(outputs: torch.Tensor, num_groups: int) -> torch.Tensor:
    """The inference rule: class scores summed over the groups, ``(N, K)``."""
    return group_logits(outputs, num_groups).sum(dim=1)


def fold_heads(model: nn.Module, num_groups: int) -> nn.Module:
    """The architecture with ``K`` outputs whose logits are :func:`sum_rule` of ``model``'s, exactly (linear)."""
    name, last = find_head(model, model.config.num_classes)
    k = last.out_features // num_groups
    folded = build_model(replace(model.config, num_classes=k))
    state = {n: v for n, v in model.state_dict().items() if not n.startswith(f"{name}.")}
    with torch.no_grad():
        state[f"{name}.weight"] = last.weight.view(num_groups, k, -1).sum(dim=0).clone()
        if last.bias is not None:
            state[f"{name}.bias"] = last.bias.view(num_groups, k).sum(dim=0).clone()
    folded.load_state_dict(state)
    return folded.to(last.weight.device).train(model.training)


class DomainIndepMode:
    """The domain-independent objective as a mode of the pre-training loop."""

    name = "domainindep"

    def __init__(self, num_groups: int = 2) -> None:
        self.num_groups = num_groups

    def params(self) -> dict[str, Any]:
        return {}

    def build(self, model_config: ModelConfig, *, seed: int, device: torch.device, lr: float) -> nn.Module:
        wide = replace(model_config, num_classes=model_config.num_classes * self.num_groups)
        model = build_model(wide, seed=seed)
        find_head(model, wide.num_classes, image_size=wide.image_size)  # a linear head to fold, or a clear error
        return model.to(device)

    def step(self, model: nn.Module, optimizer: Any, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        own = group_logits(model(x), self.num_groups)[torch.arange(len(g), device=g.device), g]  # (N, K)
        loss = nn.functional.cross_entropy(own, y)
        loss.backward()
        optimizer.step()
        return float(loss.item())

    def trained_model(self, model: nn.Module) -> nn.Module:
        return fold_heads(copy.deepcopy(model), self.num_groups).eval()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass(frozen=True)
class DomainIndep(Method):
    name = "domainindep"

    def label(self) -> str:
        return "DomainIndep"

    def run(self, context: MethodContext) -> MethodOutput:
        return train_with(DomainIndepMode(len(context.group_names)), context)
