"""What a request can make the server do, tried through the real server with hand-made payloads.

- Only images uploaded to the app and its shipped examples are opened: a file reference to any
  other server path (an image, a text file, a missing file, ``..``, a link out of the upload
  cache) is refused with one message that says nothing about the file.
- No URL a client names is fetched; ``data:`` URLs are decoded by xviz, losslessly, within the
  upload limits.
- Malformed values get a message, never an empty error; nothing long a client sent reaches
  the log.
- Exports are private to the request, expire, and go when the app stops (test_exports.py).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import gradio.processing_utils
import httpx
import numpy as np
import pytest
import torch
from camera_clip import jpeg, page_key
from gradio_client import Client, handle_file
from PIL import Image
from raw_api import Outcome, call, default_data, dependency, join, new_session, stream

from xviz.app.server import NO_URLS, NOT_AN_UPLOAD
from xviz.engine.preprocess import preprocess

SIZE = 150
META = {"_type": "gradio.FileData"}


def analyze_args(image: object) -> list:
    return [image, SIZE, "block5_sepconv2", "index", "auto", "shared", 0, "block5", 0.5]


def send(url: str, api: str, image: object) -> Outcome:
    return call(url, api, [image, SIZE] if api == "predict" else analyze_args(image))


def top5(model: torch.nn.Module, image: object) -> dict[str, float]:
    """Independently of the server: the model's top-5 on ``image`` (path or file bytes)."""
    with torch.inference_mode():
        probs = torch.softmax(model(preprocess(image, SIZE)), dim=1)[0]
    top = torch.topk(probs, 5)
    return {f"class {i}": p for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)}


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ok") / "photo.png"
    pixels = np.random.default_rng(4).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    path.write_bytes(png_bytes(pixels))
    return path


@pytest.fixture(scope="module")
def server_files(tmp_path_factory) -> dict[str, Path]:
    """Files on the server that nobody uploaded, and links to them from inside the cache."""
    folder = tmp_path_factory.mktemp("server-files")
    image = folder / "secret.png"
    image.write_bytes(png_bytes(np.full((40, 40, 3), 200, np.uint8)))
    text = folder / "notes.txt"
    text.write_text("password=hunter2\n")
    links = Path(os.environ["GRADIO_TEMP_DIR"]) / "planted"
    links.mkdir(exist_ok=True)
    (links / "to_image.png").symlink_to(image)
    (links / "to_text.png").symlink_to(text)
    (links / "to_folder").symlink_to(folder)
    return {
        "image": image,
        "text": text,
        "missing": folder / "missing.png",
        "folder": folder,
        "relative": Path(os.path.relpath(image)),  # ../../tmp/... from the server's cwd
        "cache_dotdot": Path(os.environ["GRADIO_TEMP_DIR"], "..", *image.parts[1:]),
        "link_to_image": links / "to_image.png",
        "link_to_text": links / "to_text.png",
        "link_to_folder_image": links / "to_folder" / "secret.png",
    }


def assert_serving(url: str, photo: Path, model: torch.nn.Module) -> None:
    client = Client(url, verbose=False)
    try:
        served = client.predict(handle_file(str(photo)), SIZE, api_name="/predict")
    finally:
        client.close()
    expected = top5(model, photo)
    assert list(served) == list(expected)
    assert list(served.values()) == pytest.approx(list(expected.values()), rel=1e-4)


def assert_says_nothing_of_the_server(message: str | None) -> None:
    assert message, "an empty error message"
    for secret in ("/tmp", "/work", "/root", "Errno", "Traceback", "hunter2"):
        assert secret not in message, message


# ------------------------------------------------------------ files nobody uploaded


@pytest.mark.parametrize("api", ["predict", "analyze"])
@pytest.mark.parametrize("with_meta", [True, False], ids=["gradio-filedata", "bare-path"])
def test_a_server_path_is_refused_with_one_message(
    served_app, server_files, photo, api, with_meta
) -> None:
    url, explorer = served_app
    for name, path in server_files.items():
        payload = {"path": str(path), **({"meta": META} if with_meta else {})}
        outcome = send(url, api, payload)
        assert not outcome.success, name
        assert outcome.error == NOT_AN_UPLOAD, (name, outcome.error)
    assert_serving(url, photo, explorer.model)


