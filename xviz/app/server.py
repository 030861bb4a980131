"""Serving concerns of the web app: limits, start-up, the gate every request passes, the header.

What a request can name is attacker-controlled. The gate:
- ``FilePathImage``: the image input opens only files Gradio received as uploads (inside its
  cache) and the shipped examples; a ``data:`` URL is decoded by xviz; a URL is never fetched.
  Every image then goes through ``xviz.engine.preprocess.load_image`` and its limits.
- ``XvizBlocks``: whatever fails while Gradio turns a request's values into handler arguments
  is answered with a message, never an empty error, and logged in one short line.
- ``ui_errors``: what fails inside a handler likewise.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import traceback
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.context import LocalContext
from gradio.data_classes import ImageData
from gradio.exceptions import InvalidPathError
from PIL import Image
from starlette.middleware import Middleware

from xviz.app.explorer import Explorer
from xviz.data.gallery import SHIPPED, all_examples
from xviz.engine import zerogpu
from xviz.engine.devices import resolve_device
from xviz.engine.preprocess import MAX_FILE_BYTES, MAX_PIXELS, data_url_bytes
from xviz.engine.runner import Runner
from xviz.engine.warmup import start_warm_up
from xviz.errors import ImageError, XvizError, short
from xviz.model.weights import load_model
from xviz.model.xception import Xception

logger = logging.getLogger(__name__)


def env_number(name: str, default: float, minimum: float = 0, kind: type = int) -> Any:
    """``$name`` as a number of ``kind`` >= ``minimum``, else ``default`` when unset.

    The operator sets these; a value that is not such a number stops the app with a line that
    says which variable is wrong, instead of a traceback.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value != value or value < minimum:  # value != value: NaN
        raise SystemExit(f"xviz cannot start: ${name}={raw[:40]!r} is not a number >= {minimum}.")
    return value


# Pending requests beyond this are refused with Gradio's "queue is full" message.
QUEUE_SIZE = env_number("XVIZ_QUEUE_SIZE", 16, minimum=1)
# A browser session's state (its image, a few hundred kB) is dropped after this long idle.
SESSION_TTL_S = env_number("XVIZ_SESSION_TTL_S", 3600, minimum=1)
# Memory for cached analyses (one analysis is about 46 MB at 299x299, 12 MB at 150x150).
CACHE_MB = env_number("XVIZ_CACHE_MB", 768, kind=float)
# Analyses and exported zips unused for this long are deleted; so are Gradio's uploads.
RETENTION_S = env_number("XVIZ_RETENTION_S", 3600, minimum=1)

# The largest request body: a data: URL of the largest image (base64, 4 bytes per 3) and
# the JSON around it. File uploads have their own limit (max_file_size) and route.
MAX_REQUEST_BYTES = MAX_FILE_BYTES * 4 // 3 + 2**20


