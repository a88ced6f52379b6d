"""FairPrune and OBD: the recipe against a hand-computed reference, ratios, masks, errors."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from fairprune_core.checkpoint import load_checkpoint, save_pruned
from fairprune_core.models import ModelConfig, build_model
from fairprune_core.pruning import (
    GroupSampler,
    PruneSchedule,
    detect_privileged,
    fairprune,
    obd,
    prunable_parameters,
    select_smallest,
)

from .test_hessian import brute_force_diagonal


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 2 * 2, 6),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).double()
    for p in net.parameters():
        nn.init.normal_(p, 0, 0.5)
    return net


def group_batches(seed: int, n: int = 8, shift: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 4, 4, generator=g, dtype=torch.float64) + shift
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[:5], y[:5]), (x[5:], y[5:])]


def reference_fairprune(net, unpriv, priv, beta, targets):
    """The recipe by hand: brute-force autograd Hessians, a full sort of the saliency.

    Ties are ordered by the total saliency 1/2 theta^2 (h0 + h1), then |theta|, then index.
    """
    net = copy.deepcopy(net).eval()
    names = [n for n, _ in net.named_parameters() if n.endswith("weight")]
    params = dict(net.named_parameters())
    alive = np.ones(sum(params[n].numel() for n in names), dtype=bool)
    negatives = 0
    for target in targets:
        x0, y0 = torch.cat([b[0] for b in unpriv]), torch.cat([b[1] for b in unpriv])
        x1, y1 = torch.cat([b[0] for b in priv]), torch.cat([b[1] for b in priv])
        h0, h1 = brute_force_diagonal(net, x0, y0), brute_force_diagonal(net, x1, y1)
        half_sq = {n: 0.5 * params[n].detach() ** 2 for n in names}
        s = np.concatenate([(half_sq[n] * (h0[n] - beta * h1[n])).reshape(-1).numpy() for n in names])
        t = np.concatenate([(half_sq[n] * (h0[n] + h1[n])).reshape(-1).numpy() for n in names])
        mag = np.concatenate([params[n].detach().abs().reshape(-1).numpy() for n in names])
        negatives += int((s[alive] < 0).sum())
        s[~alive] = np.inf
        order = np.lexsort((np.arange(len(s)), mag, t, s))  # by saliency, total, |theta|, index
        alive[order[: target - (len(alive) - alive.sum())]] = False
        with torch.no_grad():
            start = 0
            for n in names:
                k = params[n].numel()
                params[n].mul_(torch.from_numpy(alive[start : start + k]).view_as(params[n]).double())
                start += k
    return alive, negatives


@pytest.mark.parametrize(("beta", "step", "final"), [(0.33, 0.05, 0.35), (2.0, 0.1, 0.5), (0.0, 0.07, 0.3)])
def test_selected_weights_are_exactly_the_smallest_saliency(beta, step, final):
    net = tiny_net()
    unpriv, priv = group_batches(1), group_batches(2, shift=0.5)
    res = fairprune(net, unpriv, priv, beta=beta, step_ratio=step, final_ratio=final, estimator="exact")
    total = sum(p.numel() for n, p in net.named_parameters() if n.endswith("weight"))
    targets = PruneSchedule(step, final).targets(total)
    ref_alive, negatives = reference_fairprune(net, unpriv, priv, beta, targets)
    got_alive = np.concatenate([res.masks[n].reshape(-1).numpy() for n in prunable_parameters(net)])
    np.testing.assert_array_equal(got_alive, ref_alive)
    if beta == 2.0:
        assert negatives > 0  # signed saliency: negative values exist and were ranked first


def test_ratio_is_exact_biases_untouched_and_zeros_stay_zero(tmp_path, synthetic):
    model = build_model(ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16), seed=0)
    train = synthetic.split("train")
    g0, g1 = (
        GroupSampler(
            train.images[train.groups == g],
            train.labels[train.groups == g],
            batch_size=8,
            num_batches=2,
            seed=g,
            name=f"g{g}",
        )
        for g in (0, 1)
    )
    before = copy.deepcopy(model.state_dict())
    res = fairprune(
        model, g1, g0, beta=0.3, step_ratio=0.1, final_ratio=0.35, estimator="mc", validation=synthetic.split("val")
    )
    total = sum(m.numel() for m in res.masks.values())
    assert total == sum(model.get_parameter(n).numel() for n in prunable_parameters(model))
    assert int(total - sum(int(m.sum()) for m in res.masks.values())) == round(0.35 * total)
    assert [round(h["ratio"], 6) for h in res.history[1:]][:3] == pytest.approx([0.1, 0.2, 0.3], abs=1 / total)
    assert "val_eopp1" in res.history[-1] and res.history[0]["ratio"] == 0
    # the original model is untouched; biases of the pruned one too
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for name, p in res.model.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(p, before[name])
    # pruned weights are zero, stay zero after forward passes, and after save/load
    res.model(torch.randn(4, 3, 32, 32))
    for name, mask in res.masks.items():
        assert (res.model.get_parameter(name)[~mask] == 0).all()
    path = save_pruned(tmp_path / "pruned.pt", res.model, res.masks, dataset=synthetic)
    loaded = load_checkpoint(path, dataset=synthetic)
    for name, mask in res.masks.items():
        w = loaded.model.get_parameter(name)
        assert (w[~mask] == 0).all() and torch.equal(w, res.model.get_parameter(name))
    assert set(loaded.masks) == set(res.masks)


def test_obd_is_the_same_loop_with_all_data_and_no_beta():
    net = tiny_net(3)
    data = group_batches(4) + group_batches(5)
    a = obd(net, data, step_ratio=0.1, final_ratio=0.4)
    b = fairprune(net, data, group_batches(6), beta=0.0, step_ratio=0.1, final_ratio=0.4)
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert a.config["method"] == "obd"


def test_stop_at_fairness_target(synthetic):
    model = build_model(ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16), seed=0)
    train = synthetic.split("train")
    src = [(torch.randn(4, 3, 32, 32), torch.from_numpy(train.labels[:4]))]
    res = fairprune(
        model,
        src,
        src,
        beta=0.5,
        step_ratio=0.05,
        final_ratio=0.5,
        validation=synthetic.split("val"),
        stop_at={"eopp1": 1.0},
    )
    assert res.stopped_early and len(res.history) == 2
    assert res.reached_target and not res.aborted  # reaching the target is success, not an abort
    with pytest.raises(ValueError, match="validation split"):
        fairprune(model, src, src, beta=0.5, step_ratio=0.05, final_ratio=0.5, stop_at={"eopp1": 0.1})


def test_select_smallest_never_reselects_and_orders_ties():
    s = torch.tensor([5.0, -3.0, 0.0, 0.0, -10.0, 0.0, 2.0], dtype=torch.float64)
    alive = torch.tensor([True, True, True, True, False, True, True])
    assert sorted(select_smallest(s, alive, 3).tolist()) == [1, 2, 3]  # -10 is dead
    # ties at 0 (indices 2, 3, 5) go by the tie-break key, then by index
    key = torch.tensor([0, 0, 9.0, 4.0, 0, 1.0, 0])
    assert sorted(select_smallest(s, alive, 3, (key,)).tolist()) == [1, 3, 5]
    # two keys: the first decides, the second orders what the first leaves tied
    first, second = torch.tensor([0, 0, 1.0, 1.0, 0, 1.0, 0]), torch.tensor([0, 0, 3.0, 2.0, 0, 1.0, 0])
    assert sorted(select_smallest(s, alive, 3, (first, second)).tolist()) == [1, 3, 5]
    with pytest.raises(ValueError, match="only 6 are left"):
        select_smallest(s, alive, 7)
    with pytest.raises(FloatingPointError, match="NaN"):
        select_smallest(torch.tensor([0.0, math.nan]), torch.tensor([True, True]), 1)


@pytest.mark.parametrize("seed", range(5))
def test_select_smallest_agrees_with_a_numpy_lexsort_reference(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    s = rng.integers(-3, 4, n).astype(np.float64)  # many ties
    alive = rng.random(n) < 0.8
    keys = (rng.integers(0, 3, n).astype(np.float64), rng.random(n))
    k = 1234
    values = np.where(alive, s, np.inf)
    order = np.lexsort((np.arange(n), keys[1], keys[0], values))  # values first, then the keys, then index
    got = select_smallest(torch.from_numpy(s), torch.from_numpy(alive), k, tuple(map(torch.from_numpy, keys)))
    assert sorted(got.tolist()) == sorted(order[:k].tolist())


def test_invalid_ranges_are_rejected():
    net, b = tiny_net(), group_batches(1)
    with pytest.raises(
        ValueError, match=r"final_ratio \(--final-ratio 0.05\) must be >= step_ratio \(--step-ratio 0.1\)"
    ):
        fairprune(net, b, b, beta=0.3, step_ratio=0.1, final_ratio=0.05)
    with pytest.raises(ValueError, match=r"final_ratio \(--final-ratio\) must be in"):
        fairprune(net, b, b, beta=0.3, step_ratio=0.1, final_ratio=1.0)
    with pytest.raises(ValueError, match="beta must be"):
        fairprune(net, b, b, beta=-1, step_ratio=0.1, final_ratio=0.5)
    with pytest.raises(ValueError, match="empty group"):
        GroupSampler(np.zeros((0, 4, 4, 3), np.uint8), np.zeros(0, np.int64), batch_size=2, num_batches=1)
    with pytest.raises(TypeError, match="one-shot iterator"):
        fairprune(net, iter(b), b, beta=0.3, step_ratio=0.1, final_ratio=0.5)


def test_group_sampler_is_seeded_per_step():
    s = GroupSampler(np.zeros((10, 4, 4, 3), np.uint8), np.arange(10), batch_size=4, num_batches=5, seed=1)
    p0, p0b, p1 = s.plan(0), s.plan(0), s.plan(1)
    assert all(np.array_equal(a, b) for a, b in zip(p0, p0b, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(p0, p1, strict=True))
    flat = np.concatenate(p0)
    assert len(flat) == 20 and set(flat[:10]) == set(range(10))  # every sample once per pass


def test_privileged_group_is_the_more_accurate_one(synthetic, tmp_path):
    from sklearn.metrics import accuracy_score

    from fairprune_core.evaluation import predict
    from fairprune_core.training import TrainConfig, pretrain

    mc = ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=0.125)
    res = pretrain(
        synthetic,
        mc,
        TrainConfig(epochs=4, batch_size=64, lr=2e-3, augment="none"),
        tmp_path / "pt",
        log=lambda s: None,
    )
    model = load_checkpoint(res.best_path).model
    val = synthetic.split("val")
    priv, acc = detect_privileged(model, val, num_classes=synthetic.num_classes)
    pred = predict(model, val.images).argmax(1)
    ref = {g: accuracy_score(val.labels[val.groups == g], pred[val.groups == g]) for g in (0, 1)}
    assert acc == pytest.approx(ref)
    assert priv == max(ref, key=ref.get)


@pytest.mark.slow
def test_vanilla_demo_model_is_less_accurate_on_dark_skin(tmp_path, cache_dir):
    """The synthetic default does what it promises: a measurable gap between the groups."""
    from fairprune_core.cli import PRESETS, preset_configs
    from fairprune_core.datasets import load_dataset
    from fairprune_core.evaluation import evaluate
    from fairprune_core.training import pretrain

    ds = load_dataset("synthetic", cache_dir=cache_dir)
    mc, tc = preset_configs(PRESETS["demo"], ds)
    res = pretrain(ds, mc, tc, tmp_path / "pt", log=lambda s: None)
    m = evaluate(load_checkpoint(res.best_path).model, ds.split("test"), num_classes=ds.num_classes)
    light, dark = m["groups"][0]["accuracy"], m["groups"][1]["accuracy"]
    assert light - dark > 0.03
