"""The interface every method implements, and what it is given and returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ..curvature.hessian import DiagSums
from ..datasets import SplitArrays
from ..masks import pruned_fraction
from ..pruning import CurvatureBackend, GroupSampler, PruneResult

__all__ = ["CurvatureData", "Method", "MethodContext", "MethodOutput", "TrainingSetup", "train_with"]

Role = Literal["baseline", "pruning"]


@dataclass(frozen=True)
class CurvatureData:
    """The seeded curvature samplers of one pruning problem (TRAIN split)."""

    unprivileged: GroupSampler
    privileged: GroupSampler
    all: GroupSampler  # both groups, as many samples in total (OBD)
    privileged_group: int


@dataclass(frozen=True)
class TrainingSetup:
    """What a training-time method needs to train its model like the vanilla one: the data, the
    model and the vanilla model's training configuration (same schedule, same budget)."""

    dataset: Any  # DermDataset
    model_config: Any  # ModelConfig
    train_config: Any  # TrainConfig
    runs_dir: Path | None = None  # where trained models are cached (default: fairprune_runs/)


@dataclass
class MethodContext:
    """What a method may use. ``model`` is the pre-trained model: a method never modifies it."""

    model: nn.Module
    num_classes: int
    group_names: list[str]
    data: CurvatureData
    validation: SplitArrays
    curvature: CurvatureBackend
    initial_curvature: Mapping[str, DiagSums] | None = None  # the unpruned model's, shared by many runs
    initial_validation: Mapping[str, float] | None = None  # the unpruned model's val_* metrics, likewise
    stop_when: Callable[[dict[str, float]], str | None] | None = None  # an abort rule (a failure)
    log: Callable[[str], None] | None = None
    on_step: Callable[[dict[str, float]], None] | None = None
    training: TrainingSetup | None = None  # for training-time methods


@dataclass
class MethodOutput:
    """The model a method proposes, its pruning masks (None: dense) and its per-step history."""

    model: nn.Module
    masks: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    stop_kind: Literal["target", "abort"] | None = None  # target: the fairness target was met
    stop_reason: str | None = None
    val_logits: np.ndarray | None = None  # ``model``'s logits on the context's validation split, if computed

    @property
    def achieved_ratio(self) -> float:
        return pruned_fraction(self.masks)

    @property
    def aborted(self) -> bool:
        return self.stop_kind == "abort"

    @classmethod
    def from_pruning(cls, result: PruneResult) -> MethodOutput:
        return cls(
            result.model,
            result.masks,
            result.history,
            result.config.get("stop_kind"),
            result.config.get("stop_reason"),
            result.val_logits,
        )


@dataclass(frozen=True)
class Method(ABC):
    """A method: a name, its hyper-parameters (the dataclass fields) and ``run``.

    Subclasses are frozen dataclasses whose fields are the hyper-parameters, validated in
    ``__post_init__``; ``run`` must not modify ``context.model``.
    """

    name: ClassVar[str]
    role: ClassVar[Role] = "baseline"

    def hyperparameters(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        """How tables name this run."""
        return self.name

    @abstractmethod
    def run(self, context: MethodContext) -> MethodOutput: ...


def train_with(mode: Any, context: MethodContext) -> MethodOutput:
    """Train (or reuse, by config hash) a model with training ``mode`` in the one pre-training loop."""
    from ..checkpoint import load_checkpoint
    from ..pretrained import ensure_pretrained

    setup = context.training
    if setup is None:
        raise ValueError(
            f"method {mode.name!r} trains its own model, so the experiment needs the dataset and the vanilla "
            f"model's training configuration: Experiment(problem, training=training_setup(dataset, checkpoint)) "
            f"(a checkpoint written by sweeps/pretrain.py records it)"
        )
    from ..pretrained import default_pretrain_dir

    out = None
    if setup.runs_dir is not None:
        out = (
            Path(setup.runs_dir)
            / default_pretrain_dir(setup.dataset, setup.model_config, setup.train_config, mode).name
        )
    path = ensure_pretrained(
        setup.dataset, setup.model_config, setup.train_config, out=out, mode=mode, log=context.log or (lambda _: None)
    )
    model = load_checkpoint(path, dataset=setup.dataset).model.eval()
    return MethodOutput(model.to(next(context.model.parameters()).device))
