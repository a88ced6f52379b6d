"""OBD (LeCun, Denker, Solla, NIPS 1989), the paper's pruning baseline.

Saliency ``s_i = 1/2 theta_i^2 h_ii`` with ``h`` the Hessian diagonal of the loss on all
training data (groups ignored); the smallest are pruned, ``step_ratio`` per step, up to
``final_ratio``, with the curvature recomputed after every step (the loop FairPrune uses).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check_ratio_pair
from ..pruning import obd
from .base import Method, MethodContext, MethodOutput

__all__ = ["OBD"]


@dataclass(frozen=True)
class OBD(Method):
    step_ratio: float = 0.05
    final_ratio: float = 0.35

    name = "obd"

    def __post_init__(self) -> None:
        check_ratio_pair(self.step_ratio, self.final_ratio)

    def label(self) -> str:
        return "OBD"

    def run(self, context: MethodContext) -> MethodOutput:
        result = obd(
            context.model,
            context.data.all,
            step_ratio=self.step_ratio,
            final_ratio=self.final_ratio,
            curvature=context.curvature,
            validation=context.validation,
            num_classes=context.num_classes,
            initial_curvature=context.initial_curvature,
            initial_validation=context.initial_validation,
            log=context.log,
            on_step=context.on_step,
        )
        return MethodOutput.from_pruning(result)
