#!/usr/bin/env bash
# Sets up .venv (with test tools) and a headless Chromium if needed, then runs every test.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k weights`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # The end-to-end tests drive Debian's Chromium; playwright cannot download browsers offline.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export GRADIO_ANALYTICS_ENABLED=False
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest "$@"
