"""VGG-11 construction, BackPACK compatibility, pre-training, checkpoints and resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from backpack import backpack, extend
from backpack.extensions import DiagGGNExact

from fairprune_core.checkpoint import CheckpointMismatch, load_checkpoint
from fairprune_core.datasets import load_dataset
from fairprune_core.evaluation import predict
from fairprune_core.models import ModelConfig, build_model, to_model_input
from fairprune_core.training import TrainConfig, pretrain

from .conftest import REPO


def test_full_vgg11_matches_torchvision_features():
    ours = build_model(ModelConfig(num_classes=114, image_size=224))
    ref = torchvision.models.vgg11(num_classes=114)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert ours_sd.keys() == ref_sd.keys()  # torchvision names, loadable state dicts
    assert all(ours_sd[k].shape == ref_sd[k].shape for k in ours_sd)  # at 224 px even the head
    assert not any(getattr(m, "inplace", False) for m in ours.modules())
    at128 = build_model(ModelConfig(num_classes=9))
    assert at128.classifier[0].in_features == 512 * 4 * 4


@pytest.mark.parametrize("size", [32, 64, 128])
def test_backpack_differentiates_the_model(size):
    model = build_model(ModelConfig(num_classes=5, image_size=size, width=1 / 16), seed=0).eval()
    ext = extend(model)
    x, y = torch.randn(3, 3, size, size), torch.tensor([0, 3, 4])
    loss = extend(torch.nn.CrossEntropyLoss())(ext(x), y)
    with backpack(DiagGGNExact()):
        loss.backward()
    assert all(p.diag_ggn_exact.shape == p.shape for p in ext.parameters())


def test_bad_model_config():
    with pytest.raises(ValueError, match="multiple of 32"):
        ModelConfig(num_classes=3, image_size=100)
    with pytest.raises(ValueError, match="num_classes"):
        ModelConfig(num_classes=1)


def test_input_normalisation_accepts_hwc_and_chw():
    img = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(to_model_input(img), to_model_input(img.permute(0, 3, 1, 2)))
    with pytest.raises(TypeError):
        to_model_input(img.float())


def test_channels_last_input_is_the_same_images_and_predict_matches_a_plain_nchw_forward():
    img = torch.randint(0, 256, (40, 32, 32, 3), dtype=torch.uint8)
    last = to_model_input(img, memory_format=torch.channels_last)
    assert last.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()
    assert torch.equal(last, to_model_input(img))  # same values, other strides
    model = build_model(ModelConfig(num_classes=5, image_size=32, width=1 / 8), seed=3).eval()
    with torch.no_grad():
        reference = model(to_model_input(img)).numpy()  # NCHW, the plain PyTorch way
    logits = predict(model, img.numpy(), batch_size=16)
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(logits.argmax(1), reference.argmax(1))
    assert model.features[0].weight.is_contiguous()  # the model itself is left as it was


def _tiny_train(epochs: int = 2) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, lr_milestones=(1,), augment="paper")


def test_pretrain_checkpoint_reloads_and_predicts_the_same(synthetic, tmp_path):
    mc = ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16)
    res = pretrain(synthetic, mc, _tiny_train(), tmp_path / "run", log=lambda s: None)
    assert res.best_path.is_file() and 1 <= res.best_epoch <= 2 and len(res.history) == 2
    ckpt = load_checkpoint(res.best_path, dataset=synthetic)
    assert ckpt.class_names == synthetic.class_names and ckpt.group_names == ["light", "dark"]
    assert ckpt.manifest_fingerprint == synthetic.manifest_fingerprint
    # reloading twice gives identical predictions
    val = synthetic.split("val").images
    again = load_checkpoint(res.best_path)
    np.testing.assert_array_equal(predict(ckpt.model, val), predict(again.model, val))


def test_checkpoint_refuses_another_split(synthetic, tmp_path):
    mc = ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16)
    res = pretrain(synthetic, mc, _tiny_train(1), tmp_path / "run", log=lambda s: None)
    other = load_dataset(**{**synthetic.spec(), "seed": 5})
    with pytest.raises(CheckpointMismatch, match="split differs"):
        load_checkpoint(res.best_path, dataset=other)


def test_pretrain_resumes_after_interruption(synthetic, tmp_path):
    mc = ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=1e-3, augment="none")
    full = pretrain(synthetic, mc, cfg, tmp_path / "full", log=lambda s: None)

    def stop_after_two(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(synthetic, mc, cfg, tmp_path / "cut", log=lambda s: None, on_epoch=stop_after_two)
    lines: list[str] = []
    resumed = pretrain(synthetic, mc, cfg, tmp_path / "cut", log=lines.append)
    assert any("resuming" in line and "epoch 3/3" in line for line in lines)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    # the resumed run reproduces the uninterrupted one
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="another configuration"):
        pretrain(synthetic, mc, TrainConfig(epochs=4, augment="none"), tmp_path / "cut", log=lambda s: None)


def test_pretrain_entry_point_on_real_isic(isic_root, cache_dir, tmp_path):
    """The entry point pre-trains briefly on the real ISIC data; its checkpoint reloads."""
    out = tmp_path / "isic-run"
    cmd = [
        sys.executable,
        str(REPO / "sweeps" / "pretrain.py"),
        "--dataset",
        "isic2019",
        "--data-root",
        str(isic_root),
        "--image-size",
        "32",
        "--width",
        "0.0625",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--lr",
        "1e-3",
        "--augment",
        "none",
        "--cache-dir",
        str(cache_dir),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kept 9968 images of 8 classes (female 4560, male 5408)" in proc.stdout
    assert "Eopp1" in proc.stdout and "female" in proc.stdout
    ds = load_dataset("isic2019", isic_root, image_size=32, cache_dir=cache_dir)
    ckpt = load_checkpoint(out / "best.pt", dataset=ds)
    assert ckpt.model_config.num_classes == 8


class _Payload:
    """Unpickling this writes a file: what a malicious checkpoint would do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "pwned"))


def test_a_checkpoint_that_would_run_code_is_refused_before_it_runs(tmp_path):
    from fairprune_core.checkpoint import FORMAT_VERSION, load_checkpoint

    target = tmp_path / "written-by-the-pickle"
    bad = tmp_path / "evil.pt"
    torch.save({"format_version": FORMAT_VERSION, "state_dict": {}, "x": _Payload(str(target))}, bad)
    with pytest.raises(ValueError, match="never unpickles"):
        load_checkpoint(bad)
    assert not target.exists()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(ValueError, match="truncated or not a torch file"):
        load_checkpoint(truncated)


def test_checkpoint_metadata_that_is_not_plain_data_is_refused_at_save(synthetic, tmp_path):
    from fairprune_core.checkpoint import save_checkpoint

    model = build_model(ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16), seed=0)
    with pytest.raises(TypeError, match="plain data"):
        save_checkpoint(tmp_path / "x.pt", model, dataset=synthetic, extra={"obj": _Payload("nowhere")})
    assert not list(tmp_path.iterdir())  # nothing half-written is left
