"""The architectures' names: one dict filled where each is defined (``@register_model``), with every
torchvision classification model behind it. Apart from :mod:`.registry` (which builds them) so
that :class:`~fairprune_core.models.config.ModelConfig` can check a name without an import loop."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = ["BUILDERS", "BUILTIN", "check_arch", "list_models", "register_model"]

BUILTIN = "fairprune_vgg11"  # the paper's VGG-11 (models/vgg.py): the default

Builder = Callable[[Any], Any]  # ModelConfig -> nn.Module
BUILDERS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder(config) -> nn.Module`` under ``name`` (a name is registered once)."""

    def add(builder: Builder) -> Builder:
        if name in BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        BUILDERS[name] = builder
        return builder

    return add


@cache
def _torchvision_names() -> tuple[str, ...]:
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


def list_models() -> list[str]:
    """Every architecture name ``--model`` takes: the built-in VGG-11 first, then any other registered,
    then torchvision's."""
    ours = [BUILTIN, *(n for n in BUILDERS if n != BUILTIN)]
    return [*ours, *(n for n in _torchvision_names() if n not in ours)]


def check_arch(name: str) -> None:
    """A ``ValueError`` naming ``name`` and the nearest known names unless it is an architecture."""
    known = list_models()
    if name not in known:
        near = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ValueError(
            f"unknown model {name!r}{hint} (--model takes {BUILTIN}, the built-in VGG-11, or a torchvision "
            f"classification model: resnet18, densenet121, efficientnet_b0, vit_b_16, ...; {len(known)} in all)"
        )
