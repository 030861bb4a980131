"""The app on ZeroGPU, with the real ``spaces`` package against a stand-in device API.

Runs in the ZeroGPU venv (``bash scripts/test_zerogpu.sh``: PyPI's CUDA build of torch, which
runs without a GPU, and ``spaces``); elsewhere it is skipped, or fails under
``XVIZ_REQUIRE_ZEROGPU=1`` (CI). ``app.py`` is started as a Space starts it
(``SPACES_ZERO_GPU=true``, ``SPACES_ZERO_DEVICE_API_URL`` at ``tests/zerogpu_api.py``):

- on a CPU machine a granted GPU call reaches the package's worker, which fails to find a
  driver; a refused one (429: the quota is spent) never leaves the Space. Both must end in
  the right answer, computed on the CPU, and the visitor is told why;
- on a GPU machine the granted calls run for real, on the GPU.

Any CUDA use outside a decorated call raises under the package's emulation mode (its
``torch._C._cuda_init`` raises), so an app that touched CUDA at start-up would not serve.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.zerogpu_api import DeviceAPI, serve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "xviz" / "data" / "examples"
PHOTO = EXAMPLES / "cat.jpg"
SIZE = 150


def _harness_missing() -> str | None:
    try:
        import spaces  # noqa: F401
        import torch
    except ImportError as err:
        return f"needs the ZeroGPU venv ({err})"
    if torch.version.cuda is None:
        return "needs a CUDA build of torch (spaces' ZeroGPU mode does not import without one)"
    return None


missing = _harness_missing()
if missing and os.environ.get("XVIZ_REQUIRE_ZEROGPU") == "1":
    raise RuntimeError(f"XVIZ_REQUIRE_ZEROGPU=1 but the harness {missing}")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing is not None, reason=missing or ""),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """(url, api, log path) of app.py served on ZeroGPU against the stand-in API."""
    api = DeviceAPI()
    server, api_url = serve(api)
    home = tmp_path_factory.mktemp("space-home")
    log = home / "app.log"
    port = _free_port()
    env = {
        **os.environ,
        "SPACES_ZERO_GPU": "true",
        "SPACES_ZERO_DEVICE_API_URL": api_url,
        "ZEROGPU_OFFLOAD_DIR": str(home / "tensors"),
        "HOME": str(home),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(home / "gradio"),
        "XVIZ_OFFLINE": "1",
        "XVIZ_CACHE": str(home / "cache"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("XVIZ_DEVICE", None)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited on ZeroGPU:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not serve in 300 s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield url, api, log
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        server.shutdown()


def _reference_top(photo: Path, size: int) -> dict[str, float]:
    """The top 5 of the same weights on the CPU, computed here with the library itself."""
    os.environ.setdefault("XVIZ_OFFLINE", "1")
    import xviz

    model = xviz.load_model("auto", device="cpu")
    analysis = xviz.analyze(model, photo, size=size)
    return {p.label: p.probability for p in analysis.top}


def _queue_call(
    url: str, api_name: str, data: list, session: str | None = None
) -> tuple[dict, list[dict]]:
    """Run a named endpoint through the queue protocol the page uses, as ``session`` (default
    a new one); (the completed message, every "log" message: Gradio's notices, as the page
    shows them)."""
    config = httpx.get(f"{url}config", timeout=30).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    session = session or os.urandom(6).hex()
    joined = httpx.post(
        f"{url}gradio_api/queue/join",
        json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None},
        timeout=30,
    )
    joined.raise_for_status()
    logs: list[dict] = []
    with httpx.stream(
        "GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, timeout=600
    ) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "log":
                logs.append(message)
            if message.get("msg") == "process_completed":
                return message, logs
    raise AssertionError(f"{api_name} never completed")


def _upload(url: str, path: Path) -> dict:
    with path.open("rb") as f:
        uploaded = httpx.post(f"{url}gradio_api/upload", files={"files": f}, timeout=30).json()
    return {"path": uploaded[0], "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}


def test_the_space_starts_with_decorated_functions_and_no_cuda(space):
    url, api, log = space
    assert api.seen("/startup-report"), "spaces reported no @spaces.GPU function at launch"
    text = log.read_text()
    assert "_cuda_init" not in text and "CUDA has been initialized" not in text, text[-3000:]
    # The model's GPU copy was on the emulated cuda: the package packed its 84 MB at launch.
    assert "ZeroGPU tensors packing" in text and "84.3M/84.3M" in text, text[-3000:]
    page = httpx.get(url, timeout=30).text
    assert "ZeroGPU" in page  # the header says where the model runs


# Each case its own photo: an analysis made before would come from the cache, with no GPU call.
@pytest.mark.parametrize(("mode", "photo"), [("quota", "cat.jpg"), ("grant", "rocket.jpg")])
def test_a_visitor_gets_the_cpu_answer_and_one_sentence_when_zerogpu_cannot_serve(
    space, mode, photo
):
    url, api, _ = space
    api.mode = mode
    photo = EXAMPLES / photo
    before, allowed = len(api.seen("/schedule")), len(api.seen("/allow"))
    done, logs = _queue_call(url, "predict", [_upload(url, photo), SIZE])
    assert done["success"], done
    (answer,) = done["output"]["data"]
    got = {c["label"]: c["confidence"] for c in answer.get("confidences", [])} or answer
    expected = _reference_top(photo, SIZE)
    assert list(got)[: len(expected)] == list(expected)
    assert np.allclose([got[k] for k in expected], list(expected.values()), atol=1e-5)
    schedules = api.seen("/schedule")[before:]
    assert schedules, "the analysis never asked ZeroGPU for a GPU"
    booked = int(schedules[0]["durationSeconds"])
    assert 2 <= booked <= 30, f"a first analysis booked {booked} s"
    notices = " ".join(str(m.get("log", "")) for m in logs)
    if mode == "quota":
        # No visitor token reaches the stand-in: the package reports the Space's limit.
        assert "This Space's ZeroGPU time is used up" in notices, logs
        assert len(api.seen("/allow")) == allowed  # refused: no worker was asked to run
    else:
        import torch

        # The call reached the package's worker process, which asked for its GPU.
        assert len(api.seen("/allow")) > allowed
        assert api.seen("/release")
        if torch.cuda.is_available():  # a GPU machine: the worker ran the call on it
            assert "computed this on the CPU" not in notices, logs
        else:  # no driver here: the worker failed, and xviz said so and answered on the CPU
            assert "The GPU call failed" in notices and "on the CPU" in notices, logs


def test_an_analysis_and_an_attribution_say_where_they_ran(space):
    url, api, _ = space
    api.mode = "quota"
    session = os.urandom(6).hex()
    done, _ = _queue_call(
        url,
        "analyze",
        [_upload(url, EXAMPLES / "astronaut.jpg"), SIZE, "block5_sepconv1", "index", "auto",
         "shared", 0, "block5", 0.5],
        session,
    )  # fmt: skip
    assert done["success"], done
    info = done["output"]["data"][10]
    assert "on the CPU" in str(info), info
    # An attribution has progress and cancel: it goes to ZeroGPU as a stream, refused here.
    before = len(api.seen("/schedule"))
    done, logs = _queue_call(url, "attribute", [None, "saliency", "block5", 0.5, False], session)
    assert done["success"], done
    text = done["output"]["data"][2]
    assert "on the CPU" in str(text) and "Saliency" in str(text), text
    assert len(api.seen("/schedule")) > before
    assert "used up" in " ".join(str(m.get("log", "")) for m in logs)
