"""Any torchvision classifier: the registry, a user's weights file, the head the baselines use,
pruned files that load back as the same architecture, all checked against torchvision itself."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from fairprune_core.export import load_safetensors, save_safetensors, to_pruned_module
from fairprune_core.masks import apply_masks, prunable_parameters
from fairprune_core.methods.advconf import penultimate
from fairprune_core.methods.domainindep import fold_heads, sum_rule
from fairprune_core.models import (
    BUILTIN,
    ModelConfig,
    ModelFileError,
    build_model,
    check_input_size,
    find_head,
    initial_state,
    list_models,
    read_weights,
)

HEADS = {
    "resnet18": "fc",
    "densenet121": "classifier",
    "efficientnet_b0": "classifier.1",
    "mobilenet_v3_small": "classifier.3",
    "vit_b_32": "heads.head",
    BUILTIN: "classifier.6",
}


def _config(arch: str, classes: int = 4, size: int = 32) -> ModelConfig:
    shape = {"width": 0.0625} if arch == BUILTIN else {}
    return ModelConfig(num_classes=classes, image_size=size, arch=arch, **shape)


def test_every_torchvision_classifier_is_a_model_and_the_builtin_vgg_is_the_default():
    names = list_models()
    assert names[0] == BUILTIN and ModelConfig(num_classes=2).arch == BUILTIN
    assert set(torchvision.models.list_models(module=torchvision.models)) <= set(names)
    assert "fasterrcnn_resnet50_fpn" not in names, "detection models return boxes, not logits"


def test_a_torchvision_model_is_torchvisions_own_and_seeded():
    model = build_model(_config("resnet18"), seed=3)
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(num_classes=4)
    assert type(model) is type(reference) and model.config.arch == "resnet18"
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()  # noqa: E731
    assert same(model.state_dict(), reference.state_dict())
    assert same(model.state_dict(), build_model(_config("resnet18"), seed=3).state_dict())


def test_the_builtin_vgg_records_as_before_architectures_had_names():
    # its record (and so the pre-training cache key made from it) carries no arch key
    assert "arch" not in ModelConfig(num_classes=3).to_dict()
    assert ModelConfig(num_classes=3, arch="resnet18").to_dict()["arch"] == "resnet18"
    assert ModelConfig(**ModelConfig(num_classes=3, arch="resnet18").to_dict()).arch == "resnet18"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelConfig(num_classes=4, arch="resnet19"), r"unknown model 'resnet19'; did you mean resnet18"),
        (lambda: ModelConfig(num_classes=4, arch="resnet18", width=0.5), r"width shapes the built-in VGG-11 only"),
        (lambda: check_input_size(_config("inception_v3")), r"inception_v3 cannot take 32px images"),
        (lambda: check_input_size(_config("vit_b_16", size=40)), r"vit_b_16 cannot be built for 40px.*patch"),
        (lambda: ModelConfig(num_classes=4, image_size=48), r"multiple of 32"),
    ],
)
def test_a_model_that_cannot_be_built_is_one_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_vit_is_built_for_the_input_size():
    check_input_size(_config("vit_b_32", size=64))  # position embeddings for 64 px: (64/32)^2 + 1 tokens
    assert build_model(_config("vit_b_32", size=64)).encoder.pos_embedding.shape[1] == 5


# -- a user's weights file --------------------------------------------------------------------------


def test_weights_saved_every_common_way_read_back_exactly(tmp_path):
    model = build_model(_config("resnet18"), seed=1)
    state = model.state_dict()
    torch.save(state, tmp_path / "plain.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pt")
    notes: list[str] = []
    for name in ("plain.pt", "w.safetensors", "wrapped.pt"):
        got = read_weights(tmp_path / name, _config("resnet18"), note=notes.append)
        assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state), name
    assert any("'module.'" in n for n in notes), "the DataParallel prefix is stripped, and said"


def test_a_head_for_other_classes_is_one_line_naming_it_and_the_fix(tmp_path):
    torch.save(build_model(_config("resnet18", classes=7)).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ModelFileError) as err:
        read_weights(tmp_path / "r18.pt", _config("resnet18", classes=4))
    text = str(err.value)
    assert "fc.weight has shape [7, 512], the model needs [4, 512]" in text
    assert "fc.bias" in text and "this data's 4 classes" in text and "\n" not in text


def test_weights_of_another_architecture_name_the_flag_to_fix(tmp_path):
    torch.save(build_model(_config("densenet121")).state_dict(), tmp_path / "d.pt")
    with pytest.raises(ModelFileError, match=r"Pass the --model the weights were saved from"):
        read_weights(tmp_path / "d.pt", _config("resnet18"))


def test_a_pickled_model_is_never_unpickled(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (marker.write_text, ("code ran",))

    torch.save({"fc.weight": torch.zeros(1), "x": Evil()}, tmp_path / "evil.pt")
    torch.save(build_model(_config("resnet18")), tmp_path / "whole.pt")  # a whole pickled module
    for name in ("evil.pt", "whole.pt"):
        with pytest.raises(ModelFileError, match=r"never unpickles.*torch.save\(model.state_dict\(\), path\)"):
            read_weights(tmp_path / name, _config("resnet18"))
    assert not marker.exists()


# -- the classification head (the training-time baselines) -------------------------------------------


@pytest.mark.parametrize("arch", list(HEADS))
def test_the_head_is_the_layer_that_gives_the_logits(arch):
    config = _config(arch)
    model = build_model(config, seed=0).eval()
    name, head = find_head(model, 4, image_size=32)
    assert name == HEADS[arch]
    x = torch.randn(2, 3, 32, 32)
    features = penultimate(model, x)
    assert torch.allclose(head(features), model(x), atol=1e-5), "phi(x) through the head is not the logits"


def test_a_model_without_a_linear_head_is_a_clear_error():
    with pytest.raises(ValueError, match=r"squeezenet1_0 has no linear layer with 4 outputs.*fairprune or obd"):
        find_head(build_model(_config("squeezenet1_0")), 4)


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_domainindep_folds_into_any_architectures_head_exactly(arch):
    wide = build_model(_config(arch, classes=4 * 3), seed=0).eval()
    folded = fold_heads(wide, 3).eval()
    assert type(folded) is type(wide) and folded.config.num_classes == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), sum_rule(wide(x), 3), atol=1e-5)


# -- pruned models of any architecture --------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "vit_b_32"])
def test_a_pruned_model_saves_sparsely_and_loads_as_its_architecture(arch, tmp_path):
    model = build_model(_config(arch), seed=0).eval()
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    assert not any("norm" in n or "bn" in n or n.endswith("bias") for n in names), "norms and biases are kept"
    if arch.startswith("vit"):
        assert "encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in names
        assert "class_token" not in names and "encoder.pos_embedding" not in names
    torch.manual_seed(0)
    masks = {n: torch.rand_like(params[n]) > 0.7 for n in names}
    apply_masks(model, masks)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    pruned = to_pruned_module(model, masks)
    loaded = {
        "pickle": pickle.loads(pickle.dumps(pruned)).eval(),
        "safetensors": load_safetensors(save_safetensors(model, masks, tmp_path / "m.safetensors")),
    }
    dense = sum(p.numel() * 4 for p in model.parameters())
    assert len(pickle.dumps(pruned)) < 0.5 * dense, "the pickle grows with the kept weights"
    for how, m in loaded.items():
        assert isinstance(m, type(model)) and m.config == model.config, how
        assert all(torch.equal(m.masks[n], masks[n]) for n in names), how
        with torch.no_grad():
            assert torch.equal(m(x), expected), how


def test_a_pruned_file_of_another_architecture_does_not_load_as_this_one(tmp_path):
    model = build_model(_config("resnet18"), seed=0)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n.endswith("weight")}
    masks = {n: masks[n] for n in prunable_parameters(model)}
    path = save_safetensors(model, masks, tmp_path / "m.safetensors")
    # the header's architecture is what is built: edit it, and the tensors no longer fit
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["config"] = meta["config"].replace("resnet18", "resnet34")
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match=r"layer1.2.conv1.weight missing"):
        load_safetensors(tmp_path / "edited.safetensors")


def test_nothing_is_downloaded(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    for arch in ("resnet18", "efficientnet_b0", "vit_b_32", "densenet121"):
        assert isinstance(build_model(_config(arch)), nn.Module)


def test_fine_tuning_starts_from_the_file_with_a_fresh_head_for_other_classes(tmp_path):
    imagenet_like = build_model(_config("resnet18", classes=1000), seed=5).state_dict()
    torch.save(imagenet_like, tmp_path / "r18_1000.pt")
    notes: list[str] = []
    state = initial_state(tmp_path / "r18_1000.pt", _config("resnet18", classes=4), note=notes.append)
    assert "fc.weight" not in state and "fc.bias" not in state
    assert set(state) == set(imagenet_like) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(state[k], imagenet_like[k]) for k in state)
    assert len(notes) == 1 and "head 'fc' is for other classes" in notes[0]
    # another architecture is no starting point
    torch.save(build_model(_config("resnet34")).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(ModelFileError, match=r"layer1.2.conv1.weight unexpected|Pass the --model"):
        initial_state(tmp_path / "r34.pt", _config("resnet18"))


def test_finding_the_head_leaves_the_global_rng_as_it_was():
    """The baselines find their head between building the model and training it: a check that drew
    from the global RNG would change every later shuffle and initialisation (it once did)."""
    model = build_model(_config("resnet18"), seed=0)
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    find_head(model, 4, image_size=32)
    assert torch.equal(torch.random.get_rng_state(), before)
