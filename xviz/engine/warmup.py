"""Run the app's shapes once at start, in the background, so a user's first click costs what
the second does.

On a GPU the first run at a new batch shape pays for loading kernels and choosing algorithms:
on an H200, Integrated Gradients (32 steps) took 3.7 s the first time and 0.13 s after, Layer
Conductance 2.8 s and 0.10 s. :func:`warm_up` runs, at every input side the app offers, one
analysis, one prediction and one call of each attribution method with the app's default
settings (so with the batch shapes a click runs), on a mid-grey image.

On the CPU it does nothing: there it costs more than it saves. With one thread, warming all
seven methods at 299 and 150 took 63 s of CPU time; after it the first Integrated Gradients
(32 steps) at 299 took 19.0 s, against 20.4 s without warm-up and 15.9 s warm, and at 150
first and warm calls cost the same (bench/analysis.py --clock cpu). The first call's extra is
mostly page faults on fresh memory (8 steps: 408k against 181k), which the server gives back
to the system after cache evictions anyway. Meanwhile a first click would wait for whichever
warm-up run holds the model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import numpy as np

from xviz.engine.analysis import analyze, input_size, model_device
from xviz.engine.inference import predict
from xviz.errors import XvizError
from xviz.methods.attribution import LAYER_METHODS, METHODS, attribute
from xviz.model.xception import Xception

logger = logging.getLogger(__name__)

# The input sides the app offers besides the weights' own (app.py's size choice).
APP_SIZES: tuple[int, ...] = (299, 150)
# Where the layer methods are warmed: the first block, so the backward pass runs through
# every block (the shapes do not depend on the block).
WARM_BLOCK = "block1"


def app_sizes(model: Xception) -> list[int]:
    """The input sides the app offers for ``model``: its weights' own and :data:`APP_SIZES`."""
    return sorted({input_size(model), *APP_SIZES})


def needs_warm_up(model: Xception) -> bool:
    """Whether first runs are slow on ``model``'s device: on an accelerator (CUDA, MPS)."""
    return model_device(model).type != "cpu"


def warm_up(
    model: Xception,
    sizes: Iterable[int] | None = None,
    methods: Iterable[str] = METHODS,
    force: bool = False,
) -> list[str]:
    """Run each shape the app uses once, so that later runs at those shapes are warm.

    Args:
        model: the served model (with a classifier head).
        sizes: input sides; default :func:`app_sizes`.
        methods: attribution methods to warm, with their default settings.
        force: warm up on the CPU too (tests; see the module docstring for why not).

    Returns:
        What ran, in order: ``"analyze@299"``, ``"predict@299"``, ``"saliency@299"``, ...;
        empty when the device needs no warm-up. Every run takes the model's lock itself, so a
        user's request waits for one run at most, never for the whole warm-up.
    """
    if not (force or needs_warm_up(model)):
        return []
    done = []
    for size in app_sizes(model) if sizes is None else sizes:
        grey = np.full((size, size, 3), 128, dtype=np.uint8)
        analysis = analyze(model, grey, size=size)
        done.append(f"analyze@{size}")
        predict(model, grey, size=size)
        done.append(f"predict@{size}")
        for method in methods:
            block = WARM_BLOCK if method in LAYER_METHODS else None
            attribute(model, analysis, method=method, block=block)
            done.append(f"{method}@{size}")
    return done


def start_warm_up(model: Xception) -> threading.Thread | None:
    """:func:`warm_up` in a daemon thread, when the model's device needs it (else None).

    A failure (out of memory, say) is logged and only costs the first clicks their speed.
    """
    if not needs_warm_up(model):
        return None

    def run() -> None:
        try:
            done = warm_up(model)
        # torch's own errors (out of memory, CUDA) are RuntimeErrors.
        except (RuntimeError, XvizError) as error:
            logger.warning("warm-up stopped: %s; first runs at new shapes will be slower", error)
            return
        logger.info("warm-up done: %s", ", ".join(done))

    thread = threading.Thread(target=run, name="xviz-warm-up", daemon=True)
    thread.start()
    return thread
