"""The served app through gradio_client: /predict and /analyze, and bad uploads; start-up
with each kind of weights, broken ones included, locally and as a Space runs it."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from tests.model.test_weights import pin, statistics_model, write_keras1_h5
from xviz.app import views
from xviz.engine.preprocess import preprocess
from xviz.model import weights
from xviz.model.labels import imagenet_labels

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(served_app):
    url, _ = served_app
    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(path)
    return path


def _expected_top5(model, path, size):
    """Independently: the model's softmax on the preprocessed image."""
    with torch.inference_mode():
        probs = torch.softmax(model(preprocess(str(path), size)), dim=1)[0]
    top = torch.topk(probs, 5)
    return [
        (f"class {i}", p) for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def test_the_http_api_is_the_five_documented_endpoints(client):
    """The page's own events (views, clicks, links) are not API endpoints; README lists these."""
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert named == {"/predict", "/analyze", "/view", "/attribute", "/ablate"}
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name, endpoint in api.items():  # every output has a name that says what it is
        labels = [r["label"] for r in endpoint["returns"]]
        assert all(label and not label.startswith("value_") for label in labels), (name, labels)


def test_no_event_has_the_page_copy_a_layout_block_at_each_status_message(served_app):
    """Gradio's page re-reads each progress target and input of every event it has run, a
    layout block with all it holds, at each status message of any event (see
    ``xviz.app.ui.shared.quiet_progress``): no event names a layout block there, and those that
    show no progress have only the hidden placeholder (or nothing)."""
    url, _ = served_app
    with urllib.request.urlopen(f"{url.rstrip('/')}/config", timeout=30) as response:
        config = json.load(response)
    kinds = {c["id"]: c["type"] for c in config["components"]}
    layouts = {"tabs", "tabitem", "row", "column", "group", "accordion", "form"}
    assert layouts & set(kinds.values()) >= {"tabs", "tabitem", "row", "column"}  # the page has
    quiet = [
        c["id"]
        for c in config["components"]
        if c.get("props", {}).get("label") == "no progress shown"
    ]
    assert len(quiet) == 1
    events = [d for d in config["dependencies"] if d["backend_fn"]]
    assert len(events) > 40
    for event in events:
        targets = event["show_progress_on"] or event["outputs"]
        named = [kinds[i] for i in targets + event["inputs"] if kinds[i] in layouts]
        assert not named, (event["id"], named)
        if event["show_progress"] == "hidden":
            assert targets in ([], quiet), event["id"]


def test_predict_endpoint_returns_the_models_top5(client, served_app, photo):
    _, explorer = served_app
    result = client.predict(handle_file(str(photo)), 150, api_name="/predict")
    expected = _expected_top5(explorer.model, photo, 150)
    assert list(result) == [label for label, _ in expected]
    for (label, p), got in zip(expected, result.values(), strict=True):
        assert got == pytest.approx(p, rel=1e-4), label


def test_analyze_endpoint_returns_grids_gradcams_and_prediction(client, served_app, photo):
    _, explorer = served_app
    out = client.predict(
        handle_file(str(photo)),
        150,
        "block5_sepconv2",
        "index",
        "auto",
        "shared",
        0,
        "block5",
        0.5,
        api_name="/analyze",
    )
    label, _, depthwise, pointwise, left_title, right_title, page, svg, cams, info, _ = out
    expected = _expected_top5(explorer.model, photo, 150)
    assert label["label"] == expected[0][0]
    side = 8 * 66 + 2  # 64 tiles of 64 px, 2 px apart
    for path in (depthwise, pointwise):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (side, side)
    assert "Depthwise" in left_title and "Pointwise" in right_title
    assert len(cams) == 14 and cams[0]["caption"].startswith("block1")
    assert page["value"] == 1 and page["maximum"] == 12  # 728 channels, 64 a page
    assert 'data-block="block5"' in svg and "150x150" in info


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"", "empty.png", "empty"),
        (b"hello, this is text", "text.png", "not an image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "drawing.svg", "SVG"),
    ],
)
def test_bad_upload_gives_a_clear_message_and_the_app_keeps_serving(
    client, tmp_path, photo, content, name, message
):
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(Exception, match=f"(?i){message}") as info:
        client.predict(handle_file(str(bad)), 150, api_name="/predict")
    assert "Traceback" not in str(info.value)
    assert client.predict(handle_file(str(photo)), 150, api_name="/predict")