def test_the_same_image_uploaded_is_analysed(served_app, server_files) -> None:
    """The refusals above are about where the file came from, not what it holds."""
    url, explorer = served_app
    client = Client(url, verbose=False)
    try:
        served = client.predict(handle_file(str(server_files["image"])), SIZE, api_name="/predict")
    finally:
        client.close()
    assert list(served) == list(top5(explorer.model, server_files["image"]))


def test_a_shipped_example_may_be_named_by_its_path(served_app) -> None:
    url, explorer = served_app
    example = Path(__file__).resolve().parents[2] / "xviz" / "data" / "examples" / "cat.jpg"
    outcome = send(url, "predict", {"path": str(example)})
    assert outcome.success, outcome.error
    assert list(outcome.data[0]) == list(top5(explorer.model, example))


# ------------------------------------------------------------ URLs


def test_no_url_a_client_names_is_fetched(served_app, photo, monkeypatch) -> None:
    url, explorer = served_app
    fetched: list[str] = []

    async def recorded(target: str, cache_dir: str) -> str:
        fetched.append(target)
        raise AssertionError("the server tried to download a client's URL")

    monkeypatch.setattr(gradio.processing_utils, "async_ssrf_protected_download", recorded)
    image_url = "https://example.com/cat.png"
    for payload in (
        {"path": image_url, "meta": META},
        {"path": image_url},
        {"path": None, "url": image_url, "meta": META},
    ):
        outcome = send(url, "predict", payload)
        assert (outcome.success, outcome.error) == (False, NO_URLS), payload
    # Gradio takes only lower-case schemes for URLs: this one is a (relative) path to it.
    outcome = send(url, "predict", {"path": "HTTPS://example.com/cat.png", "meta": META})
    assert (outcome.success, outcome.error) == (False, NOT_AN_UPLOAD)
    assert fetched == []
    monkeypatch.undo()
    assert_serving(url, photo, explorer.model)


# ------------------------------------------------------------ data: URLs


def data_url(content: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(content).decode()}"


def test_a_data_url_is_decoded_by_xviz_losslessly(served_app) -> None:
    url, explorer = served_app
    pixels = np.random.default_rng(5).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    content = png_bytes(pixels)
    outcome = send(url, "predict", {"path": None, "url": data_url(content), "meta": META})
    assert outcome.success, outcome.error
    served = outcome.data[0]
    exact = top5(explorer.model, content)
    assert list(served) == list(exact)
    assert list(served.values()) == pytest.approx(list(exact.values()), rel=1e-5)
    # What a lossy re-encoding (Gradio's own handling: WebP) would have given instead.
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "WEBP")
    lossy = top5(explorer.model, buffer.getvalue())
    assert list(lossy.values()) != pytest.approx(list(exact.values()), rel=1e-5)


def _tga() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buffer, "TGA")
    return buffer.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    from hostile import _png_declaring as declaring

    return declaring(width, height)


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda: data_url(_tga(), "image/x-tga"), "not an image xviz can read"),
        (
            lambda: data_url(b"\x00\x00\x00\x1cftypavif" + bytes(200), "image/avif"),
            "AVIF image",
        ),
        (lambda: data_url(_png_declaring(8944, 8944)), "megapixels"),
        (lambda: "data:image/png;base64,***not base64***", "valid base64"),
        # 20.5 MB decoded: within the request limit, refused by xviz before decoding.
        (lambda: "data:image/bmp;base64," + "Qk0A" * (41 * 2**20 // 6), "files up to 20 MB"),
        # 60 MB of base64: refused at the door, before Gradio parses the request.
        (lambda: "data:image/bmp;base64," + "Qk0A" * (15 * 2**20), "requests up to 28 MB"),
        (lambda: "data:image/png;base64,", "the file is empty"),
    ],
    ids=["tga", "avif", "80-megapixels", "garbage", "20.5mb", "60mb-request", "empty"],
)
def test_a_data_url_passes_the_same_gate_as_an_upload(served_app, photo, make, phrase) -> None:
    url, explorer = served_app
    outcome = send(url, "analyze", {"path": None, "url": make(), "meta": META})
    assert not outcome.success
    assert phrase.lower() in (outcome.error or "").lower(), outcome.error
    assert_says_nothing_of_the_server(outcome.error)
    assert_serving(url, photo, explorer.model)


