"""Hessian-diagonal estimators against brute-force autograd on tiny seeded networks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fairprune_core.curvature.hessian import CurvatureConfig, CurvatureEngine, UnsupportedLayerError, hessian_diagonal
from fairprune_core.models import ModelConfig, build_model


def tiny_cnn(seed: int = 0, classes: int = 3, dtype=torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 5),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(5, classes),
    )
    # non-trivial weights so that many ReLUs are active, but an unsaturated softmax (top
    # probability ~0.7): with saturated outputs MC label sampling is unbiased but heavy-tailed
    for p in net.parameters():
        nn.init.normal_(p, 0, 0.4)
    return net.to(dtype)


def data(seed: int = 1, n: int = 12, classes: int = 3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 8, 8, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


def brute_force_diagonal(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """d^2 L / d theta_i^2 for every parameter, one autograd double-backward per entry."""
    net = copy.deepcopy(net).eval()
    loss = nn.functional.cross_entropy(net(x), y)  # MEAN over samples
    out = {}
    for name, p in net.named_parameters():
        (g,) = torch.autograd.grad(loss, p, create_graph=True)
        g = g.reshape(-1)
        diag = torch.empty_like(g)
        for i in range(g.numel()):
            (row,) = torch.autograd.grad(g[i], p, retain_graph=True)
            diag[i] = row.reshape(-1)[i]
        out[name] = diag.reshape(p.shape).detach()
    return out


def batches_of(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def assert_close(a: dict, b: dict, rtol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        scale = b[k].abs().max().item() + 1e-30
        err = (a[k].double() - b[k].double()).abs().max().item()
        assert err <= rtol * scale, f"{k}: max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_equals_brute_force_autograd(dtype):
    net = tiny_cnn(dtype=dtype)
    x, y = data(dtype=dtype)
    # the reference is float64 autograd on the same weights (a float32 double-backward is noisier
    # than the quantity it checks)
    ref = brute_force_diagonal(copy.deepcopy(net).double(), x.double(), y)
    got = hessian_diagonal(net, [(x, y)], estimator="exact")
    assert all(v.dtype == dtype for v in got.values())
    assert_close(got, ref, rtol=1e-10 if dtype == torch.float64 else 1e-5)
    assert any(v.abs().max() > 0 for v in ref.values())
    # VGG-like nets in eval mode: exact Hessian diagonal == GGN diagonal >= 0
    assert all((v >= -1e-6).all() for v in got.values())


def test_exact_on_vgg_matches_brute_force_on_last_layers():
    model = build_model(ModelConfig(num_classes=3, image_size=32, width=1 / 32, dropout=0.5), seed=0).double()
    for p in model.parameters():
        nn.init.normal_(p, 0, 0.3)
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    got = hessian_diagonal(model, [(x, y)])
    loss = nn.functional.cross_entropy(model.eval()(x), y)
    for name in ("classifier.6.weight", "classifier.3.bias", "features.0.bias"):
        p = dict(model.named_parameters())[name]
        (g,) = torch.autograd.grad(loss, p, create_graph=True)
        g = g.reshape(-1)
        ref = torch.stack([torch.autograd.grad(g[i], p, retain_graph=True)[0].reshape(-1)[i] for i in range(g.numel())])
        torch.testing.assert_close(got[name].double().reshape(-1), ref, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("estimator", ["exact", "fisher"])
def test_mean_over_minibatches_equals_full_batch(estimator):
    net = tiny_cnn(dtype=torch.float64)
    x, y = data(n=13, dtype=torch.float64)
    full = hessian_diagonal(net, [(x, y)], estimator=estimator)
    for size in (1, 4, 5):
        assert_close(hessian_diagonal(net, batches_of(x, y, size), estimator=estimator), full, rtol=1e-10)
    # sub-batching inside one mini-batch changes nothing either
    assert_close(hessian_diagonal(net, [(x, y)], estimator=estimator, max_sub_batch=3), full, rtol=1e-10)


def test_fisher_is_mean_of_squared_per_sample_gradients():
    net = tiny_cnn(dtype=torch.float64).eval()
    x, y = data(n=9, dtype=torch.float64)
    ref = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    for i in range(len(y)):
        loss = nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, list(net.parameters()))
        for (n, _), g in zip(net.named_parameters(), grads, strict=True):
            ref[n] += g**2 / len(y)
    assert_close(hessian_diagonal(net, batches_of(x, y, 4), estimator="fisher"), ref, rtol=1e-10)
    # and it is not the square of the mean gradient, which shrinks with batch size
    loss = nn.functional.cross_entropy(net(x), y)
    sq_mean = {
        n: g**2
        for (n, _), g in zip(net.named_parameters(), torch.autograd.grad(loss, list(net.parameters())), strict=True)
    }
    assert sum(v.sum() for v in sq_mean.values()) < 0.7 * sum(v.sum() for v in ref.values())


def test_mc_converges_to_exact():
    net = tiny_cnn(dtype=torch.float64)
    x, y = data(n=10, dtype=torch.float64)
    exact = hessian_diagonal(net, [(x, y)])
    err = {}
    for samples in (1, 400):
        mc = hessian_diagonal(net, [(x, y)], estimator="mc", mc_samples=samples, seed=3)
        num = sum((mc[k] - exact[k]).abs().sum() for k in exact)
        err[samples] = float(num / sum(v.abs().sum() for v in exact.values()))
    assert err[400] < 0.1
    assert err[400] < err[1] / 4
    # seeded: the same seed gives the same estimate, another seed another one
    a = hessian_diagonal(net, [(x, y)], estimator="mc", seed=5)
    b = hessian_diagonal(net, [(x, y)], estimator="mc", seed=5)
    c = hessian_diagonal(net, [(x, y)], estimator="mc", seed=6)
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)


def test_model_is_left_exactly_as_it_was():
    net = tiny_cnn()
    net.train()
    before = copy.deepcopy(net.state_dict())
    x, y = data()
    for est in ("exact", "mc", "fisher"):
        hessian_diagonal(net, batches_of(x, y, 5), estimator=est)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    for m in net.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
        assert not hasattr(m, "_backpack_extend") and not hasattr(m, "input0")
    assert all(p.grad is None for p in net.parameters())
    assert not any(hasattr(p, a) for p in net.parameters() for a in ("diag_ggn_exact", "diag_ggn_mc"))


def test_engine_reloads_weights_between_passes():
    net = tiny_cnn(dtype=torch.float64)
    x, y = data(dtype=torch.float64)
    engine = CurvatureEngine(net, CurvatureConfig())
    other = tiny_cnn(seed=9, dtype=torch.float64)
    engine.load_state_dict(other.state_dict())
    assert_close(engine.sums([(x, y)]).mean(dtype=None), hessian_diagonal(other, [(x, y)]), rtol=1e-10)


def test_models_backpack_cannot_take_fall_back_to_per_sample_gradients_with_the_same_result():
    """An in-place ReLU, a module that is not nn.Sequential, a GELU: BackPACK refuses them, the
    per-sample-gradient engine computes them (tests/test_curvature_any.py checks it against
    brute force on torchvision's architectures); here, against BackPACK on the same function."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    inplace = copy.deepcopy(plain)
    inplace[1] = nn.ReLU(inplace=True)
    batch = [(torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1]))]
    for estimator in ("exact", "fisher"):
        assert_close(
            hessian_diagonal(inplace, batch, estimator=estimator),
            hessian_diagonal(plain, batch, estimator=estimator),
            rtol=1e-10,
        )
    assert inplace[1].inplace, "the caller's model was changed"

    class Custom(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    assert_close(
        hessian_diagonal(Custom(plain), batch),
        {f"inner.{k}": v for k, v in hessian_diagonal(plain, batch).items()},
        rtol=1e-10,
    )
    # a smooth activation: "exact" is the exact GGN diagonal there too (the same as "ggn")
    smooth = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
    batch = [(torch.randn(2, 4), torch.tensor([0, 1]))]
    assert_close(hessian_diagonal(smooth, batch), hessian_diagonal(smooth, batch, estimator="ggn"), rtol=0)
    assert set(hessian_diagonal(smooth, batch)) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    # torchvision's AdaptiveAvgPool2d((7, 7)) at a 4x4 feature map: BackPACK's own error, named
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.AdaptiveAvgPool2d((3, 3)), nn.Flatten(), nn.Linear(18, 2))
    with pytest.raises(UnsupportedLayerError, match="cannot compute 'exact' curvature"):
        hessian_diagonal(net, [(torch.randn(2, 3, 4, 4), torch.tensor([0, 1]))])


