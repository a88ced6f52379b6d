"""The architectures built from a :class:`ModelConfig` (names in :mod:`.names`), never with downloaded
weights; what a file's tensors must be to fit one; the input sizes one takes."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig, ModelFileError
from .names import BUILDERS, check_arch, list_models, register_model

__all__ = ["build_model", "check_arch", "check_input_size", "check_state_shapes", "list_models", "register_model"]


def _build(config: ModelConfig) -> nn.Module:
    from . import vgg  # noqa: F401  (registers the built-in VGG-11)

    build = BUILDERS.get(config.arch)
    if build is not None:
        return build(config)
    from .torchvision_models import build_torchvision

    return build_torchvision(config)


def build_model(config: ModelConfig, *, seed: int | None = None) -> nn.Module:
    """A freshly initialised network (``seed`` makes the initialisation reproducible); its
    ``config`` attribute is ``config``."""
    if seed is None:
        model = _build(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _build(config)
    model.config = config
    return model


def _meta_model(config: ModelConfig) -> nn.Module:
    with torch.device("meta"):
        return _build(config)


def check_input_size(config: ModelConfig) -> None:
    """A ``ValueError`` unless the architecture takes ``config.image_size`` px images and gives one
    logit per class (a forward pass on the meta device: no memory, no compute)."""
    model = _meta_model(config).eval()
    try:
        with torch.no_grad():
            out = model(torch.empty(2, 3, config.image_size, config.image_size, device="meta"))
    except Exception as exc:  # each architecture fails its own way (shapes, asserts)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{config.arch} cannot take {config.image_size}px images ({first}); pass another --image-size "
            f"(torchvision's architectures are made for 224px; most take 32px and more)"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, config.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{config.arch} does not return one logit per class (got {shape} for 2 images, {config.num_classes} "
            f"classes); FairPrune needs a classifier whose forward returns the logits"
        )


def check_state_shapes(config: ModelConfig, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """The tensors a file holds (name -> shape) are exactly the model's: a :class:`ModelFileError`
    naming the first mismatches otherwise. The model is built on the meta device: no memory used."""
    problems = state_problems(config, shapes)
    if problems:
        raise ModelFileError(
            f"{where}: its tensors do not fit the model it records ({summarise(problems)}); the file "
            f"is damaged or was edited: re-create it"
        )


def state_problems(config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """What does not fit between the model ``config`` builds and tensors of ``shapes``: missing,
    unexpected and misshapen names, in the model's order."""
    expected = {k: tuple(v.shape) for k, v in _meta_model(config).state_dict().items()}
    problems = [f"{k} missing" for k in expected if k not in shapes]
    problems += [f"{k} unexpected" for k in shapes if k not in expected]
    problems += [
        f"{k} has shape {list(shapes[k])}, the model needs {list(v)}"
        for k, v in expected.items()
        if k in shapes and tuple(shapes[k]) != v
    ]
    return problems


def summarise(problems: list[str], first: int = 3) -> str:
    more = f" (+{len(problems) - first} more)" if len(problems) > first else ""
    return "; ".join(problems[:first]) + more
