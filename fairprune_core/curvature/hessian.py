"""Diagonal curvature of the mean cross-entropy, per parameter (the h_ii of Eq. 1 and 4).

Public entry point: :func:`hessian_diagonal`, for ANY ``nn.Module`` classifier in eval mode
(:func:`make_engine` picks the implementation). The estimators:

``exact``
    The exact diagonal of the generalized Gauss-Newton matrix, ``diag(J^T (diag p - p p^T) J)``
    averaged over the samples: BackPACK ``DiagGGNExact`` on the built-in VGG-11 and where its
    converter works (ResNets), per-sample gradients (:mod:`.per_sample`) elsewhere. For a network
    piecewise linear in its input before the softmax (conv, linear, ReLU, max-pool, batch norm
    in eval mode: VGG-11, ResNets, DenseNets) the GGN diagonal IS the exact Hessian diagonal. With
    smooth activations (SiLU, GELU, Hardswish: EfficientNet, MobileNetV3), LayerNorm or attention
    (ViT) it is the GGN, which leaves out the network's own second derivatives
    (:func:`smooth_layers` names them; ``hutchinson`` estimates the Hessian itself). Cost grows with
    the number of classes (one backward pass per class); mini-batches are split into sub-batches.
``ggn``
    The same computation under its own name.
``mc``
    BackPACK ``DiagGGNMC`` (or its per-sample equivalent): an unbiased Monte Carlo estimate of the
    same diagonal from ``mc_samples`` sampled labels per input; cost independent of the number of
    classes (the practical choice for the 114 classes of Fitzpatrick17k). Seeded per mini-batch.
``fisher``
    The per-sample empirical Fisher diagonal, the mean over samples of the squared per-sample
    gradient (BackPACK ``SumGradSquared``). NOT the square of a mini-batch's mean gradient,
    which shrinks with the batch size. Its scale differs from the Hessian's (it uses the
    observed labels instead of the model's predictive distribution), which changes the balance
    between h0 and h1 and so shifts the effective beta of FairPrune.
``hutchinson``
    Hutchinson's unbiased estimate of the Hessian diagonal itself (:mod:`.hutchinson`), from
    ``probes`` Rademacher probes per sub-batch: the estimator for smooth networks.

Every estimator produces SUMS over samples plus the sample count (:class:`DiagSums`), so
results from many mini-batches or many workers combine exactly (in float64) into the mean.
The diagonal of the mean loss is linear in the data, so for ``exact`` and ``fisher`` the
mini-batch size changes only speed and memory, never the result.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..config import ESTIMATORS
from .base import (
    CPU_MEMORY_BUDGET,
    ChunkedEngine,
    CurvatureConfig,
    DiagSums,
    Estimator,
    activation_elements,
    batch_seed,
    default_memory_budget,
)

__all__ = [
    "CPU_MEMORY_BUDGET",
    "ESTIMATORS",
    "CurvatureConfig",
    "CurvatureEngine",
    "DiagSums",
    "Estimator",
    "UnsupportedLayerError",
    "batch_seed",
    "hessian_diagonal",
    "make_engine",
    "smooth_layers",
]


# Leaf modules whose curvature BackPACK propagates (for the second-order estimators in eval mode).
_SUPPORTED = (
    nn.Conv2d,
    nn.Linear,
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.BatchNorm2d,
    nn.Sigmoid,
    nn.Tanh,
    nn.AdaptiveAvgPool2d,
    nn.ZeroPad2d,
)
# Layers with curvature of their own (smooth activations, normalisation over features, softmax
# attention): the GGN diagonal drops their second derivative, so it is not the Hessian's there.
_SMOOTH = (
    nn.Sigmoid,
    nn.Tanh,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.ELU,
    nn.Mish,
    nn.LayerNorm,
    nn.MultiheadAttention,
)


class UnsupportedLayerError(TypeError):
    """The model has a layer the curvature estimators cannot differentiate."""


def check_supported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedLayerError` naming the first layer BackPACK cannot handle."""
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayerError(
            f"the model's top module is {type(model).__name__}; BackPACK only differentiates "
            f"nn.Sequential containers. Build it with fairprune_core.models.build_model or wrap "
            f"its layers in nn.Sequential (use nn.Flatten instead of torch.flatten in forward)."
        )
    for name, module in model.named_modules():
        if list(module.children()):
            if not isinstance(module, nn.Sequential):
                raise UnsupportedLayerError(
                    f"layer {name!r} is a {type(module).__name__} container; only nn.Sequential "
                    f"containers are supported. Flatten it into nn.Sequential."
                )
            continue
        if getattr(module, "inplace", False):
            raise UnsupportedLayerError(
                f"layer {name!r} ({module}) is in-place; BackPACK's hooks fail on in-place "
                f"views. Rebuild it with inplace=False."
            )
        if not isinstance(module, _SUPPORTED):
            raise UnsupportedLayerError(
                f"layer {name!r} ({type(module).__name__}) is not supported by the curvature "
                f"estimators; replace it with one of: {', '.join(t.__name__ for t in _SUPPORTED)}"
            )