def test_empty_and_invalid_input():
    with pytest.raises(ValueError, match="no samples"):
        hessian_diagonal(tiny_cnn(), [])
    with pytest.raises(ValueError, match="unknown estimator 'kfac'"):
        hessian_diagonal(tiny_cnn(), [], estimator="kfac")


def tiny_smooth_net(seed: int = 0, classes: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 4), nn.Sigmoid(), nn.Linear(4, classes)).double()
    for p in net.parameters():
        nn.init.normal_(p, 0, 0.5)
    return net


def brute_force_ggn_diagonal(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """diag(J^T H_z J) of the mean cross-entropy, H_z = diag(p) - p p^T, J = d logits / d theta (autograd)."""
    params = dict(net.named_parameters())
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(y)):
        z = net(x[i : i + 1])[0]
        p = torch.softmax(z, 0).detach()
        h = torch.diag(p) - torch.outer(p, p)
        rows = [torch.autograd.grad(z[k], list(params.values()), retain_graph=True) for k in range(len(z))]
        for j, name in enumerate(params):
            jac = torch.stack([r[j].reshape(-1) for r in rows])  # (K, P)
            out[name] += torch.einsum("kp,kl,lp->p", jac, h, jac).reshape(params[name].shape) / len(y)
    return out


def test_exact_on_a_smooth_network_is_the_ggn_which_is_not_the_hessian_there():
    from fairprune_core.curvature.hessian import smooth_layers

    net = tiny_smooth_net()
    x, y = data(dtype=torch.float64)
    got = hessian_diagonal(net, [(x, y)], estimator="exact")
    assert_close(got, brute_force_ggn_diagonal(net, x, y), rtol=1e-10)
    assert_close(got, hessian_diagonal(net, [(x, y)], estimator="ggn"), rtol=0)
    # and that GGN diagonal is NOT the Hessian diagonal here (what the docs and the run's note say)
    hess = brute_force_diagonal(net, x, y)
    assert (got["1.weight"] - hess["1.weight"]).abs().max() > 1e-3 * hess["1.weight"].abs().max()
    assert smooth_layers(net) == ["Sigmoid"] and smooth_layers(tiny_cnn()) == []


