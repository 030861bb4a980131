"""Exports are private to the request that made them, expire, and go when the app stops.

Driven through the queue protocol the browser uses (the export event has no API name), with
many sessions whose images all get the same top class: with one file name per class, as
before, their zips overwrote each other while being written and served.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import _free_port, launch
from PIL import Image
from raw_api import call, dependency, join, new_session

from xviz.app.files import FileStore, remove_dead_runs
from xviz.engine.preprocess import load_image, preprocess, to_display
from xviz.render import encode

SIZE = 150
META = {"_type": "gradio.FileData"}
SESSIONS = 8
ROOT = Path(__file__).resolve().parents[2]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(content: bytes) -> dict:
    import base64

    return {"path": None, "url": "data:image/png;base64," + base64.b64encode(content).decode()}


def analyze(url: str, session: str, content: bytes) -> str:
    """Analyse ``content`` in ``session``; the top class."""
    args = [data_url(content) | {"meta": META}, SIZE, "block5_sepconv1", "index", "auto"]
    outcome = call(url, "analyze", [*args, "shared", 0, "block5", 0.5], session_hash=session)
    assert outcome.success, outcome.error
    return next(d["label"] for d in outcome.data if isinstance(d, dict) and "label" in d)


def export(url: str, session: str) -> tuple[Path, bytes]:
    """Build the session's zip as the browser does; (its path on the server, its bytes)."""
    config = httpx.get(f"{url}config").json()
    fn_index, trigger = dependency(config, "export-button")
    outcome = join(url, fn_index, [None], session, trigger)
    assert outcome.success, outcome.error
    served = outcome.data[0]
    response = httpx.get(served["url"])
    response.raise_for_status()
    return Path(served["path"]), response.content


def seen_image(content: bytes) -> np.ndarray:
    """Independently of the app: the pixels the model sees for ``content``."""
    return to_display(load_image(content), SIZE)


def zip_input(zipped: bytes) -> np.ndarray:
    with zipfile.ZipFile(io.BytesIO(zipped)) as z:
        assert z.testzip() is None  # every member's CRC checks out
        return np.asarray(Image.open(io.BytesIO(z.read("input.png"))).convert("RGB"))


def two_images_of_one_class(model) -> list[bytes]:
    """Two different images the model puts in the same top class."""
    rng = np.random.default_rng(21)
    seen: dict[int, bytes] = {}
    for i in range(20):
        content = png(rng.integers(0, 256, (60 + 3 * i, 80, 3), dtype=np.uint8))
        with torch.inference_mode():
            top = int(model(preprocess(content, SIZE)).argmax())
        if top in seen:
            return [seen[top], content]
        seen[top] = content
    raise AssertionError("no two images of one class")


