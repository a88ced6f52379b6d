"""Logging one pruned model to MLflow: both copies (PyTorch flavour + safetensors, the default) vs
``--safetensors-only``, side by side: seconds and artifact bytes. And loading the default's model
with ``load_pruned_model``, which fetches the safetensors file only, beside fetching the whole
model directory first (what it did before: the pickled copy too).

    python benchmarks/model_logging.py      # writes benchmarks/results/model_logging.json
    python benchmarks/model_logging.py --tracking-uri http://127.0.0.1:5000 --out .../model_logging_server.json

Each setting logs the same half-pruned model (random masks) into one real sqlite store in a
temporary folder, alternating the two ways, median of ``--repeats``; the demo model of the
default sweep and the full VGG-11 at 128 px (59.6 M weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fairprune_core.models import ModelConfig, build_model
from fairprune_core.pruning import apply_masks, prunable_parameters

SETTINGS = (
    ("demo (width 0.125, 32 px)", ModelConfig(num_classes=4, image_size=32, width=0.125)),
    ("full VGG-11 (width 1, 128 px)", ModelConfig(num_classes=8, image_size=128, width=1.0)),
)


def _pruned(config: ModelConfig, keep: float = 0.5) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = build_model(config, seed=0)
    gen = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(model.get_parameter(n).shape, generator=gen) < keep for n in prunable_parameters(model)}
    return apply_masks(model, masks), masks


def measure(label: str, config: ModelConfig, repeats: int, store: Path, remote: bool = False) -> dict:
    import mlflow

    from fairprune_core.tracking.mlflow_store import log_pruned_model, logged_model_bytes

    model, masks = _pruned(config)
    seconds: dict[str, list[float]] = {"both": [], "safetensors_only": []}
    sizes: dict[str, int] = {}
    logged: dict[str, Any] = {}
    where = {} if remote else {"artifact_location": (store / label).as_uri()}  # a server keeps its own
    with mlflow.start_run(experiment_id=mlflow.create_experiment(label, **where)):
        for _ in range(repeats):
            for way, pickle_flavour in (("both", True), ("safetensors_only", False)):
                t0 = time.perf_counter()
                info = log_pruned_model(model, masks, name=way, pickle_flavour=pickle_flavour)
                seconds[way].append(time.perf_counter() - t0)
                sizes[way] = logged_model_bytes(info.model_id)
                logged[way] = info
    row = {"setting": label, "weights": sum(p.numel() for p in model.parameters()), **_loads(logged["both"], repeats)}
    for way in seconds:
        row[f"{way}_s"] = statistics.median(seconds[way])
        row[f"{way}_bytes"] = sizes[way]
    row["time_ratio"] = row["safetensors_only_s"] / row["both_s"]
    row["bytes_ratio"] = row["safetensors_only_bytes"] / row["both_bytes"]
    return row


def _loads(info: Any, repeats: int) -> dict[str, float]:
    """Median seconds to load ``info``'s model: the file only (now) vs the whole directory first."""
    import mlflow

    from fairprune_core.export import SAFETENSORS_FILE, load_safetensors
    from fairprune_core.tracking import load_pruned_model

    def whole() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tmp))
            load_safetensors(local / "extra_files" / SAFETENSORS_FILE)

    times: dict[str, list[float]] = {"load_file_s": [], "load_whole_dir_s": []}
    for _ in range(repeats):
        for key, load in (("load_file_s", lambda: load_pruned_model(info.model_uri)), ("load_whole_dir_s", whole)):
            t0 = time.perf_counter()
            load()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    import mlflow

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "model_logging.json")
    ap.add_argument(
        "--tracking-uri", help="an MLflow server to measure against (e.g. `mlflow server --serve-artifacts` on "
        "127.0.0.1: artifacts travel over HTTP) instead of a sqlite store in a temporary folder",
    )  # fmt: skip
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(args.tracking_uri or f"sqlite:///{tmp}/mlflow.db")
        remote = bool(args.tracking_uri)
        suffix = f" [{int(time.time())}]" if remote else ""  # a server's experiment names must be new
        rows = [measure(label + suffix, config, args.repeats, Path(tmp), remote) for label, config in SETTINGS]
    for r in rows:
        print(
            f"{r['setting']:32s} both {r['both_s']:6.2f} s {r['both_bytes'] / 1e6:7.1f} MB | safetensors only "
            f"{r['safetensors_only_s']:6.2f} s {r['safetensors_only_bytes'] / 1e6:7.1f} MB "
            f"(time x{r['time_ratio']:.2f}, bytes x{r['bytes_ratio']:.2f}); load {r['load_file_s']:.2f} s "
            f"(the whole directory first: {r['load_whole_dir_s']:.2f} s)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch": torch.__version__, "mlflow": mlflow.__version__, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
