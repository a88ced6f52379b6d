"""Vanilla: the pre-trained model as it is (the reference every other method is compared with)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from .base import Method, MethodContext, MethodOutput

__all__ = ["Vanilla"]


@dataclass(frozen=True)
class Vanilla(Method):
    name = "vanilla"

    def label(self) -> str:
        return "Vanilla"

    def run(self, context: MethodContext) -> MethodOutput:
        return MethodOutput(copy.deepcopy(context.model).eval())
