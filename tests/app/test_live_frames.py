"""The Live tab's frames without a browser (xviz/app/live.py): which runner computes them, what
the page gets, the prediction's lower rate, the frame's key, Freeze, and bad requests."""

import base64
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from camera_clip import jpeg, page_key

from xviz.app import live
from xviz.app.explorer import Explorer
from xviz.app.files import FileStore
from xviz.engine.runner import MINUTES, Runner
from xviz.errors import AnalysisError, ImageError

SIZE = 96


class Counting(Runner):
    """A runner that counts the calls it serves."""

    calls = 0

    def __call__(self, fn, /, *args, **kwargs):
        self.calls += 1
        return super().__call__(fn, *args, **kwargs)


class CPUOnly(Runner):
    """A runner like ZeroGPU's: its own calls would book GPU time (here they fail); its
    ``cpu`` runner stays on this machine."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.cpu = Counting(model, self.thread)

    def __call__(self, fn, /, *args, **kwargs):
        raise AssertionError("a live frame booked the GPU runner")


@pytest.fixture(scope="module")
def explorer(model):
    return Explorer(model, cache_mb=64, runner=CPUOnly(model))


def show(explorer, session, frame, layer="block2_sepconv1", **kwargs):
    view = {"size": SIZE, "page": 1, "side": "pointwise", "channel": 3} | kwargs
    return live.show_frame(explorer, session, frame, layer=layer, **view)


def test_a_frame_is_computed_on_the_cpu_runner_and_drawn_as_one_fragment(explorer):
    session = live.LiveSession()
    before = explorer.runner.cpu.calls
    page = show(explorer, session, jpeg(0))
    assert explorer.runner.cpu.calls == before + 1
    assert page.count('<img src="data:image/jpeg;base64,') == 3  # two grids, one channel
    assert page.count('class="xviz-tile') == 64  # 32 depthwise and 32 pointwise tiles
    assert 'data-channel="3"' in page and "xviz-selected" in page
    assert f'data-frame="{live.frame_key(jpeg(0))}"' in page
    assert "Prediction, top 3" in page and "with the prediction" in page
    assert session.frames == 1 and session.last_frame == jpeg(0)


def stepping_job(model, started, done, steps, pause=None):
    """A long job of ``steps`` small steps that calls ``pause()`` between them; the step at
    which ``done`` was set, or None if it never was."""
    started.set()
    for step in range(steps):
        pause()
        if done.is_set():
            return step
        time.sleep(0.01)
    return None


def test_a_frame_passes_between_the_steps_of_a_long_job(explorer):
    """A stream keeps going during someone's long job; the control: a call at the job's own
    priority waits for the job's end."""
    cpu = explorer.runner.cpu
    with ThreadPoolExecutor(1) as pool:
        started, done = threading.Event(), threading.Event()
        job = pool.submit(cpu.background, stepping_job, started, done, 500, priority=MINUTES)
        assert started.wait(60)
        show(explorer, live.LiveSession(), jpeg(7))  # returns once the frame was computed
        done.set()
        assert job.result() is not None  # the frame ran while the job still had steps left

        started, done = threading.Event(), threading.Event()
        job = pool.submit(cpu.background, stepping_job, started, done, 20, priority=MINUTES)
        assert started.wait(60)
        cpu.thread.run(done.set, MINUTES)
        assert job.result() is None


def test_the_prediction_comes_at_a_lower_rate_than_the_frames(explorer, monkeypatch):
    session = live.LiveSession()
    first = show(explorer, session, jpeg(1))
    monkeypatch.setattr(live, "PREDICT_EVERY_S", 3600.0)
    second = show(explorer, session, jpeg(2))
    assert "with the prediction" in first and "with the prediction" not in second
    assert "Prediction, top 3 (of a frame" in second  # the last prediction stays shown
    third = show(explorer, session, jpeg(2), size=SIZE + 32)  # a new size: predicted afresh
    assert "with the prediction" in third


def test_two_frames_give_two_pictures(explorer):
    """The control of the browser test's "the grids change": different frames, other maps."""
    session = live.LiveSession()
    grids = [
        re.findall(r'src="(data:image/jpeg[^"]+)"', show(explorer, session, jpeg(seed)))[:2]
        for seed in (3, 4, 3)
    ]
    assert grids[0] != grids[1] and grids[0] == grids[2]


@pytest.mark.parametrize("extra", [0, 1, 2])
def test_the_frame_key_is_how_the_browser_data_url_ends(extra):
    frame = jpeg(5) + b"\x00" * extra
    url = "data:image/jpeg;base64," + base64.b64encode(frame).decode("ascii")
    assert live.frame_key(frame) == url[-live.FRAME_KEY :]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"layer": "block1_conv1"}, AnalysisError, "Unknown layer"),
        ({"layer": "block2_sepconv1'><img src=x onerror=alert(1)>"}, AnalysisError, "Unknown"),
        ({"size": 10_000}, AnalysisError, "The input size"),
        ({"size": "big"}, AnalysisError, "The input size"),
        ({"side": "middle"}, AnalysisError, "Unknown side"),
    ],
)
def test_bad_values_are_refused_with_a_message(explorer, kwargs, error, message):
    with pytest.raises(error, match=message):
        show(explorer, live.LiveSession(), jpeg(0), **kwargs)


@pytest.mark.parametrize("frame", [b"", b"GIF89a", jpeg(0)[:300], "data:image/jpeg", None])
def test_a_malformed_frame_is_refused_with_a_message(explorer, frame):
    with pytest.raises((AnalysisError, ImageError)):
        show(explorer, live.LiveSession(), frame)


def test_freeze_keeps_the_frame_shown_as_an_upload_would(explorer, tmp_path):
    files = FileStore(tmp_path, max_age_s=None)
    with pytest.raises(AnalysisError, match="Start the camera"):
        live.freeze(files, live.LiveSession())
    with pytest.raises(AnalysisError, match="Start the camera"):
        live.freeze(files, None)
    session = live.LiveSession()
    show(explorer, session, jpeg(6))
    path = live.freeze(files, session)
    assert path.read_bytes() == jpeg(6) and path.suffix == ".jpg"
    # The analysis of the file sees the pixels the live view saw.
    assert np.array_equal(explorer.start(str(path), SIZE).image, live.frame_image(jpeg(6), SIZE))
    files.close()


def test_freeze_keeps_the_frame_the_page_names(explorer, tmp_path):
    files = FileStore(tmp_path, max_age_s=None)
    session = live.LiveSession()
    for i in range(3):
        show(explorer, session, jpeg(i))
    # The page shows frame 1 while frame 2 is drawn: Freeze keeps frame 1.
    assert live.freeze(files, session, page_key(jpeg(1))).read_bytes() == jpeg(1)
    assert live.freeze(files, session, page_key(jpeg(2))).read_bytes() == jpeg(2)
    # A key the session does not keep, or not a key at all, gives the last frame drawn.
    for shown in ["", "A" * live.FRAME_KEY, page_key(jpeg(7)), None, 5, ["x"], {"a": 1}, "../x"]:
        assert live.freeze(files, session, shown).read_bytes() == jpeg(2), shown
    # A session keeps its last KEPT_FRAMES frames only.
    for i in range(3, 3 + live.KEPT_FRAMES):
        show(explorer, session, jpeg(i))
    assert len(session.kept) == live.KEPT_FRAMES
    assert live.freeze(files, session, page_key(jpeg(1))).read_bytes() == jpeg(2 + live.KEPT_FRAMES)
    assert live.freeze(files, session, page_key(jpeg(4))).read_bytes() == jpeg(4)
    files.close()
