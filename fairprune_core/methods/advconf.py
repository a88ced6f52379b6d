"""AdvConf: adversarial confusion of the sensitive attribute (Alvi, Zisserman, Nellaker,
"Turning a Blind Eye: Explicit Removal of Biases and Variation from Deep Neural Network
Embeddings", ECCV Workshops 2018; the FairPrune paper's [2, 25]).

An adversarial head ``a`` predicts the group ``g`` from the penultimate features
``phi(x)`` (the input of the network's last linear layer, its classification head: found by
:func:`~fairprune_core.models.find_head` on any architecture). Each mini-batch makes two updates, in turn:

    head:     min_a   CE(a(phi(x)), g)                                  (phi held fixed)
    network:  min_f   CE(f(x), y) + w * CE(a(phi(x)), U),   CE(p, U) = -1/G sum_g log softmax(p)_g

with ``U`` the uniform distribution over the ``G`` groups (the head held fixed): the network
is trained to classify while making the head's output uniform, i.e. its features carry no
information the head can use about the group. ``w`` is ``adv_weight`` (``--adv-weight``,
default 1.0; the FairPrune paper gives none). The head is linear and trained with Adam at
the network's learning rate. The model returned is the network alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models import ModelConfig, build_model, find_head, forward_with_features
from .base import Method, MethodContext, MethodOutput, train_with

__all__ = ["AdvConf", "AdvConfMode", "confusion_loss", "penultimate"]


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """phi(x): the features entering the model's classification head, ``(N, features)``."""
    _, head = find_head(model, model.config.num_classes)
    return forward_with_features(model, head, x)[1]


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between softmax(logits) and the uniform distribution, averaged over samples."""
    return -torch.log_softmax(logits, dim=1).mean(dim=1).mean()


class AdvConfMode:
    """The AdvConf objective as a mode of the pre-training loop."""

    name = "advconf"

    def __init__(self, adv_weight: float, num_groups: int = 2) -> None:
        self.adv_weight = adv_weight
        self.num_groups = num_groups
        self.head: nn.Linear | None = None  # the adversary
        self.head_optimizer: Any = None
        self.classifier: nn.Module | None = None  # the network's own head, whose input is phi(x)

    def params(self) -> dict[str, Any]:
        return {"adv_weight": self.adv_weight}

    def build(self, model_config: ModelConfig, *, seed: int, device: torch.device, lr: float) -> nn.Module:
        model = build_model(model_config, seed=seed).to(device)
        _, self.classifier = find_head(model, model_config.num_classes, image_size=model_config.image_size)
        self.head = nn.Linear(self.classifier.in_features, self.num_groups).to(device)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=lr)
        return model

    def step(self, model: nn.Module, optimizer: Any, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> float:
        assert self.head is not None and self.classifier is not None, "build() first"
        logits, features = forward_with_features(model, self.classifier, x)
        # the head learns to predict the group from features it cannot change
        self.head_optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.head(features.detach()), g).backward()
        self.head_optimizer.step()
        # the network classifies and confuses the (fixed) head
        optimizer.zero_grad(set_to_none=True)
        task = nn.functional.cross_entropy(logits, y)
        (task + self.adv_weight * confusion_loss(self.head(features))).backward()
        optimizer.step()
        self.head.zero_grad(set_to_none=True)  # its gradient from the network's step is not used
        return float(task.item())

    def trained_model(self, model: nn.Module) -> nn.Module:
        return model

    def state_dict(self) -> dict[str, Any]:
        assert self.head is not None
        return {"head": self.head.state_dict(), "head_optimizer": self.head_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and self.head is not None:
            self.head.load_state_dict(state["head"])
            self.head_optimizer.load_state_dict(state["head_optimizer"])


@dataclass(frozen=True)
class AdvConf(Method):
    adv_weight: float = 1.0  # weight w of the confusion loss

    name = "advconf"

    def __post_init__(self) -> None:
        if not self.adv_weight >= 0:
            raise ValueError(f"adv_weight must be >= 0, got {self.adv_weight}")

    def label(self) -> str:
        return "AdvConf"

    def run(self, context: MethodContext) -> MethodOutput:
        return train_with(AdvConfMode(self.adv_weight, len(context.group_names)), context)
