#!/usr/bin/env bash
# Sets up .venv if needed, then launches the xviz app on http://127.0.0.1:7860.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh app
export GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"
exec .venv/bin/python app.py "$@"
