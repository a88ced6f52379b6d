#!/usr/bin/env bash
# The paper's ISIC 2019 experiment on one GPU in at most 8 minutes (see gpu_paper_scale.py):
#   bash benchmarks/gpu_paper_scale.sh              # GPU: ../shared/data/isic2019 -> benchmarks/results/gpu_paper_scale.json
#   bash benchmarks/gpu_paper_scale.sh --smoke      # the same pipeline, tiny, on a CPU (< 3 minutes)
# Extra arguments go to gpu_paper_scale.py (--data-root, --out, --budget-s). The stages keep to a
# 7-minute budget themselves; the timeout below is the backstop that makes 8 minutes a promise.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
limit=480
for arg in "$@"; do [[ "$arg" == "--smoke" ]] && limit=180; done
status=0
timeout --signal=INT --kill-after=20 "$limit" "$PYTHON" benchmarks/gpu_paper_scale.py "$@" || status=$?
if [[ $status -eq 124 || $status -eq 130 ]]; then
    echo "gpu_paper_scale: stopped at the ${limit}s limit; the stages finished so far are in the result file" >&2
fi
exit "$status"
