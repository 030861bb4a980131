"""Several sessions at once against the served app: no failures, no cross-talk, a bounded queue.

The full measurement (latency, memory, many clients) is ``bench/load.py``.
"""

import threading
import time

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.utils import QueueError, Status
from PIL import Image

from xviz.app.server import QUEUE_SIZE
from xviz.engine.preprocess import preprocess

CLIENTS = 4
IMAGES = 3  # per client
SIZE = 150


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """CLIENTS x IMAGES distinct noise images, of different shapes."""
    folder = tmp_path_factory.mktemp("load")
    rng = np.random.default_rng(6)
    paths = []
    for i in range(CLIENTS * IMAGES):
        pixels = rng.integers(0, 256, (60 + 7 * i, 140 - 5 * i, 3), dtype=np.uint8)
        paths.append(folder / f"image{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def _expected_top5(model, path):
    """Independently of the server: the model's softmax on the preprocessed image."""
    with torch.inference_mode():
        probs = torch.softmax(model(preprocess(str(path), SIZE)), dim=1)[0]
    top = torch.topk(probs, 5)
    return [
        (f"class {i}", p) for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def _wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _top5(label):
    return [(c["label"], c["confidence"]) for c in label["confidences"]]


def test_concurrent_sessions_each_get_their_own_images_result(served_app, images):
    url, explorer = served_app
    expected = {path: _expected_top5(explorer.model, path) for path in images}
    got: dict[tuple, list] = {}  # (image, endpoint) -> top-5
    failures: list[BaseException] = []
    start = threading.Barrier(CLIENTS)

    def user(paths):
        client = Client(url, verbose=False)
        try:
            start.wait()
            for path in paths:
                out = client.predict(
                    handle_file(str(path)), SIZE, "block5_sepconv2", "index", "auto",
                    "shared", 0, "block5", 0.5, api_name="/analyze",
                )  # fmt: skip
                got[path, "/analyze"] = _top5(out[0])
            # /ablate reads the image from the session state (the last one analysed), not
            # from its inputs; the other clients' images went through the server meanwhile.
            out = client.predict(
                "relu_between", ["block5"], "block5_sepconv2", "left", 0, "auto",
                api_name="/ablate",
            )  # fmt: skip
            got[paths[-1], "/ablate"] = _top5(out[0])
        except BaseException as err:  # re-raised below, in the test's thread
            failures.append(err)
        finally:
            client.close()

    threads = [threading.Thread(target=user, args=(images[i::CLIENTS],)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures
    assert len(got) == len(images) + CLIENTS
    for key, top5 in got.items():
        want = expected[key[0]]
        assert [label for label, _ in top5] == [label for label, _ in want], key
        assert [p for _, p in top5] == pytest.approx([p for _, p in want], rel=1e-4), key


def test_a_full_queue_refuses_with_a_clear_message_and_serves_the_rest(
    served_app, images, monkeypatch
):
    """One request holds the model; QUEUE_SIZE more wait; the next one is refused."""
    url, explorer = served_app
    entered, release = threading.Event(), threading.Event()
    start = explorer.start

    def held_start(*args, **kwargs):
        entered.set()
        release.wait(timeout=60)
        return start(*args, **kwargs)

    monkeypatch.setattr(explorer, "start", held_start)
    client = Client(url, verbose=False)
    image = handle_file(str(images[0]))
    try:
        jobs = [client.submit(image, SIZE, api_name="/predict")]
        assert entered.wait(timeout=30)
        jobs += [client.submit(image, SIZE, api_name="/predict") for _ in range(QUEUE_SIZE)]
        _wait_until(lambda: all(job.status().code == Status.IN_QUEUE for job in jobs[1:]))
        refused = client.submit(image, SIZE, api_name="/predict")
        with pytest.raises(QueueError, match="Queue is full"):
            refused.result(timeout=30)
    finally:
        release.set()
    try:
        results = [job.result(timeout=60) for job in jobs]
    finally:
        client.close()
    expected = _expected_top5(explorer.model, images[0])
    assert all(list(r) == [label for label, _ in expected] for r in results)
