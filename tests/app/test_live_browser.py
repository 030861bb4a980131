"""The Live tab end to end: Debian's headless Chromium plays a clip as its camera.

The clip (``tests/camera_clip.py``) shows the cat, then the rocket, in turn; each map shown is
matched to the photo its camera frame shows (the frame's own pixels, kept by the page as it
captures them), so "the grids change with the camera" is checked against which photo was in
front of it. Skipped when no Chromium is installed, unless XVIZ_REQUIRE_BROWSER=1 (CI sets it).
"""

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from camera_clip import write_clip
from PIL import Image

from xviz.app.live import CAMERA_PROBLEMS
from xviz.engine.hooks import model_lock
from xviz.engine.preprocess import preprocess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
FAKE_UI = "--use-fake-ui-for-media-stream"  # the camera is granted without asking
FAKE_CAMERA = "--use-fake-device-for-media-stream"
EXAMPLES = Path(__file__).resolve().parents[2] / "xviz" / "data" / "examples"
PHOTOS = {"cat": EXAMPLES / "cat.jpg", "rocket": EXAMPLES / "rocket.jpg"}
LOAD_MS = 180_000  # the first screen runs the model on a loaded 2-core CPU
SAMPLES = 2  # frames of each photo compared

pytestmark = pytest.mark.browser

# The test's own record of the camera's frames, by the key the view names them with (the last
# characters of the data: URL, as LIVE_METER keys them), installed before the page's scripts.
KEEP_FRAMES = """
(() => {
  const kept = window.xvizTestFrames = new Map();
  const encode = HTMLCanvasElement.prototype.toDataURL;
  HTMLCanvasElement.prototype.toDataURL = function (type, ...rest) {
    const url = encode.call(this, type, ...rest);
    if (type === 'image/jpeg') {
      kept.set(url.slice(-KEY), url);
      while (kept.size > 300) kept.delete(kept.keys().next().value);
    }
    return url;
  };
})();
"""
# What the view shows now, in one look: the frame it names, its two grids, the frame's pixels.
SHOWN = """
() => {
  const view = document.querySelector('#live-view .xviz-live[data-frame]');
  if (!view) return null;
  const grids = ['#live-depthwise img', '#live-pointwise img'].map((s) => view.querySelector(s));
  if (grids.some((g) => !g || !g.complete || !g.naturalWidth)) return null;
  const frame = view.dataset.frame;
  return {frame, grids: grids.map((g) => g.src), camera: window.xvizTestFrames.get(frame) || null,
          status: view.querySelector('.xviz-live-status').innerText};
}
"""

# The state of the camera's tracks: "live" while the browser holds it, "ended" once released.
CAMERA = """
() => {
  const video = document.querySelector('#live-camera video');
  const stream = video && video.srcObject;
  return stream ? stream.getTracks().map((t) => t.readyState) : [];
}
"""

# The Activations tab's two grids, where loaded.
GRIDS = """
() => ['#depthwise-grid img', '#pointwise-grid img'].map((s) => {
  const i = document.querySelector(s);
  return i && i.complete && i.naturalWidth > 0 ? i.src : null;
})
"""


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("camera") / "clip.y4m", list(PHOTOS.values()))


@pytest.fixture
def chromium(playwright):
    """``chromium(*flags)``: a browser with ``flags`` added to the usual ones, closed after."""
    opened = []

    def launch(*flags: str):
        opened.append(playwright.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *flags]))
        return opened[-1]

    yield launch
    for browser in opened:
        browser.close()


