"""A camera stream of one browser session, without Gradio: each frame in, the Live tab's HTML
out (``show_frame``), and the frame on screen kept for Freeze (``freeze``).

A frame is decoded and drawn in the caller's thread; only the forward pass goes to the model's
thread, through the runner that stays on this machine (``explorer.runner.cpu``): on ZeroGPU
every call of ``explorer.runner`` books GPU time from the visitor's quota, which a stream of
several frames a second would spend in seconds. The forward pass is an ``INTERACTIVE`` call
(``Runner.__call__``), as an upload's analysis: the model's thread serves those oldest first,
and each stream has one frame at a time there (the next is posted once this one is shown), so
an upload waits for at most one frame of each stream (``ui/live.py`` ``STREAMS``); a long job
(``Runner.background``, ``SECONDS`` or ``MINUTES``) lets the frames pass between its steps, so
a stream keeps going while someone's feature visualizations are computed.
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from xviz.app import explorer as ex
from xviz.app.files import FileStore
from xviz.checks import whole_number
from xviz.engine.analysis import Prediction
from xviz.engine.live import check_layer, frame_image, live_maps
from xviz.errors import AnalysisError
from xviz.render import live as render

#: The head runs (the pass goes to the end) at most this often; frames in between stop at
#: the layer shown. At 150 on 2 cores: 3-28 ms to an entry- or middle-flow layer, 34 ms to
#: the end.
PREDICT_EVERY_S = 0.5
TOP_K = 3
# The characters of a frame's base64 ``data:`` URL that identify it to the page's meter.
FRAME_KEY = 24
# The frames a session keeps by key for Freeze: the page names the one it shows, which is at
# most a few frames behind the last the server drew (each stream has one frame in flight).
KEPT_FRAMES = 8
#: What the page says when it gets no camera: by the name of the ``DOMException`` that
#: ``navigator.mediaDevices.getUserMedia`` rejects with (Media Capture and Streams, "getUserMedia"
#: steps: NotAllowedError when refused, NotFoundError when there is none, NotReadableError
#: when it cannot be opened), and ``insecure`` where the page has no ``navigator.mediaDevices``
#: (served neither over https nor from localhost). Any other name gets NotFoundError's.
CAMERA_PROBLEMS = {
    "NotAllowedError": (
        "The camera was refused: allow it for this page in the browser's site settings and "
        "press the camera again; the other tabs work with uploads meanwhile."
    ),
    "NotFoundError": (
        "No camera could be opened (none is connected, or another app holds it); the other "
        "tabs work with uploads."
    ),
    "NotReadableError": (
        "The camera could not be opened: another app may hold it; the other tabs work with uploads."
    ),
    "insecure": (
        "This browser gives this page no camera, as it is served neither over https nor from "
        "localhost; the other tabs work with uploads."
    ),
}


def frame_key(frame: bytes) -> str:
    """The last ``FRAME_KEY`` characters of ``frame``'s base64 encoding, as the page's
    ``data:`` URL of it ends (base64 encodes 3 bytes at a time from the start)."""
    groups = -(-len(frame) // 3)
    start = 3 * max(0, groups - FRAME_KEY // 4)
    return base64.b64encode(frame[start:]).decode("ascii")[-FRAME_KEY:]


@dataclass
class LiveSession:
    """One browser session's stream: its frame count, latest prediction and latest frame."""

    frames: int = 0
    top: list[Prediction] | None = None
    predicted_at: float | None = None  # time.monotonic() of the frame predicted
    predicted_size: int | None = None
    # The last ``KEPT_FRAMES`` encoded frames drawn, by ``frame_key``, oldest first: for Freeze
    # to find the one shown.
    kept: OrderedDict[str, bytes] = field(default_factory=OrderedDict)

    @property
    def last_frame(self) -> bytes | None:
        """The encoded frame last drawn."""
        return next(reversed(self.kept.values()), None)

    def keep(self, frame: bytes) -> str:
        """Keeps ``frame`` as the last drawn; its key, as the page names it."""
        key = frame_key(frame)
        self.kept[key] = frame
        self.kept.move_to_end(key)
        while len(self.kept) > KEPT_FRAMES:
            self.kept.popitem(last=False)
        return key


def show_frame(
    explorer: ex.Explorer,
    session: LiveSession,
    frame: bytes,
    size: int,
    layer: str,
    page: int,
    side: str,
    channel: int,
) -> str:
    """One frame's view: ``layer``'s page ``page`` of maps, ``channel`` of ``side`` large, the
    prediction (refreshed every ``PREDICT_EVERY_S``); ``session`` is updated.

    Raises ``AnalysisError`` / ``ImageError`` for a bad value or frame.
    """
    started = time.perf_counter()
    if not isinstance(frame, bytes):
        raise AnalysisError("A live frame must be the data: URL of a JPEG or PNG image.")
    size = whole_number(size, "The input size", ex.MIN_SIZE, ex.MAX_SIZE, text=True)
    layer = check_layer(layer)
    image = frame_image(frame, size)
    now = time.monotonic()
    predict = (
        session.predicted_at is None
        or session.predicted_size != size
        or now - session.predicted_at >= PREDICT_EVERY_S
    )
    cpu = explorer.runner.cpu
    maps = cpu(live_maps, image, layer, page, side, channel, predict=predict, top_k=TOP_K)
    if maps.top is not None:
        session.top, session.predicted_at, session.predicted_size = maps.top, now, size
    session.frames += 1
    key = session.keep(frame)
    age = None if session.predicted_at is None else now - session.predicted_at
    status = (
        f"Frame {session.frames} at {size}x{size}: the network to {layer} in "
        f"{1000 * maps.forward_s:.0f} ms on {cpu.where}"
        f"{' with the prediction' if maps.top is not None else ''}, "
        f"all in {1000 * (time.perf_counter() - started):.0f} ms."
    )
    return render.live_html(maps, key, session.top, age, status)


def freeze(files: FileStore, session: LiveSession | None, shown: object = None) -> Path:
    """The frame the page shows as a file, to open as an upload; ``AnalysisError`` if none.

    ``shown`` is the key the page names its frame on screen by (a client's value: only looked
    up); a key the session no longer keeps, or none, gives the last frame drawn.
    """
    if session is None or session.last_frame is None:
        raise AnalysisError("Start the camera first: there is no frame to freeze yet.")
    frame = (session.kept.get(shown) if isinstance(shown, str) else None) or session.last_frame
    png = frame.startswith(b"\x89PNG")
    path = files.new_file(f"live-frame.{'png' if png else 'jpg'}")
    path.write_bytes(frame)
    return path
