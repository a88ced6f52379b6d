"""Curvature on any architecture: torchvision's resnet18, mobilenet_v3_small, densenet121,
efficientnet_b0 and a small VisionTransformer, at 32 px, through ``hessian_diagonal``.

Every estimator is checked against an independent reference built here from plain autograd:
the GGN diagonal from each sample's full Jacobian (``J^T (diag p - p p^T) J``, averaged), the
empirical Fisher from a loop of single-sample backward passes, and the Monte Carlo estimate in
expectation."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.func import functional_call, jacrev

from fairprune_core.curvature.hessian import hessian_diagonal, smooth_layers

CLASSES = 3


def _vit() -> torch.nn.Module:
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=CLASSES
    )


ARCHITECTURES = {
    "resnet18": lambda: torchvision.models.get_model("resnet18", num_classes=CLASSES),
    "mobilenet_v3_small": lambda: torchvision.models.get_model("mobilenet_v3_small", num_classes=CLASSES),
    "densenet121": lambda: torchvision.models.get_model("densenet121", num_classes=CLASSES),
    "efficientnet_b0": lambda: torchvision.models.get_model("efficientnet_b0", num_classes=CLASSES),
    "vit": _vit,
}
PIECEWISE_LINEAR = {"resnet18", "densenet121"}  # ReLU, max-pool, BatchNorm in eval, sums, concatenation


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ARCHITECTURES[name]()
    # trained-looking batch-norm statistics, so that eval mode is not the identity
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.train()  # the caller's mode: curvature must not change it


def _brute_ggn(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model = model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
    for xi in x:

        def f(p, xi=xi):
            return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)

        with torch.no_grad():
            prob = torch.softmax(f(params).double(), 0)
        h = torch.diag(prob) - torch.outer(prob, prob)
        for k, j in jacrev(f)(params).items():
            jj = j.reshape(j.shape[0], -1).double()
            total[k] += torch.einsum("ci,cd,di->i", jj, h, jj).reshape(total[k].shape)
    return {k: v / len(x) for k, v in total.items()}


def _brute_fisher(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model = model.eval()
    total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in model.named_parameters()}
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(xi.unsqueeze(0)), yi.unsqueeze(0)).backward()
        for k, p in model.named_parameters():
            total[k] += p.grad.double() ** 2
    model.zero_grad()
    return {k: v / len(x) for k, v in total.items()}


def _close(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], rel: float) -> None:
    assert set(got) == set(ref)
    for k, r in ref.items():
        scale = r.abs().max().clamp_min(1e-12)
        err = float((got[k].double() - r).abs().max() / scale)
        assert err <= rel, f"{k}: relative error {err:.2e} > {rel:.0e}"


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 32, 32, generator=g), torch.tensor([0, 2, 1])


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_ggn_diagonal_equals_the_full_jacobian_reference_and_leaves_the_model_unchanged(name, data):
    x, y = data
    model = _model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = hessian_diagonal(model, [(x[:2], y[:2]), (x[2:], y[2:])], estimator="exact", max_sub_batch=2)
    assert model.training, "the caller's model was put in eval mode"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model was changed"
    assert all(p.grad is None for p in model.parameters())
    # the reference in float64: a float32 Jacobian through DenseNet's 121 layers is itself off by ~7e-3
    _close(got, _brute_ggn(_model(name).double(), x.double()), 1e-4)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_exact_and_ggn_are_one_computation_and_the_smooth_layers_are_named(name, data):
    x, y = data
    exact = hessian_diagonal(_model(name), [(x, y)], estimator="exact")
    _close(exact, hessian_diagonal(_model(name), [(x, y)], estimator="ggn"), 1e-6)
    # SiLU, Hardswish, GELU, LayerNorm, attention: there the GGN is not the Hessian (said in a run's note)
    assert (smooth_layers(_model(name)) == []) == (name in PIECEWISE_LINEAR)


@pytest.mark.parametrize("name", ["resnet18", "vit"])
def test_fisher_equals_single_sample_backward_passes(name, data):
    x, y = data
    got = hessian_diagonal(_model(name), [(x, y)], estimator="fisher")
    _close(got, _brute_fisher(_model(name).double(), x.double(), y), 1e-4)


def test_mc_is_the_ggn_in_expectation_and_seeded(data):
    x, y = data
    ggn = hessian_diagonal(_model("vit"), [(x, y)], estimator="ggn")
    mc = hessian_diagonal(_model("vit"), [(x, y)], estimator="mc", mc_samples=4000, seed=3)
    again = hessian_diagonal(_model("vit"), [(x, y)], estimator="mc", mc_samples=4000, seed=3)
    assert all(torch.equal(mc[k], again[k]) for k in mc), "mc is not reproducible from its seed"
    num = sum(float((mc[k] - ggn[k]).abs().sum()) for k in ggn)
    den = sum(float(ggn[k].abs().sum()) for k in ggn)
    assert num / den < 0.05, f"mc's mean is {num / den:.3f} (L1, relative) away from the GGN diagonal"


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_fairprune_prunes_a_torchvision_classifier_through_the_library(name):
    """Eq. (4)'s loop on a torchvision architecture: masks over its conv and linear weights (not
    norms, not biases), the final ratio reached exactly, pruned weights zero, the input untouched."""
    import numpy as np

    from fairprune_core.masks import prunable_parameters
    from fairprune_core.pruning import GroupSampler, fairprune

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, size=24)
    model = _model(name).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = [GroupSampler(images[g::2], labels[g::2], batch_size=6, num_batches=1, seed=g) for g in (0, 1)]
    result = fairprune(model, groups[0], groups[1], beta=0.2, step_ratio=0.05, final_ratio=0.1, estimator="exact")
    assert set(result.masks) == set(prunable_parameters(model))
    kept = sum(int(m.sum()) for m in result.masks.values())
    total = sum(m.numel() for m in result.masks.values())
    assert abs((1 - kept / total) - 0.1) <= 1 / total, "the final ratio is reached exactly"
    params = dict(result.model.named_parameters())
    assert all(float(params[n].detach()[~m].abs().sum()) == 0 for n, m in result.masks.items())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the input model was changed"