class BodyLimit:
    """ASGI middleware: a request whose body is larger than ``limit`` is answered 413 before
    a byte of it is parsed (Gradio would parse a 100 MB JSON body into memory first).

    The size is taken from Content-Length; a body sent without one is counted as it arrives
    and cut off at the limit.
    """

    def __init__(self, app: Any, limit: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].endswith("/upload"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(int(declared), send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return {"type": "http.disconnect"}  # the app stops reading: nothing is parsed
            return message

        return await self.app(scope, counted, send)

    async def _refuse(self, size: int, send: Any) -> None:
        text = (
            f"This request is {size / 2**20:.0f} MB; xviz takes requests up to "
            f"{self.limit / 2**20:.0f} MB (images up to {MAX_FILE_BYTES // 2**20} MB)."
        )
        body = json.dumps({"error": text, "detail": text}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def launch_options() -> dict[str, Any]:
    """How the app is launched, in production and in the tests alike (a new dict each time:
    Gradio writes into ``app_kwargs``). Unexpected errors show Gradio's generic message (no
    internal paths); xviz's own errors always say what is wrong."""
    return {
        "max_file_size": MAX_FILE_BYTES,
        # Closed browser sessions Gradio keeps (each ~0.3 MB); its default is 10000.
        "state_session_capacity": env_number("XVIZ_SESSIONS", 500, minimum=1),
        "show_error": False,
        # The shipped examples (public pictures), which the first screen and the gallery
        # show: inside the installed package, which may be outside the working directory.
        "allowed_paths": [str(SHIPPED)],
        "share": False,
        # The tabs' stylesheets (xviz/app/ui/*.css: maps, colourbars, phone layout), in order.
        "css_paths": sorted(Path(str(files("xviz.app.ui"))).glob("*.css")),
        "app_kwargs": {"middleware": [Middleware(BodyLimit)]},
        # Gradio 6 saves every event's inputs and outputs in the visitor's browser for a
        # "Runs" page; with xviz's many small events that store grew with each one and every
        # later event waited on it (0.13 s -> 0.5 s after six images), and it kept photos.
        "run_history": False,
    }


# Gradio's own image handling may open uploads with Pillow; keep its limit at ours.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# One answer for every file reference that is not an upload of this app, whether the file
# exists or not, is an image or not: a refusal must not tell which server files exist.
NOT_AN_UPLOAD = (
    "xviz opens only images uploaded to this app and its own examples, and this is neither "
    "(or its upload has expired). Upload the image again."
)
NO_URLS = "xviz does not download images from URLs. Download the image, then upload the file."
UNREADABLE = (
    "A value in this request could not be read: it has the wrong type or is not one of the "
    "values this control takes."
)
INTERNAL = "xviz could not do this (an internal error, logged on the server). Please try again."
_EXAMPLES = frozenset(path.resolve() for path in all_examples())


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value[:8].lower().startswith(("http://", "https://"))


def uploaded_file(name: str, cache: str | Path) -> Path:
    """The real path of ``name`` if it is a file Gradio received (inside its ``cache``) or a
    shipped example; else ``ImageError(NOT_AN_UPLOAD)``.

    Symbolic links and ``..`` are resolved first, so a link inside the cache that points out
    of it is refused like the place it points to.
    """
    try:
        real = Path(name).resolve(strict=True)
        inside = real.is_relative_to(Path(cache).resolve()) or real in _EXAMPLES
        if inside and real.is_file():
            return real
    except (OSError, RuntimeError, ValueError):  # missing, a link loop, a NUL byte
        pass
    raise ImageError(NOT_AN_UPLOAD)


class FilePathImage(gr.Image):
    """``gr.Image`` whose value reaches xviz undecoded: the path of an upload, or bytes.

    Gradio's own preprocessing opens any ``path`` a request names that lacks Gradio's ``meta``
    marker, and decodes ``data:`` URLs itself (re-encoding them lossily, without xviz's
    limits). Here only uploads and examples are opened (``uploaded_file``), ``data:`` URLs
    are decoded by xviz, and URLs are refused before Gradio would download them.
    """

    @classmethod
    def get_block_name(cls) -> str:
        return "image"  # the browser side is Gradio's own image component

    def preprocess(self, payload: Any) -> str | bytes | None:
        if payload is None:
            return None
        if isinstance(payload, dict):
            payload = ImageData(**payload)
        url = payload.url or ""
        if url[:5].lower() == "data:":
            return data_url_bytes(url)
        if not payload.path:
            raise ImageError(NO_URLS if url else NOT_AN_UPLOAD)
        if _is_url(payload.path):
            raise ImageError(NO_URLS)
        return str(uploaded_file(payload.path, self.GRADIO_CACHE))

    async def async_move_resource_to_block_cache(self, url_or_file_path: Any) -> str | None:
        if _is_url(url_or_file_path):  # Gradio would download it before preprocess runs
            raise ImageError(NO_URLS)
        return await super().async_move_resource_to_block_cache(url_or_file_path)

    def move_resource_to_block_cache(self, url_or_file_path: Any) -> str | None:
        if _is_url(url_or_file_path):
            raise ImageError(NO_URLS)
        return super().move_resource_to_block_cache(url_or_file_path)


def request_error(err: BaseException, where: str) -> gr.Error:
    """The message for a request that failed: xviz's own, or one for its kind of failure.

    Logs one line, with what the client sent cut short.
    """
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, XvizError):
        cause = cause.__cause__
    if isinstance(cause, XvizError):
        message = str(cause)
    elif isinstance(err, (InvalidPathError, OSError)):
        # Gradio refused to move the named file into its cache, or could not even look at
        # it (a name too long for the file system, say): the same answer either way.
        message = NOT_AN_UPLOAD
    else:
        message = UNREADABLE
    logger.warning("refused a request to %s: %s", where, short(cause or err))
    return gr.Error(message, print_exception=False)


class XvizBlocks(gr.Blocks):
    """``gr.Blocks`` whose requests never fail with an empty message.

    Before a handler runs, Gradio moves the request's files to its cache, validates each value
    against its component's data model and preprocesses it. A failure there reaches the client
    as ``{"error": null}`` (unless ``show_error``, which would show internal details) and its
    traceback, with the client's values in it, goes to the log.
    """

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except Exception as err:
            raise request_error(err, block_fn.name or "an event") from None


def ui_errors(fn: Callable) -> Callable:
    """A handler (function or generator) whose failures reach the page as messages; the app
    keeps serving.

    xviz's errors say what is wrong; anything else is a bug: the user gets ``INTERNAL`` and the
    log gets the traceback's frames and the error cut short (a message can quote request data).
    """

    def translated(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if isinstance(err, XvizError):
            return gr.Error(str(err), print_exception=False)
        frames = "".join(traceback.format_tb(err.__traceback__))
        logger.error("internal error in %s: %s\n%s", fn.__name__, short(err), frames)
        return gr.Error(INTERNAL, print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise translated(err) from None

        return generator

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise translated(err) from None

    return wrapper


def reported(evt: gr.EventData, name: str) -> Any:
    """What a page script reported as ``name`` with its event (None if nothing): a client can
    send anything there, so the handler checks it like any other request value."""
    data = getattr(evt, "_data", None)
    return data.get(name) if isinstance(data, dict) else None


def make_explorer(
    weights: str | None = None, device: str | None = None, cache_mb: float = CACHE_MB
) -> Explorer:
    """Load the weights (``XVIZ_WEIGHTS`` / auto) on the device and wrap them for the app.

    On ZeroGPU (``xviz.engine.zerogpu``) the served model stays on the CPU and a copy goes to the
    GPU, which exists only inside the worker's calls: no warm-up runs (it would need CUDA
    outside a call, or book a visitor's quota at start).
    """
    if zerogpu.enabled():
        model = load_model(weights or "auto", device="cpu")
        runner: Runner = zerogpu.ZeroGPURunner(model, notify=_tell_visitor, for_visitor=_in_request)
    else:
        model = load_model(weights or "auto", device=device or "auto")
        start_warm_up(model)  # on a GPU: every shape the app runs, once, in a daemon thread
        runner = Runner(model)
    return Explorer(model, cache_mb=cache_mb, max_age_s=RETENTION_S, runner=runner)


def _in_request() -> bool:
    """Whether this thread serves a visitor's request (Gradio's context says so)."""
    return LocalContext.request.get(None) is not None


def _tell_visitor(sentence: str) -> None:
    """A sentence for the visitor whose request this is, as a notice on their page (outside a
    request, Gradio logs it)."""
    gr.Warning(sentence, duration=12)


def weights_line(model: Xception, where: str | None = None) -> str:
    """Which weights run where (``where``, default the model's device), and why those: one
    line the page always shows."""
    src = model.source
    if src is None:
        return "Weights: **random** (for tests only): predictions mean nothing."
    if where is None:
        where = resolve_device(str(next(model.parameters()).device)).type
    line = (
        f"Weights: **{src.name}**, {len(model.labels)} classes ({src.label_set}), "
        f"running on **{where}**."
    )
    return f"{line} Why these weights: {src.note}." if src.note else line


def weights_details(model: Xception) -> str:
    """What the weights are, in a few sentences, for the page's "about" section."""
    src = model.source
    if src is None:
        return "Randomly initialised weights, for tests: no pretrained file was loaded."
    lines = [
        f"**{src.name}**: {src.description}; native input {src.input_size}x{src.input_size}; "
        f"'{src.padding}' max-pool padding."
    ]
    if src.label_set == "kitchenware":
        lines.append(
            "These are the offline weights: the backbone is the **ImageNet-trained Keras "
            "Xception** (frozen), and the head knows **6 kitchen classes** (cup, fork, glass, "
            "knife, plate, spoon), trained at 150x150. Every map is the ImageNet backbone's; "
            "set `XVIZ_WEIGHTS=keras-imagenet` online for the 1000 ImageNet classes."
        )
    return "\n\n".join(lines)


def unavailable_demo() -> gr.Blocks:
    """The page a Space serves when no weights load: an exit there is restarted in a loop.

    It names no path or URL of the server; the log has the details.
    """
    with gr.Blocks(title="xviz cannot start") as demo:
        gr.Markdown(
            "# xviz cannot start: no pretrained weights could be loaded\n\n"
            "The Space's log (*Logs*) names every weights file that was tried and why "
            "it failed. To fix it, then restart the Space:\n\n"
            "- let it download the ImageNet weights once: it must reach "
            "`storage.googleapis.com` (Keras) or `github.com` (timm), and neither "
            "`XVIZ_OFFLINE` nor `HF_HUB_OFFLINE` may be set;\n"
            "- or set the variable `XVIZ_WEIGHTS` in the Space's settings to "
            "`keras-imagenet`, `timm-imagenet` or a weights file in the repository "
            "(`.h5`, `.keras`, `.safetensors`, `.pth`)."
        )
    return demo
