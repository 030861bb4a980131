#!/bin/sh
# The README's faithfulness table (bench/faithfulness_gallery.json): `xviz faithfulness` on the
# gallery's examples (xviz/data/gallery.py: the shipped photos, then the kitchenware package's)
# with the kitchenware weights at their native 150. The rocket is left out to keep the run
# under five minutes on two CPU cores (about 35 s an image).
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
IMAGES=$("$PY" -c "from xviz.data.gallery import all_examples
print(' '.join(str(p) for p in all_examples() if p.stem != 'rocket'))")
# shellcheck disable=SC2086 # one argument per path (the paths have no spaces)
"$PY" -m xviz faithfulness $IMAGES --weights kitchenware --size 150 \
    --out bench/faithfulness_gallery.json