def _relative_l1(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    return float(sum((got[k] - ref[k]).abs().sum() for k in ref) / sum(v.abs().sum() for v in ref.values()))


def test_hutchinson_converges_to_autograds_hessian_diagonal_on_a_smooth_network():
    """The mean over probes is unbiased: its error against the brute-force Hessian diagonal falls
    like 1/sqrt(probes), and it is seeded; the GGN stays off by the curvature it leaves out."""
    net = tiny_smooth_net()
    x, y = data(dtype=torch.float64)
    hess = brute_force_diagonal(net, x, y)
    err = {
        probes: _relative_l1(hessian_diagonal(net, [(x, y)], estimator="hutchinson", probes=probes, seed=1), hess)
        for probes in (16, 16384)
    }
    assert err[16384] < 0.08, err  # measured 0.049 (16 probes: 1.40; the GGN: 0.63)
    assert err[16384] < err[16] / 16, f"the error does not fall like 1/sqrt(probes): {err}"
    ggn_err = _relative_l1(hessian_diagonal(net, [(x, y)], estimator="ggn"), hess)
    assert err[16384] < ggn_err / 4, (
        f"Hutchinson ({err[16384]:.3f}) is not nearer the Hessian than the GGN ({ggn_err:.3f})"
    )
    again = hessian_diagonal(net, [(x, y)], estimator="hutchinson", probes=16, seed=1)
    first = hessian_diagonal(net, [(x, y)], estimator="hutchinson", probes=16, seed=1)
    assert all(torch.equal(first[k], again[k]) for k in first), "not reproducible from its seed"


def test_hutchinson_equals_exact_in_expectation_on_a_piecewise_linear_network():
    net = tiny_cnn()
    x, y = data()
    exact = hessian_diagonal(net, [(x, y)])
    err = {
        n: _relative_l1(
            hessian_diagonal(net, [(x[:4], y[:4]), (x[4:], y[4:])], estimator="hutchinson", probes=n), exact
        )
        for n in (64, 2048)
    }
    # unbiased: 32x the probes cut the error about sqrt(32) = 5.7x (a biased estimate would level off)
    assert err[2048] < err[64] / 3.5 and err[2048] < 0.3, err


def test_ggn_equals_exact_on_a_piecewise_linear_network():
    net = tiny_cnn()
    x, y = data()
    assert_close(
        hessian_diagonal(net, [(x, y)], estimator="ggn"), hessian_diagonal(net, [(x, y)], estimator="exact"), 0
    )


def test_passes_are_sized_by_a_memory_budget_that_scales_with_the_classes():
    from fairprune_core.curvature.hessian import (
        CPU_MEMORY_BUDGET,
        CurvatureConfig,
        CurvatureEngine,
        activation_elements,
        sub_batch_for_budget,
    )
    from fairprune_core.models import ModelConfig, build_model

    model = build_model(ModelConfig(num_classes=8, image_size=32, width=0.0625), seed=0)
    # an independent count: run the chain of leaf layers by hand on one 32 px sample
    x = torch.zeros(1, 3, 32, 32)
    expected, h = x.numel(), x
    for layer in [m for m in model.modules() if not list(m.children())]:
        h = layer(h)
        expected += h.numel()
    assert h.shape == (1, 8)
    assert activation_elements(model, (3, 32, 32)) == expected
    assert sub_batch_for_budget(1000, 10, 80_000) == 1 == sub_batch_for_budget(1000, 10, 1)
    assert sub_batch_for_budget(1000, 1, 800_000) == 100
    exact = CurvatureEngine(model, CurvatureConfig(estimator="exact")).sub_batch((3, 32, 32))
    mc = CurvatureEngine(model, CurvatureConfig(estimator="mc")).sub_batch((3, 32, 32))
    assert exact == CPU_MEMORY_BUDGET // (8 * expected * 8)
    assert mc // exact in (7, 8, 9)  # one sampled row instead of eight classes
    assert CurvatureEngine(model, CurvatureConfig(max_sub_batch=5)).sub_batch((3, 32, 32)) == 5
