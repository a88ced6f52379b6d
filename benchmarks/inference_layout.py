"""Evaluation forward passes on the CPU: NCHW batches vs channels-last (what ``predict`` uses).

    python benchmarks/inference_layout.py      # writes benchmarks/results/inference_layout.json

Both layouts are timed side by side in one process, on the same random uint8 images and the same
model, per thread count; the ratio is what carries over between machines. Also records how far
the logits of the two passes differ (float rounding) and whether any predicted class differs.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

from fairprune_core.models import ModelConfig, build_model, to_model_input

SETTINGS = (  # (label, model config, images): the sweep's synthetic default and a paper-sized input
    ("synthetic default (width 0.125, 32 px)", ModelConfig(num_classes=4, image_size=32, width=0.125), 293),
    ("width 0.5, 128 px", ModelConfig(num_classes=8, image_size=128, width=0.5), 64),
)


def _forward(model: torch.nn.Module, images: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    with torch.no_grad():
        return model(to_model_input(images, memory_format=layout))


def measure(label: str, config: ModelConfig, n: int, threads: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    model = build_model(config, seed=0).eval()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (n, config.image_size, config.image_size, 3), dtype=np.uint8))
    nchw = _forward(model, images, torch.contiguous_format)
    last = _forward(model, images, torch.channels_last)
    row = {"setting": label, "images": n, "threads": threads}
    row["nchw_s"] = median_seconds(lambda: _forward(model, images, torch.contiguous_format), repeats)
    row["channels_last_s"] = median_seconds(lambda: _forward(model, images, torch.channels_last), repeats)
    row["speedup"] = row["nchw_s"] / row["channels_last_s"]
    row["max_abs_logit_diff"] = float((nchw - last).abs().max())
    row["predictions_differ"] = int((nchw.argmax(1) != last.argmax(1)).sum())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inference_layout.json")
    args = ap.parse_args()
    rows = [measure(label, config, n, threads, args.repeats) for label, config, n in SETTINGS for threads in (1, 2)]
    for r in rows:
        print(
            f"{r['setting']:40s} {r['threads']} thread(s): NCHW {r['nchw_s'] * 1e3:6.1f} ms, channels-last "
            f"{r['channels_last_s'] * 1e3:6.1f} ms ({r['speedup']:.2f}x); logits differ by <= "
            f"{r['max_abs_logit_diff']:.1e}, {r['predictions_differ']} predictions differ"
        )
    result = {
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": torch.get_num_threads(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
