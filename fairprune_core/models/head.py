"""The classification head of any classifier: the last linear layer, whose output IS the logits,
and the features that feed it (what the training-time baselines act on)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["find_head", "forward_with_features"]


def find_head(model: nn.Module, num_classes: int, *, image_size: int | None = None) -> tuple[str, nn.Linear]:
    """``(name, layer)`` of the linear layer whose output is the model's logits: the last
    ``nn.Linear`` with ``num_classes`` outputs, checked (with ``image_size``) on a forward pass of two
    images. A ``ValueError`` naming the architecture where there is none (a convolutional head)."""
    candidates = [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    arch = getattr(getattr(model, "config", None), "arch", type(model).__name__)
    if not candidates:
        raise ValueError(
            f"{arch} has no linear layer with {num_classes} outputs to serve as its classification head; the "
            f"training-time baselines (advconf, advrev, domainindep) need one. Prune it with fairprune or obd only"
        )
    name, head = candidates[-1]
    if image_size is not None:
        _check_gives_logits(model, head, name, image_size, arch)
    return name, head


def _check_gives_logits(model: nn.Module, head: nn.Linear, name: str, image_size: int, arch: str) -> None:
    p = next(model.parameters())
    # drawn from a generator of its own: the check leaves the global RNG (training's shuffles) as it was
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
    was_training = model.training
    try:
        with torch.no_grad(), _capture(head) as seen:
            out = model.eval()(x)
    finally:
        model.train(was_training)
    if not seen or not torch.equal(seen["out"], out):
        raise ValueError(
            f"{arch}'s last linear layer {name!r} does not return the model's logits (the forward changes them "
            f"after it); the training-time baselines need a model that ends in a linear head"
        )


@contextmanager
def _capture(head: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    seen: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["features"], seen["out"] = inputs[0], out

    handle = head.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def forward_with_features(model: nn.Module, head: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, phi(x))``: the model's output and its head's input, ``(N, K)`` and ``(N, features)``,
    from one forward pass (gradients flow through both)."""
    with _capture(head) as seen:
        logits = model(x)
    return logits, seen["features"].flatten(1)