def test_concurrent_exports_of_many_sessions_never_mix(served_app) -> None:
    url, explorer = served_app
    images = two_images_of_one_class(explorer.model)
    sessions = [new_session() for _ in range(SESSIONS)]
    mine = {s: images[i % 2] for i, s in enumerate(sessions)}
    labels = {analyze(url, s, mine[s]) for s in sessions}
    assert len(labels) == 1, "the sessions' zips should compete for one file name"

    results: list[tuple[str, Path, bytes]] = []
    failures: list[BaseException] = []
    start = threading.Barrier(SESSIONS)

    def user(session: str) -> None:
        try:
            start.wait()
            for _ in range(3):
                results.append((session, *export(url, session)))
        except BaseException as err:  # re-raised in the test's thread
            failures.append(err)

    threads = [threading.Thread(target=user, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures
    assert len(results) == 3 * SESSIONS
    assert len({path for _, path, _ in results}) == len(results), "a file was shared"
    for session, _, zipped in results:
        np.testing.assert_array_equal(zip_input(zipped), seen_image(mine[session]))


def files_with_digest(folder: Path, digest: str) -> list[Path]:
    return [
        p
        for p in folder.rglob("*")
        if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == digest
    ]


def test_an_export_and_every_copy_of_it_is_deleted_after_the_retention(served_app) -> None:
    from app import build_demo

    _, explorer = served_app
    demo = build_demo(explorer, retention_s=2)
    url = launch(demo)
    try:
        session = new_session()
        analyze(url, session, png(np.full((50, 50, 3), 90, np.uint8)))
        path, zipped = export(url, session)
        cache = Path(os.environ["GRADIO_TEMP_DIR"])
        digest = hashlib.sha256(zipped).hexdigest()
        assert files_with_digest(cache, digest) == [path]  # served where it is: no copy
        deadline = time.monotonic() + 30
        # Gradio's own clean-up may take the file before xviz's sweep takes its folder.
        while (path.exists() or path.parent.exists()) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not path.exists() and not path.parent.exists()
        assert files_with_digest(cache, digest) == []
        assert httpx.get(f"{url}gradio_api/file={path}").status_code >= 400
    finally:
        demo.close()


def test_start_up_removes_what_dead_runs_left_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "exports"
    live = FileStore(root, max_age_s=None)
    kept = live.new_file("mine.zip")
    kept.write_bytes(b"live run's")
    dead = root / "run-dead1234"
    (dead / "abc").mkdir(parents=True)
    (dead / "abc" / "old.zip").write_bytes(b"old")
    (dead / ".lock").write_text("")  # nobody holds it: its process is gone
    old = time.time() - 3600
    for item in (dead / ".lock", dead):
        os.utime(item, (old, old))
    other = root / "not-a-run"
    other.mkdir()
    beside = tmp_path / "beside.txt"
    beside.write_text("not ours")

    assert remove_dead_runs(root) == [dead]
    assert not dead.exists()
    assert kept.read_bytes() == b"live run's" and other.is_dir() and beside.exists()
    live.close()
    assert not live.run.exists() and other.is_dir()


def test_a_new_file_is_alone_in_its_folder_and_its_name_is_safe(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_age_s=None)
    a, b = store.new_file("x.zip"), store.new_file("x.zip")
    assert a.name == b.name == "x.zip" and a.parent != b.parent
    assert a.parent.parent == store.run and oct(a.parent.stat().st_mode & 0o777) == "0o700"
    odd = store.new_file("../../etc/passwd label with spaces.zip")
    assert odd.parent.parent == store.run and "/" not in odd.name and ".." not in odd.name
    store.close()


def test_served_pictures_are_written_once_and_read_back_as_drawn(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_age_s=None)
    rng = np.random.default_rng(0)
    grid = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    png = store.save_png(grid)
    assert store.save_png(grid) == png  # once
    assert png.parent.parent == store.run
    np.testing.assert_array_equal(np.asarray(Image.open(png)), np.asarray(grid))  # lossless
    store.close()


def test_inlined_pictures_decode_to_what_was_drawn() -> None:
    rng = np.random.default_rng(0)
    # A smooth picture, as a photo under a heatmap is: JPEG keeps it within a few levels.
    ramp = np.linspace(0, 255, 200)
    smooth = np.stack(
        [np.add.outer(ramp, ramp) / 2, np.tile(ramp, (200, 1)), np.full((200, 200), 128.0)], -1
    )
    photo = Image.fromarray(smooth.astype(np.uint8))
    grid = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    for image, kind in ((grid, "png"), (photo, "jpeg")):
        url = encode.data_url(image, kind)
        head, _, payload = url.partition(",")
        assert head == f"data:image/{kind};base64"
        with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as back:
            assert back.format == kind.upper() and back.size == image.size
            pixels = np.asarray(back.convert("RGB"), dtype=np.float64)
        if kind == "png":
            np.testing.assert_array_equal(pixels, np.asarray(grid))  # lossless
        else:
            error = np.abs(pixels - smooth)
            assert error.mean() < 2.0 and error.max() <= 16


def _serve_app(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "XVIZ_OFFLINE": "1",
    }
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stderr.read()
        try:
            if httpx.get(f"{url}config", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.kill()
    raise AssertionError("python app.py did not start")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_stopping_the_app_deletes_its_exports(tmp_path: Path, stop: signal.Signals) -> None:
    from xviz.model.weights import kitchenware_file

    if kitchenware_file() is None:
        pytest.skip("python app.py needs weights: the kitchenware package is not installed")
    server, url = _serve_app(tmp_path)
    try:
        session = new_session()
        analyze(url, session, png(np.full((50, 50, 3), 120, np.uint8)))
        path, _ = export(url, session)
        assert path.is_file()
        runs = tmp_path / "gradio" / "xviz-files"
        assert path.is_relative_to(runs)
        server.send_signal(stop)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert not path.exists()
    assert list(runs.glob("run-*")) == []
