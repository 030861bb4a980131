"""Hostile and odd uploads (tests/hostile.py) through the served app and through preprocess.

Every file is either analysed correctly (the served prediction is the model's own on
``preprocess``; the image the model saw has the colours worked out by hand) or refused with
the ImageError message, never a stack trace; after every refusal the app still serves.
"""

import builtins
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from hostile import CORPUS, OVER_UPLOAD_LIMIT, SIZE, Case, Probe, write_corpus
from PIL import Image, UnidentifiedImageError

from xviz.engine.preprocess import MAX_FILE_BYTES, preprocess
from xviz.errors import ImageError, XvizError

XVIZ_CASES = [case for case in CORPUS if case is not OVER_UPLOAD_LIMIT]
ACCEPTED = [case for case in XVIZ_CASES if case.accepted]
REFUSED = [case for case in XVIZ_CASES if not case.accepted]
# The gradcam overlay at the slider's minimum opacity: 0.9 image + 0.1 heatmap.
CAM_ALPHA = 0.1
CAM_TOLERANCE = 26  # 0.1 * 255, rounded up
EXCEPTION_NAMES = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
} | {
    cls.__name__
    for cls in (ImageError, XvizError, UnidentifiedImageError, Image.DecompressionBombError)
}


def ids(cases: list[Case]) -> list[str]:
    return [case.name for case in cases]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def client(served_app) -> Client:
    url, _ = served_app
    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("ok") / "photo.png"
    Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(path)
    return path


def top5(model: torch.nn.Module, path: Path) -> dict[str, float]:
    """Independently of the app: the model's five most probable classes for the file."""
    with torch.inference_mode():
        probs = torch.softmax(model(preprocess(str(path), SIZE)), dim=1)[0]
    top = torch.topk(probs, 5)
    return {f"class {i}": p for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)}


def assert_same_prediction(served: dict[str, float], expected: dict[str, float]) -> None:
    assert list(served) == list(expected)
    for label, p in expected.items():
        assert served[label] == pytest.approx(p, rel=1e-4), label


def assert_probes(seen: np.ndarray, probes: tuple[Probe, ...], slack: int = 0) -> None:
    """`seen`: (SIZE, SIZE, 3) uint8; each probe's pixel within its tolerance plus `slack`."""
    assert seen.shape == (SIZE, SIZE, 3)
    for probe in probes:
        got = seen[probe.y, probe.x].astype(int)
        assert np.abs(got - probe.rgb).max() <= probe.tolerance + slack, (probe, got.tolist())


def assert_clear(message: str, phrase: str) -> None:
    """A message a person can act on: the expected phrase, no traceback, no class names."""
    assert phrase.lower() in message.lower(), message
    assert "Traceback" not in message and 'File "' not in message, message
    named = set(re.findall(r"\w+", message)) & EXCEPTION_NAMES
    assert not named, f"exception class names {named} in {message!r}"


def assert_still_serving(client: Client, photo: Path, model: torch.nn.Module) -> None:
    served = client.predict(handle_file(str(photo)), SIZE, api_name="/predict")
    assert_same_prediction(served, top5(model, photo))


def analyze(client: Client, path: Path) -> tuple:
    return client.predict(
        handle_file(str(path)),
        SIZE,
        "block5_sepconv2",
        "index",
        "auto",
        "shared",
        0,
        "block5",
        CAM_ALPHA,
        api_name="/analyze",
    )


# ---------------------------------------------------------------- in process


@pytest.mark.parametrize("case", CORPUS, ids=ids(CORPUS))
def test_preprocess(case: Case, corpus: dict[str, Path]) -> None:
    path = corpus[case.name]
    if not case.accepted:
        with pytest.raises(ImageError) as info:
            preprocess(path, SIZE)
        assert_clear(str(info.value), case.refusal)
        return
    x = preprocess(path, SIZE)  # (1, 3, S, S) in [-1, 1]
    seen = np.rint((x[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    assert_probes(seen, case.probes)


def test_a_file_just_over_the_byte_limit_does_not_read_as_within_it(tmp_path: Path) -> None:
    path = tmp_path / "edge.png"
    path.write_bytes(bytes(MAX_FILE_BYTES + 1))
    with pytest.raises(ImageError, match=r"This file is 20\.1 MB; xviz accepts files up to 20 MB"):
        preprocess(path, SIZE)


# ---------------------------------------------------------------- through the served app


@pytest.mark.parametrize("case", ACCEPTED, ids=ids(ACCEPTED))
def test_upload_is_analysed_as_in_process(case, corpus, client, served_app) -> None:
    _, explorer = served_app
    path = corpus[case.name]
    served = client.predict(handle_file(str(path)), SIZE, api_name="/predict")
    assert_same_prediction(served, top5(explorer.model, path))

    label, *_, cams, _, _ = analyze(client, path)
    assert label["label"] == next(iter(served))
    assert len(cams) == 14
    for cam in cams:
        with Image.open(cam["image"]) as img:
            assert img.format == "PNG" and img.size == (SIZE, SIZE)
            # The overlay lets the image the model saw show through: upright, on white.
            assert_probes(np.asarray(img.convert("RGB")), case.probes, CAM_TOLERANCE)


@pytest.mark.parametrize("api", ["/predict", "/analyze"])
@pytest.mark.parametrize("case", REFUSED, ids=ids(REFUSED))
def test_upload_is_refused_clearly_and_the_app_keeps_serving(
    case, api, corpus, client, served_app, photo
) -> None:
    path = corpus[case.name]
    with pytest.raises(Exception) as info:  # gradio_client's AppError carries the message
        if api == "/predict":
            client.predict(handle_file(str(path)), SIZE, api_name=api)
        else:
            analyze(client, path)
    assert_clear(str(info.value), case.refusal)
    assert_still_serving(client, photo, served_app[1].model)


def test_upload_over_the_size_limit_is_refused_by_the_server(
    corpus, client, served_app, photo
) -> None:
    url, explorer = served_app
    path = corpus[OVER_UPLOAD_LIMIT.name]
    assert path.stat().st_size > MAX_FILE_BYTES
    assert client.config["max_file_size"] == MAX_FILE_BYTES  # the same limit as xviz's
    # gradio_client checks the limit before sending ...
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(path)), SIZE, api_name="/predict")
    # ... and a client that does not is stopped by the server, mid-upload.
    with path.open("rb") as f:
        response = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, f)})
    assert response.status_code == 413
    assert_clear(response.text, "File size exceeded maximum allowed size")
    assert_still_serving(client, photo, explorer.model)


def test_an_unexpected_failure_returns_no_stack_trace(
    client, served_app, photo, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, explorer = served_app

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("internal detail /srv/secret.py")

    monkeypatch.setattr(explorer, "start", broken)
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(photo)), SIZE, api_name="/predict")
    message = str(info.value)
    assert "Traceback" not in message and 'File "' not in message, message
    assert "RuntimeError" not in message, message
    monkeypatch.undo()
    assert_still_serving(client, photo, explorer.model)
