"""FairPrune (Wu et al., MICCAI 2022, Eq. 3-4 and Sec. 3.3).

Saliency ``s_i = 1/2 theta_i^2 (h0_ii - beta h1_ii)``, ``h0`` the Hessian diagonal of the loss
on the UNPRIVILEGED group and ``h1`` on the PRIVILEGED group; the smallest (signed) are pruned,
``step_ratio`` per step, up to ``final_ratio``, curvature recomputed after every step. With
``stop_eopp1`` it stops once validation Eopp1 reaches the target (the paper's "until the
target fairness metric is achieved"): a success, never to be confused with an abort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import check_ratio_pair
from ..pruning import fairprune
from .base import Method, MethodContext, MethodOutput

__all__ = ["FairPrune"]


@dataclass(frozen=True)
class FairPrune(Method):
    beta: float = 0.33
    step_ratio: float = 0.05
    final_ratio: float = 0.35
    stop_eopp1: float | None = None

    name = "fairprune"
    role = "pruning"

    def __post_init__(self) -> None:
        check_ratio_pair(self.step_ratio, self.final_ratio)
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}")

    def label(self) -> str:
        return f"FairPrune (b={self.beta:g})"

    def run(self, context: MethodContext) -> MethodOutput:
        result = fairprune(
            context.model,
            context.data.unprivileged,
            context.data.privileged,
            beta=self.beta,
            step_ratio=self.step_ratio,
            final_ratio=self.final_ratio,
            curvature=context.curvature,
            validation=context.validation,
            num_classes=context.num_classes,
            initial_curvature=context.initial_curvature,
            initial_validation=context.initial_validation,
            stop_at={"eopp1": self.stop_eopp1} if self.stop_eopp1 is not None else None,
            stop_when=context.stop_when,
            log=context.log,
            on_step=context.on_step,
        )
        return MethodOutput.from_pruning(result)
