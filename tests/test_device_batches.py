"""Training batches made on the device (the GPU path), checked on the CPU against the CPU path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairprune_core.datasets import SplitArrays
from fairprune_core.datasets.device_batches import DeviceBatches
from fairprune_core.models import to_model_input


def _split(n: int = 70, same: bool = False) -> SplitArrays:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1 if same else n, 16, 16, 3), dtype=np.uint8)
    images = np.repeat(images, n, axis=0) if same else images
    labels, groups = rng.integers(0, 4, n).astype(np.int64), rng.integers(0, 2, n).astype(np.int8)
    return SplitArrays(images, labels, groups, np.arange(n).astype(str))


def test_unaugmented_batches_are_the_normalised_split_in_the_shuffled_order():
    data = _split()
    torch.manual_seed(3)
    order = torch.randperm(len(data.labels))
    torch.manual_seed(3)
    batches = list(DeviceBatches(data, batch_size=32, device=torch.device("cpu"), augment="none"))
    assert [len(b[1]) for b in batches] == [32, 32, 6]
    x = torch.cat([b[0] for b in batches])
    torch.testing.assert_close(x, to_model_input(data.images[order.numpy()]))
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.from_numpy(data.labels)[order])
    assert torch.equal(torch.cat([b[2] for b in batches]), torch.from_numpy(data.groups.astype(np.int64))[order])


def test_flips_are_drawn_per_sample():
    data = _split(64, same=True)  # one image, 64 times: what differs is the augmentation
    torch.manual_seed(0)
    ((x, _, _),) = list(DeviceBatches(data, batch_size=64, device=torch.device("cpu"), augment="flips"))
    base = to_model_input(data.images[:1])[0]
    variants = [base, base.flip(-1), base.flip(-2), base.flip(-1).flip(-2)]
    which = [next(i for i, v in enumerate(variants) if torch.allclose(xi, v, atol=1e-5)) for xi in x]
    assert len(set(which)) == 4  # all four flip combinations within one batch


def test_paper_augmentation_gives_each_sample_its_own_transform():
    data = _split(32, same=True)
    torch.manual_seed(0)
    ((x, _, _),) = list(DeviceBatches(data, batch_size=32, device=torch.device("cpu"), augment="paper"))
    assert x.shape == (32, 3, 16, 16) and torch.isfinite(x).all()
    distinct = {tuple(xi.flatten()[:64].round(decimals=3).tolist()) for xi in x}
    assert len(distinct) > 16


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="unknown augmentation"):
        DeviceBatches(_split(), batch_size=8, device=torch.device("cpu"), augment="mixup")
