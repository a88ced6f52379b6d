#!/usr/bin/env bash
# Start the MLflow tracking server on a Ray head node (called by head_start_ray_commands).
#
# It listens on the head's PRIVATE address only (workers reach it inside the private network;
# nothing is exposed to the internet). Backend store and artifacts live on the head's disk under
# $FAIRPRUNE_MLFLOW_DIR (default ~/mlflow), or artifacts go to an object store bucket when
# $FAIRPRUNE_ARTIFACTS is set (e.g. s3://my-bucket/fairprune; the node's IAM role needs access).
# The URI the sweep needs is written to ~/mlflow_uri.
set -euo pipefail
dir="${FAIRPRUNE_MLFLOW_DIR:-$HOME/mlflow}"
port="${FAIRPRUNE_MLFLOW_PORT:-5000}"
ip="$(hostname -I | awk '{print $1}')"  # the private address
mkdir -p "$dir"
artifacts="${FAIRPRUNE_ARTIFACTS:-$dir/artifacts}"
pidfile="$dir/server.pid"
# stop only the server this script started before (its own process group, by the pid it wrote),
# never any other mlflow process on the machine
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill -- "-$(cat "$pidfile")" 2>/dev/null || kill "$(cat "$pidfile")"
    for _ in $(seq 1 20); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.5; done
fi
setsid nohup mlflow server \
    --backend-store-uri "sqlite:///$dir/mlflow.db" \
    --artifacts-destination "$artifacts" \
    --host "$ip" --port "$port" \
    --allowed-hosts "$ip:$port,$ip,localhost:$port,127.0.0.1:$port" \
    > "$dir/server.log" 2>&1 &
echo $! > "$pidfile"
echo "http://$ip:$port" > "$HOME/mlflow_uri"
for _ in $(seq 1 "${FAIRPRUNE_MLFLOW_WAIT_S:-180}"); do  # a loaded head can take minutes
    if curl -sf "http://$ip:$port/health" > /dev/null; then
        echo "MLflow tracking server: http://$ip:$port (private address)"
        exit 0
    fi
    sleep 1
done
echo "MLflow server did not start; see $dir/server.log" >&2
exit 1