def test_a_data_url_in_place_of_a_path_is_refused_and_not_logged(served_app, capfd) -> None:
    url, _ = served_app
    payload = data_url(np.random.default_rng(0).bytes(30_000))
    outcome = send(url, "predict", {"path": payload, "meta": META})
    assert (outcome.success, outcome.error) == (False, NOT_AN_UPLOAD)
    outcome = send(url, "predict", {"path": payload})
    assert (outcome.success, outcome.error) == (False, NOT_AN_UPLOAD)
    logged = "".join(capfd.readouterr())
    assert payload[40:240] not in logged  # at most a short form of it


# ------------------------------------------------------------ malformed values


@pytest.fixture(scope="module")
def session(served_app, photo) -> str:
    """A session that has analysed a photo, for the events that read the session's state."""
    url, _ = served_app
    session = new_session()
    image = {"path": None, "url": data_url(photo.read_bytes()), "meta": META}
    outcome = call(url, "analyze", analyze_args(image), session_hash=session)
    assert outcome.success, outcome.error
    return session


NAN = float("nan")
VIEW = [None, "block5_sepconv2", "index", 1, "auto", "shared", 0, "block5"]


@pytest.mark.parametrize(
    ("api", "data"),
    [
        ("predict", [{"path": 123, "meta": META}, SIZE]),
        ("predict", [{"nothing": "here"}, SIZE]),
        ("predict", [[1, 2, 3], SIZE]),
        ("predict", ["just a string", SIZE]),
        ("predict", [None, "abc"]),
        ("predict", [None, NAN]),
        ("view", [None, {"not": "a layer"}, *VIEW[2:]]),
        ("view", [None, "block99_sepconv9", *VIEW[2:]]),
        ("view", [*VIEW[:3], NAN, *VIEW[4:]]),
        ("view", [*VIEW[:3], "ten", *VIEW[4:]]),
        ("view", [*VIEW[:6], NAN, "block5"]),
        ("view", [*VIEW[:4], ["viridis"], *VIEW[5:]]),
        ("attribute", [None, "no_such_method", "block5", 0.5, False]),
        ("attribute", [None, "saliency", "block5", NAN, False]),
        ("ablate", [None, "relu_between", ["block99"], "block5_sepconv2", "left", 0, "auto"]),
        ("ablate", [None, "zero_channel", [], "block5_sepconv2", "left", -1, "auto"]),
        ("ablate", [None, "zero_channel", [], "block5_sepconv2", "left", NAN, "auto"]),
    ],
)
def test_a_malformed_value_gets_a_message(served_app, photo, session, api, data) -> None:
    url, explorer = served_app
    outcome = call(url, api, data, session_hash=session)
    assert not outcome.success, outcome.data
    assert_says_nothing_of_the_server(outcome.error)
    assert_serving(url, photo, explorer.model)


def test_a_page_past_the_last_shows_the_last(served_app, session) -> None:
    url, _ = served_app
    outcome = call(url, "view", [*VIEW[:3], 10**30, *VIEW[4:]], session_hash=session)
    assert outcome.success, outcome.error
    *_, title, page = outcome.data
    assert page == 12 and "Page 12/12" in title  # 728 channels, 64 a page


# ------------------------------------------------------------ the page scripts' events