def decode(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def photo_of(frame: np.ndarray) -> str:
    """Which of the clip's photos a camera frame shows: the nearest, pixel by pixel."""
    small = (64, 48)
    seen = np.asarray(Image.fromarray(frame).resize(small), np.float32)
    distances = {
        name: np.abs(seen - np.asarray(Image.open(path).convert("RGB").resize(small))).mean()
        for name, path in PHOTOS.items()
    }
    return min(distances, key=distances.get)


def open_live(browser, url: str):
    """The Live tab, once the first screen's analysis is there; the camera not started yet."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.add_init_script(KEEP_FRAMES.replace("KEY", "24"))
    page.goto(url + "?tab=live")
    page.locator("#prediction h2").wait_for(timeout=LOAD_MS)
    page.get_by_text("Click to Access Webcam").wait_for(timeout=LOAD_MS)
    return page


def start_camera(page) -> None:
    page.get_by_text("Click to Access Webcam").click()
    page.locator("#live-camera").get_by_role("button", name="capture photo").click()
    page.wait_for_function(SHOWN, timeout=LOAD_MS)


def sample_both_photos(page) -> dict[str, list[dict]]:
    """Looks at the view until it has shown ``SAMPLES`` distinct frames of each photo."""
    seen: dict[str, list[dict]] = {name: [] for name in PHOTOS}
    frames = set()
    for _ in range(600):  # 600 looks, 0.1 s apart: the 4.8 s clip ten times over
        shown = page.evaluate(SHOWN)
        if shown and shown["camera"] and shown["frame"] not in frames:
            frames.add(shown["frame"])
            seen[photo_of(decode(shown["camera"]))].append(shown)
        if all(len(v) >= SAMPLES for v in seen.values()):
            return seen
        page.wait_for_timeout(100)
    pytest.fail(f"the view showed too few frames of each photo: {[len(v) for v in seen.values()]}")


def wait_new_grids(page, before: list) -> None:
    """Until both grids of the Activations tab are loaded and neither is one of ``before``."""
    page.wait_for_function(
        f"(old) => {{ const g = ({GRIDS})(); return g.every((s) => s && !old.includes(s)); }}",
        arg=before,
        timeout=LOAD_MS,
    )


def assert_no_more_frames(page) -> None:
    page.wait_for_timeout(1500)  # a frame already on its way is shown
    shown = page.evaluate("() => window.xvizLive.length")
    page.wait_for_timeout(3000)  # 30 frames' time at the stream's 10 frames/s
    assert page.evaluate("() => window.xvizLive.length") == shown


def pointwise(shown: dict) -> np.ndarray:
    return decode(shown["grids"][1]).astype(np.float32)


def top_label(model, frame: bytes, size: int, tmp_path: Path) -> str:
    path = tmp_path / "frame.jpg"
    path.write_bytes(frame)
    with model_lock(model), torch.inference_mode():
        return f"class {int(model(preprocess(str(path), size))[0].argmax())}"


def test_the_grids_follow_the_camera_and_freeze_analyses_its_frame(
    chromium, clip, served_app, tmp_path
):
    url, explorer = served_app
    page = open_live(
        chromium(FAKE_UI, FAKE_CAMERA, f"--use-file-for-fake-video-capture={clip}"), url
    )
    start_camera(page)
    seen = sample_both_photos(page)
    cats, rockets = ([pointwise(s) for s in seen[name]] for name in PHOTOS)
    # The control: the pictures are maps, not blank boxes (tiles differ within and between).
    for grid in cats + rockets:
        assert grid.std() > 10
    within = np.abs(cats[0] - cats[1]).mean()  # two frames of the cat: the stripe differs
    between = np.abs(cats[0] - rockets[0]).mean()
    assert between > 5 and between > 2 * within, (between, within)
    assert all("at 299x299" in s["status"] for v in seen.values() for s in v)

    before = page.evaluate(GRIDS)
    # The frame on screen at the click: the last the page painted.
    on_screen = page.evaluate(
        "() => { const k = window.xvizLive.at(-1).frame;"
        " document.querySelector('#live-freeze').click(); return k; }"
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=tab][aria-selected=true]')]"
        ".some((t) => t.innerText.trim() === 'Activations')",
        timeout=LOAD_MS,
    )
    # The frame analysed is a frame the camera captured: the one on screen at the click (or
    # one painted after it, before the click's handler ran).
    page.wait_for_function(
        "() => { const i = document.querySelector('#image-input img');"
        " return i && i.complete && i.src.includes('live-frame'); }",
        timeout=LOAD_MS,
    )
    frozen = page.evaluate(
        """async () => {
          const bytes = new Uint8Array(await (await fetch(
            document.querySelector('#image-input img').src)).arrayBuffer());
          let text = '';
          bytes.forEach((b) => { text += String.fromCharCode(b); });
          return btoa(text);
        }"""
    )
    kept = page.evaluate("() => [...window.xvizTestFrames.values()]")
    assert "data:image/jpeg;base64," + frozen in kept
    shown = page.evaluate("() => window.xvizLive.map((e) => e.frame)")
    since = shown[len(shown) - 1 - shown[::-1].index(on_screen) :]
    assert any(("data:image/jpeg;base64," + frozen).endswith(key) for key in since), len(since)
    # ... and analysed in full: its prediction and both grids of the Activations tab.
    expected = top_label(explorer.model, base64.b64decode(frozen), 299, tmp_path)
    page.wait_for_function(
        "(label) => document.querySelector('#prediction h2')?.innerText === label",
        arg=expected,
        timeout=LOAD_MS,
    )
    wait_new_grids(page, before)
    assert page.get_by_text("Error", exact=True).count() == 0
    # Freeze stopped the stream: no frame is shown any more, and the camera is released.
    assert_no_more_frames(page)
    assert page.evaluate(CAMERA) == ["ended"]
    page.close()


def test_stop_stops_the_stream(chromium, clip, served_app):
    url, _ = served_app
    page = open_live(
        chromium(FAKE_UI, FAKE_CAMERA, f"--use-file-for-fake-video-capture={clip}"), url
    )
    start_camera(page)
    first = page.evaluate(SHOWN)["frame"]
    # The control: running, the view moves on to other frames.
    page.wait_for_function(
        "(f) => document.querySelector('.xviz-live').dataset.frame !== f", arg=first
    )
    record = page.locator("#live-camera").get_by_role("button", name="capture photo")
    assert page.evaluate(CAMERA) == ["live"]
    record.click()  # Stop
    assert_no_more_frames(page)
    # ... and the camera is released (its light goes off), not only the stream ended.
    assert page.evaluate(CAMERA) == ["ended"]
    # The control: Record again asks for the camera again, and the view moves on once more.
    last = page.evaluate(SHOWN)["frame"]
    record.click()
    page.wait_for_function(
        "(f) => document.querySelector('.xviz-live').dataset.frame !== f", arg=last,
        timeout=LOAD_MS,
    )  # fmt: skip
    assert page.evaluate(CAMERA) == ["live"]
    page.close()


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ((), "NotFoundError"),  # no camera at all: the machine has none
        ((FAKE_CAMERA,), "NotAllowedError"),  # a camera, but headless Chromium refuses it
    ],
)
def test_a_missing_or_refused_camera_gets_one_sentence_and_the_app_works_on(
    chromium, served_app, flags, problem
):
    url, _ = served_app
    page = open_live(chromium(*flags), url)
    page.get_by_text("Click to Access Webcam").click()
    message = page.locator("#live-view .xviz-live-message[role=alert]")
    message.wait_for(timeout=30_000)
    assert message.inner_text() == CAMERA_PROBLEMS[problem]
    assert message.inner_text().count(". ") == 0  # one sentence
    # The app works on: an example is analysed and its maps shown.
    page.get_by_role("tab", name="Activations").click()
    page.wait_for_function(f"() => ({GRIDS})().every((s) => s)", timeout=LOAD_MS)
    before = page.evaluate(GRIDS)
    page.get_by_role("button", name="rocket", exact=True).click()
    wait_new_grids(page, before)
    assert page.get_by_text("Error", exact=True).count() == 0
    page.close()
