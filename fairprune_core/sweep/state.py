"""The persisted state of one sweep (``<storage>/<name>/sweep.json``), as a typed record."""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import SweepConfig

__all__ = ["SweepState"]

FILE = "sweep.json"


@dataclass
class SweepState:
    """What a sweep must remember to be resumed: ids, the problem's identity, the baselines.

    ``baselines`` maps a method name to its flat validation/test metrics; ``flags`` holds the
    command-line values the sweep was started with, so that a resume can tell a change of
    study from a repetition of the same command.
    """

    sweep_id: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    privileged: int
    f1_floor_abs: float
    manifest_fingerprint: str
    config: dict[str, Any]
    dataset_spec: dict[str, Any]
    checkpoint: str
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    invocations: int = 0

    @staticmethod
    def path(directory: Path) -> Path:
        return directory / FILE

    @classmethod
    def exists(cls, directory: Path) -> bool:
        return cls.path(directory).is_file()

    @classmethod
    def load(cls, directory: Path) -> SweepState:
        path = cls.path(directory)
        if not path.is_file():
            raise FileNotFoundError(f"no sweep to resume in {directory} (no {FILE}); start it without --resume")
        try:
            raw = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{path} is damaged ({exc}); FairPrune writes it atomically, so something else changed it. Restore "
                f"it from a copy (its study, optuna.journal, and the MLflow runs are intact), or start a new sweep "
                f"(another --name)"
            ) from None
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        if not isinstance(raw, dict) or not required <= set(raw):
            missing = sorted(required - set(raw)) if isinstance(raw, dict) else ["(not a JSON object)"]
            raise ValueError(
                f"{path} is not a sweep state FairPrune wrote (missing {', '.join(missing)}); restore it from a copy, "
                f"or start a new sweep (another --name)"
            )
        if "baselines" not in raw:  # written before baselines were keyed by method
            raw["baselines"] = {k: raw.pop(k) for k in ("vanilla", "obd") if k in raw}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def save(self, directory: Path) -> None:
        """Atomic write (a crash never leaves half a file)."""
        path = self.path(directory)
        tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(self), indent=1, default=str))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no temporary file

    def sweep_config(self) -> SweepConfig:
        return SweepConfig.from_dict(self.config)
