#!/usr/bin/env bash
# Start (or restart) the MLflow tracking server that FairPrune sweeps log to.
#
#   bash cluster/start_mlflow.sh                      # one machine: listens on 127.0.0.1 only
#   bash cluster/start_mlflow.sh --host private       # a Ray head: its private address (hostname -I)
#   bash cluster/start_mlflow.sh --host 10.0.0.5 --port 5001
#
# Never on a public address unless you name one: --host 0.0.0.0 is refused. Backend store,
# artifacts, log, pid file and the URI the sweep needs (mlflow_uri) all live in one folder,
# $FAIRPRUNE_MLFLOW_DIR (default ~/mlflow); artifacts go to an object store bucket when
# $FAIRPRUNE_ARTIFACTS is set (e.g. s3://my-bucket/fairprune; the node's IAM role needs access).
# The script restarts only the server it started (by the pid it wrote), never another process.
set -euo pipefail
dir="${FAIRPRUNE_MLFLOW_DIR:-$HOME/mlflow}"
port="${FAIRPRUNE_MLFLOW_PORT:-5000}"
host="127.0.0.1"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --host) host="${2:?--host needs an address, or 'private'}"; shift 2 ;;
        --port) port="${2:?--port needs a number}"; shift 2 ;;
        --dir) dir="${2:?--dir needs a folder}"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "start_mlflow.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ "$host" == "private" ]]; then
    host="$(hostname -I | awk '{print $1}')"  # the machine's first (private) address
fi
if [[ "$host" == "0.0.0.0" || "$host" == "::" || -z "$host" ]]; then
    echo "start_mlflow.sh: refusing to listen on every interface ($host); pass --host 127.0.0.1 or a private address" >&2
    exit 2
fi
if ! [[ "$port" =~ ^[0-9]+$ ]]; then
    echo "start_mlflow.sh: --port must be a number, got $port" >&2
    exit 2
fi
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
    --host "$host" --port "$port" \
    --allowed-hosts "$host:$port,$host,localhost:$port,127.0.0.1:$port" \
    > "$dir/server.log" 2>&1 &
echo $! > "$pidfile"
echo "http://$host:$port" > "$dir/mlflow_uri"
for _ in $(seq 1 "${FAIRPRUNE_MLFLOW_WAIT_S:-180}"); do  # a loaded head can take minutes
    if curl -sf "http://$host:$port/health" > /dev/null; then
        echo "MLflow tracking server: http://$host:$port (URI in $dir/mlflow_uri)"
        exit 0
    fi
    sleep 1
done
echo "MLflow server did not start; see $dir/server.log" >&2
exit 1