def smooth_layers(model: nn.Module) -> list[str]:
    """Type names of the layers with curvature of their own (empty: the GGN diagonal of ``model``
    is its exact Hessian diagonal)."""
    return sorted({type(m).__name__ for m in model.modules() if isinstance(m, _SMOOTH)})


# One BackPACK pass keeps, per sample, the forward activations and backpropagates a matrix of
# (classes x activation) float32 values through each layer ("mc": mc_samples rows, "fisher": one);
# 8 bytes per activation element and row bounds both (autograd's saved tensors included).
_BYTES_PER_ELEMENT = 8


def sub_batch_for_budget(elements: int, rows: int, budget: int) -> int:
    """Samples per pass within ``budget`` bytes, for ``elements`` activations per sample and
    ``rows`` backpropagated rows (classes for exact/ggn, mc_samples for mc, 1 for fisher); >= 1."""
    return max(1, int(budget // (_BYTES_PER_ELEMENT * elements * max(rows, 1))))


class CurvatureEngine(ChunkedEngine):
    """A private BackPACK-extended replica of a model, for repeated curvature passes.

    The caller's model is never modified: the engine deep-copies it, puts the copy in eval mode
    (no dropout, batch-norm statistics frozen) and extends only the copy. Load new weights with
    :meth:`load_state_dict` between passes (what a pruning step or a remote worker does).
    """

    def __init__(
        self, model: nn.Module, config: CurvatureConfig, *, device: str | torch.device = "cpu", converter: bool = False
    ) -> None:
        from backpack import extend  # heavy import, only when curvature is used

        if not converter:
            check_supported(model)
        self.config = config
        self.device = torch.device(device)
        replica = copy.deepcopy(model).to(self.device).eval()
        for p in replica.parameters():
            p.requires_grad_(True)
            p.grad = None
        # converter: BackPACK traces a module that is not an nn.Sequential stack (residual sums:
        # torchvision's ResNets) into one it differentiates, keeping the parameters' names
        self.model = extend(replica, use_converter=True) if converter else extend(replica)
        self.loss = extend(nn.CrossEntropyLoss(reduction="sum"))
        self.names = [n for n, _ in self.model.named_parameters()]
        out = getattr(model, "config", None)
        self.num_classes = getattr(out, "num_classes", None) or self._infer_classes()
        self._sub_batch: dict[tuple[int, ...], int] = {}

    def _infer_classes(self) -> int:
        last = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        return last[-1].out_features if last else 2

    def sub_batch(self, sample_shape: tuple[int, ...]) -> int:
        """Samples per BackPACK pass: ``max_sub_batch`` if set, else what the memory budget allows."""
        if self.config.max_sub_batch is not None:
            return self.config.max_sub_batch
        if sample_shape not in self._sub_batch:
            rows = {"exact": self.num_classes, "ggn": self.num_classes, "mc": self.config.mc_samples, "fisher": 1}
            elements = activation_elements(self.model, sample_shape)
            self._sub_batch[sample_shape] = sub_batch_for_budget(
                elements, rows[self.config.estimator], default_memory_budget(self.device)
            )
        return self._sub_batch[sample_shape]

    def _pass(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> DiagSums:
        from backpack import backpack
        from backpack.extensions import DiagGGNExact, DiagGGNMC, SumGradSquared

        est = self.config.estimator
        ext, attr = {
            "exact": (DiagGGNExact, "diag_ggn_exact"),
            "ggn": (DiagGGNExact, "diag_ggn_exact"),
            "mc": (DiagGGNMC, "diag_ggn_mc"),
            "fisher": (SumGradSquared, "sum_grad_squared"),
        }[est]
        extension = ext(mc_samples=self.config.mc_samples) if est == "mc" else ext()
        x, y = x.to(self.device), y.to(self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            with warnings.catch_warnings():
                # BackPACK's full backward hooks fire although the input needs no gradient
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss = self.loss(self.model(x), y)
                try:
                    with backpack(extension):
                        loss.backward()
                except NotImplementedError as exc:
                    raise UnsupportedLayerError(
                        f"BackPACK cannot compute {est!r} curvature for this model at input "
                        f"{tuple(x.shape[1:])}: {exc}. Compute it with make_engine (per-sample gradients for "
                        f"any architecture)."
                    ) from exc
        sums = {}
        for name, p in self.model.named_parameters():
            value = getattr(p, attr)
            sums[name] = value.detach().to(torch.float64)  # stays on the device: no copy per pass
            delattr(p, attr)
            p.grad = None
        return DiagSums(sums, int(y.shape[0]))


def make_engine(model: nn.Module, config: CurvatureConfig, *, device: str | torch.device = "cpu") -> Any:
    """The curvature engine for ``model``: BackPACK's (:class:`CurvatureEngine`) for the ``nn.Sequential``
    stacks it differentiates (the built-in VGG-11), BackPACK through its converter or per-sample
    gradients (:class:`~fairprune_core.curvature.per_sample.FuncCurvatureEngine`) for any other
    architecture, Hessian-vector products for ``hutchinson``. All compute the same quantities (tested
    against a brute-force GGN diagonal and autograd's Hessian)."""
    if config.estimator == "hutchinson":
        from .hutchinson import HutchinsonEngine

        return HutchinsonEngine(model, config, device=device)
    try:
        check_supported(model)
    except UnsupportedLayerError:
        return _ConvertedOrPerSample(model, config, device=device)
    return CurvatureEngine(model, config, device=device)


class _ConvertedOrPerSample(ChunkedEngine):
    """BackPACK through its converter where that works (ResNets: several times faster than
    per-sample gradients, ``benchmarks/curvature_cost.py``), else per-sample gradients. The
    converter fails on some architectures (DenseNet, MobileNetV3, EfficientNet: torch.fx errors)
    when extending or at the first pass; the engine then falls back for good, before any result."""

    def __init__(self, model: nn.Module, config: CurvatureConfig, *, device: str | torch.device = "cpu") -> None:
        from .per_sample import FuncCurvatureEngine

        self._model, self.config, self.device = model, config, torch.device(device)
        self._fallback = lambda: FuncCurvatureEngine(model, config, device=device)
        self._tried = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.engine: Any = CurvatureEngine(model, config, device=device, converter=True)
        except Exception:
            self.engine, self._tried = self._fallback(), True
        self.names = self.engine.names
        self.num_classes = getattr(self.engine, "num_classes", None)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.engine.load_state_dict(state)

    def sub_batch(self, sample_shape: tuple[int, ...]) -> int:
        return self.engine.sub_batch(sample_shape)

    def batch_sums(self, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> DiagSums:
        if self._tried:
            return self.engine.batch_sums(x, y, seed=seed)
        state = {k: v.detach().clone() for k, v in self.engine.model.state_dict().items()}
        try:
            out = self.engine.batch_sums(x, y, seed=seed)
            if set(out.sums) != {n for n, _ in self._model.named_parameters()}:
                raise UnsupportedLayerError("the converted model lost parameters")
        except Exception:
            self.engine = self._fallback()
            self.engine.load_state_dict(state)  # the weights loaded since (a pruning step's)
            out = self.engine.batch_sums(x, y, seed=seed)
        self._tried = True
        return out


def hessian_diagonal(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    estimator: Estimator = "exact",
    mc_samples: int = 1,
    probes: int = 16,
    max_sub_batch: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Diagonal of the Hessian of the MEAN cross-entropy over all samples in ``batches``.

    ``batches`` yields ``(inputs, labels)``: float inputs ready for the model and int64
    labels. Returns ``{parameter name: tensor of the parameter's shape}`` (float32). Computed in
    eval mode on a private copy: ``model`` keeps its weights, mode, hooks and gradients.
    See the module docstring for the estimators.
    """
    config = CurvatureConfig(
        estimator=estimator, mc_samples=mc_samples, probes=probes, max_sub_batch=max_sub_batch, seed=seed
    )
    if device is None:
        device = next(model.parameters()).device
    engine = make_engine(model, config, device=device)
    mean = engine.sums(batches).mean(dtype=None)
    return {n: mean[n].to(p.dtype) for n, p in model.named_parameters()}
