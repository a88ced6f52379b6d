#!/usr/bin/env bash
# A sweep on Ray's fake multi-node autoscaler: GPU worker nodes scale up from zero when the
# sweep's curvature workers ask for GPUs, and back down when it is done.
#
#   bash benchmarks/fake_autoscaler_sweep.sh      # writes benchmarks/results/fake_autoscaler.txt
#
# It stops any Ray running on this machine first (ray stop --force).
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results/fake_autoscaler.txt
work=$(mktemp -d)
mkdir -p benchmarks/results
export RAY_AUTH_MODE=token  # Ray turns token auth on when ~/.ray/auth_token exists

ray stop --force > /dev/null 2>&1 || true
RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=benchmarks/fake_multinode.yaml \
    --disable-usage-stats > "$work/ray_start.log" 2>&1
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mlflow server --backend-store-uri "sqlite:///$work/mlflow.db" --artifacts-destination "$work/artifacts" \
    --host 127.0.0.1 --port "$port" > "$work/mlflow.log" 2>&1 &
mlflow_pid=$!
trap 'kill $mlflow_pid 2>/dev/null || true; ray stop --force > /dev/null 2>&1 || true' EXIT
for _ in $(seq 1 60); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 1; done

{
    echo "# fake multi-node autoscaler sweep, $(date -u +%FT%TZ)"
    echo "## before the sweep"
    ray status
} > "$out"
start=$(date +%s)
python sweeps/pareto.py --smoke-test --trials 2 --concurrency 1 --address auto \
    --tracking-uri "http://127.0.0.1:$port" --storage "$work/sweeps" --name fake \
    --workers-per-trial 2 --gpus-per-worker 1 --f1-floor 0.5 > "$work/sweep.log" 2>&1
{
    echo "## sweep finished in $(( $(date +%s) - start ))s (2 trials x 2 GPU curvature workers)"
    tail -12 "$work/sweep.log"
    echo "## after the sweep"
    ray status
    echo "## autoscaler log (launches)"
    grep -hE "Adding|launch|Launching|Removing" /tmp/ray/session_latest/logs/monitor.* | tail -10 || true
} >> "$out"
cat "$out"
