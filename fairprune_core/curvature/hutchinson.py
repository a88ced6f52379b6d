"""Hutchinson's estimator of the Hessian diagonal, for networks whose GGN is not their Hessian.

With smooth activations (SiLU, GELU, Hardswish), LayerNorm or softmax attention the network's
own second derivatives add to the GGN, which the exact/mc estimators leave out (Eq. 1 of the
paper passes over this: on its ReLU VGG-11 the two agree). For Rademacher probes ``z`` (entries
+-1), ``E[z * (H z)] = diag(H)``: each probe is one Hessian-vector product (a double backward
through the summed loss of a sub-batch), and the estimate is the mean over ``probes`` probes,
unbiased, with a variance that falls as ``1 / probes``. The Hessian of the SUMMED loss is the
sum of the per-sample Hessians, so a sub-batch gives the sum its samples contribute
(:class:`~fairprune_core.curvature.base.DiagSums`), combined exactly over mini-batches and workers.
Probes are seeded per sub-batch (the ``mc`` seeding), so a result does not depend on the worker.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .base import ChunkedEngine, CurvatureConfig, DiagSums, activation_elements, default_memory_budget
from .per_sample import math_attention

__all__ = ["HutchinsonEngine"]

# One double-backward pass keeps about four float32 copies of the activations (forward, gradient,
# and their tangents) per sample.
_BYTES_PER_ELEMENT = 16


class HutchinsonEngine(ChunkedEngine):
    """The curvature engine interface; a private copy of the model in eval mode."""

    def __init__(self, model: nn.Module, config: CurvatureConfig, *, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).to(self.device).eval()
        for module in self.model.modules():  # double backward through an in-place activation fails
            if getattr(module, "inplace", False):
                module.inplace = False
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.names = [n for n, _ in self.model.named_parameters()]
        self.num_classes = None
        self._sub_batch: dict[tuple[int, ...], int] = {}

    def sub_batch(self, sample_shape: tuple[int, ...]) -> int:
        if self.config.max_sub_batch is not None:
            return self.config.max_sub_batch
        if sample_shape not in self._sub_batch:
            elements = activation_elements(self.model, sample_shape)
            budget = default_memory_budget(self.device)
            self._sub_batch[sample_shape] = max(1, int(budget // (_BYTES_PER_ELEMENT * elements)))
        return self._sub_batch[sample_shape]

    def _pass(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> DiagSums:
        x, y = x.to(self.device), y.to(self.device)
        params = [p for _, p in self.model.named_parameters()]
        gen = torch.Generator(device="cpu").manual_seed(seed)
        sums = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        with math_attention():
            loss = nn.functional.cross_entropy(self.model(x), y, reduction="sum")
            grads = torch.autograd.grad(loss, params, create_graph=True)
            probes = self.config.probes
            for i in range(probes):
                zs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p.device, p.dtype) for p in params]
                hz = torch.autograd.grad(grads, params, grad_outputs=zs, retain_graph=i < probes - 1, allow_unused=True)
                for s, z, h in zip(sums, zs, hz, strict=True):
                    if h is not None:  # its gradient does not depend on the parameters: zero curvature
                        s += (z * h).double()
        return DiagSums({n: s / probes for n, s in zip(self.names, sums, strict=True)}, int(y.shape[0]))