# ---------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------


def test_startup_with_corrupt_weights_names_the_file_and_stops(tmp_path):
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": ')
    env = {**os.environ, "XVIZ_WEIGHTS": str(bad), "XVIZ_OFFLINE": "1"}
    env.pop("SPACE_ID", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "xviz cannot start" in done.stderr and str(bad) in done.stderr
    assert "Traceback" not in done.stderr


def test_startup_with_the_official_keras1_file_in_the_cache(tmp_path, monkeypatch, photo):
    """The official file's layout, cached under its name, runs the app with ImageNet labels."""
    from app import build_demo
    from xviz.app.server import make_explorer

    source = statistics_model()
    cache = tmp_path / "cache"
    cache.mkdir()
    path = write_keras1_h5(cache / weights._KNOWN["keras-imagenet"].filename, source)
    pin(monkeypatch, "keras-imagenet", path)
    monkeypatch.setenv("XVIZ_CACHE", str(cache))
    monkeypatch.setenv("XVIZ_OFFLINE", "1")
    monkeypatch.delenv("XVIZ_WEIGHTS", raising=False)
    explorer = make_explorer(device="cpu")
    components = build_demo(explorer).config["components"]
    header = next(
        c["props"]["value"]
        for c in components
        if c["type"] == "markdown" and "Weights:" in (c["props"]["value"] or "")
    )
    assert "Weights: **keras-imagenet**" in header and "1000 classes (imagenet)" in header
    assert "Why these weights: found in the cache." in header
    result = views.prediction(explorer.analysis(explorer.start(str(photo), 150)))
    with torch.inference_mode():
        probs = torch.softmax(source(preprocess(str(photo), 150)), dim=1)[0]
    top = torch.topk(probs, 5)
    labels = imagenet_labels()
    assert list(result) == [labels[i] for i in top.indices.tolist()]
    assert list(result.values()) == pytest.approx(top.values.tolist(), rel=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_app(tmp_path: Path, **env: str) -> tuple[str, str]:
    """Run ``python app.py`` as a server would (offline, an empty cache in ``tmp_path``,
    ``env`` on top); returns the page at / once it answers 200, and the log so far."""
    port = _free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if k not in ("XVIZ_WEIGHTS", "SPACE_ID")},
        "XVIZ_CACHE": str(tmp_path / "cache"),
        "XVIZ_OFFLINE": "1",
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        **env,
    }
    log_path = tmp_path / "app.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")], env=full_env, cwd=ROOT, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"app.py exited:\n{log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    return answer.read().decode(), log_path.read_text()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise AssertionError(f"no page within 240 s:\n{log_path.read_text()}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.skipif(weights.kitchenware_file() is None, reason="kitchenware not installed")
def test_startup_with_a_corrupt_cached_download_runs_the_next_weights_and_says_so(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    corrupt = cache / weights._KNOWN["keras-imagenet"].filename
    corrupt.write_bytes(b"<html>an error page saved as weights</html>")
    page, log = _serve_app(tmp_path)
    assert "Weights: **kitchenware**" in page
    assert "the cached keras-imagenet file was corrupt (moved aside)" in page
    (line,) = [line for line in log.splitlines() if "failed to load" in line]
    assert "keras-imagenet" in line and str(corrupt) in line and "md5" in line
    assert not corrupt.exists()
    assert [p.name.startswith(f"{corrupt.name}.corrupt-") for p in cache.iterdir()] == [True]


@pytest.mark.slow
def test_space_without_weights_serves_a_page_that_says_why(tmp_path):
    """As a Space runs it (SPACE_ID set), offline, without the kitchenware package: a page
    that explains, instead of an exit that Spaces would restart forever."""
    # A package of that name without the weights file, ahead of any installed one.
    shadow = tmp_path / "shadow" / weights.KITCHENWARE_PACKAGE
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    page, log = _serve_app(tmp_path, SPACE_ID="someone/xviz", PYTHONPATH=str(shadow.parent))
    assert "no pretrained weights could be loaded" in page
    assert "XVIZ_WEIGHTS" in page and "XVIZ_OFFLINE" in page
    assert str(tmp_path) not in page  # paths stay in the log
    assert "xviz cannot start: No pretrained weights found" in log