@pytest.mark.parametrize(
    ("elem_id", "event_data"),
    [
        ("depthwise-grid", {"channel": "9; rm -rf /"}),
        ("depthwise-grid", {"channel": -5}),
        ("depthwise-grid", {"channel": 10**12}),
        ("depthwise-grid", {"channel": None}),
        ("depthwise-grid", {"not": "a channel"}),
        ("netmap", {"block": "../../etc/passwd"}),
        ("netmap", {"block": ["block5"]}),
        ("gradcam-strip", {"block": "block15"}),
        ("gradcam-strip", {"block": {"__class__": "block1"}}),
        ("gradcam-strip", {}),
        ("channel-view", {"y": "a", "x": 2}),
        ("channel-view", {"y": 10**9, "x": -1}),
        ("plot-clicks", {"chart": "trace-chart", "channel": "x"}),
        ("plot-clicks", {"chart": "steps-weights", "channel": 10**6}),
    ],
)
def test_what_a_page_script_reports_is_checked(served_app, photo, elem_id, event_data) -> None:
    """A click's data (channel, block, position) comes from the page, so a client can send
    anything: it is refused with a message, never a path or a crash; the server serves on."""
    url, explorer = served_app
    session = new_session()
    image = {"path": None, "url": data_url(photo.read_bytes()), "meta": META}
    assert call(url, "analyze", analyze_args(image), session_hash=session).success
    config = httpx.get(f"{url}config").json()
    tile_index, tile_trigger = dependency(config, "depthwise-grid")
    data = default_data(config, tile_index)
    opened = join(url, tile_index, data, session, tile_trigger, {"channel": 3})
    assert opened.success, opened.error  # a channel shown: the position and bar clicks apply
    fn_index, trigger = dependency(config, elem_id)
    outcome = join(url, fn_index, default_data(config, fn_index), session, trigger, event_data)
    if not outcome.success:
        assert_says_nothing_of_the_server(outcome.error)
    assert_serving(url, photo, explorer.model)


def test_freeze_looks_the_named_frame_up_in_its_own_session_only(served_app) -> None:
    url, _ = served_app
    config = httpx.get(f"{url}config").json()
    components = {c["id"]: c for c in config["components"]}
    live_tab = next(i for i, c in components.items() if c["props"].get("id") == "live")
    opened = next(d["id"] for d in config["dependencies"] if [live_tab, "select"] in d["targets"])
    frames, camera = dependency(config, "live-camera")
    freeze, button = dependency(config, "live-freeze")

    def streamed(session: str, sent: list[bytes]) -> None:
        """The session opens the Live tab and its camera sends ``sent``, as the page does."""
        assert join(url, opened, default_data(config, opened), session, live_tab).success
        inputs = [
            [{"url": "data:image/jpeg;base64," + base64.b64encode(frame).decode(),
              "path": None, "meta": META}, SIZE, "block2_sepconv1", 1, "pointwise", 0, None, None]
            for frame in sent
        ]  # fmt: skip
        outcomes = stream(url, frames, inputs, session, camera)
        assert [o.success for o in outcomes] == [True] * len(sent), outcomes
        for frame, outcome in zip(sent, outcomes, strict=True):
            assert f'data-frame="{page_key(frame)}"' in outcome.data[0]

    def frozen(session: str, key: object) -> bytes:
        outcome = join(url, freeze, [key, None], session, button)
        assert outcome.success, outcome.error
        return httpx.get(outcome.data[0]["url"]).content

    mine, theirs = new_session(), new_session()
    streamed(mine, [jpeg(1), jpeg(2), jpeg(3)])
    streamed(theirs, [jpeg(4)])
    # The control: the frame the page names is the one frozen, not only the last.
    assert frozen(mine, page_key(jpeg(2))) == jpeg(2)
    assert frozen(mine, page_key(jpeg(3))) == jpeg(3)
    # Another session's frame, or anything else named, gives this session's last frame.
    hostile = [page_key(jpeg(4)), "../../etc/passwd", "/etc/passwd", "A" * 100_000, ""]
    for key in hostile:
        assert frozen(mine, key) == jpeg(3), key[:30]
    assert frozen(theirs, page_key(jpeg(2))) == jpeg(4)
    # Not text at all: refused with a message; a session without frames gets one sentence.
    for key in [["x"], {"path": "/etc/passwd"}, 5]:
        outcome = join(url, freeze, [key, None], mine, button)
        assert outcome.success or outcome.error, key
        if outcome.success:
            assert httpx.get(outcome.data[0]["url"]).content == jpeg(3)
    outcome = join(url, freeze, [page_key(jpeg(2)), None], new_session(), button)
    assert not outcome.success and "Start the camera" in outcome.error
