"""The package as a user installs it: a wheel built from the repository, in a fresh venv with
the source tree nowhere on ``sys.path``, run from another folder.

The venv gets the wheel alone (``--no-deps``); its dependencies (torch, gradio, ...) come from
this test run's environment through a ``.pth`` file, so nothing is downloaded. Whatever xviz
reads at run time must then come from the installed package: labels, examples, the shipped
atlas, colour tables, stylesheets.
"""

from __future__ import annotations

import json
import os
import site
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, scripts folder, a folder outside the repository) of a venv holding the wheel."""
    base = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", base / "dist", ROOT],
        capture_output=True, text=True, cwd=base,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (base / "dist").glob("xviz-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    target = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    ours = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if p]
    (target / "xviz-test-deps.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", target, wheel],
        check=True, capture_output=True,
    )  # fmt: skip
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    return python, target / "bin", elsewhere


def run(installed, *args: str, **kwargs) -> subprocess.CompletedProcess:
    python, _, elsewhere = installed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"XVIZ_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.run(
        [str(python), *args], cwd=elsewhere, env=env, capture_output=True, text=True,
        timeout=600, **kwargs,
    )  # fmt: skip


def test_the_wheel_holds_the_package_and_its_data(installed):
    out = run(installed, "-c", """
import json, sys, xviz
from xviz.data.gallery import shipped_examples
from xviz.model.labels import imagenet_labels
from xviz.methods.atlas import default_atlas
print(json.dumps({
    "file": xviz.__file__, "path": sys.path,
    "examples": [p.name for p in shipped_examples()],
    "labels": len(imagenet_labels()),
    "atlas": default_atlas() is not None,
}))
""")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.splitlines()[-1])
    assert str(ROOT) not in found["file"] and "site-packages" in found["file"]
    assert not any(Path(p).resolve() == ROOT for p in found["path"] if p)
    assert found["examples"] == ["astronaut.jpg", "cat.jpg", "coffee.jpg", "rocket.jpg"]
    assert found["labels"] == 1000 and found["atlas"]


def test_predict_and_atlas_run_from_another_folder(installed, tmp_path):
    _, scripts, _ = installed
    coffee = run(
        installed, "-c", "from xviz.data.gallery import SHIPPED; print(SHIPPED / 'coffee.jpg')"
    )
    photo = coffee.stdout.strip()
    assert str(ROOT) not in photo
    predicted = run(installed, "-m", "xviz", "predict", photo, "--json", "--top", "3")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    top = json.loads(predicted.stdout)
    # The same command from the checkout gives the same answer: the package is the same code.
    here = subprocess.run(
        [sys.executable, "-m", "xviz", "predict", photo, "--json", "--top", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "XVIZ_OFFLINE": "1"},
    )  # fmt: skip
    assert here.returncode == 0, here.stderr[-3000:]
    assert top == json.loads(here.stdout)
    # The console script the wheel declares (pip wrote it for the venv's own interpreter).
    script = run(installed, str(scripts / "xviz"), "predict", photo, "--top", "1")
    assert script.returncode == 0, script.stderr[-3000:]
    images = tmp_path / "images"
    images.mkdir()
    for name in ("cat.jpg", "rocket.jpg"):
        (images / name).write_bytes((Path(photo).parent / name).read_bytes())
    atlas = run(
        installed, "-m", "xviz", "atlas", str(images), "--out", str(tmp_path / "atlas"),
        "--size", "71", "--top", "2", "--maps", "block1_conv1",
    )  # fmt: skip
    assert atlas.returncode == 0, atlas.stderr[-3000:]
    assert (tmp_path / "atlas" / "atlas.parquet").is_file()


def test_the_installed_package_serves_the_app(installed):
    python, _, elsewhere = installed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"XVIZ_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}  # fmt: skip
    log = elsewhere / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(python), "-m", "xviz", "serve"], cwd=elsewhere, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        from gradio_client import Client, handle_file

        client = Client(url, verbose=False)
        cat = run(
            installed, "-c", "from xviz.data.gallery import SHIPPED; print(SHIPPED / 'cat.jpg')"
        )
        photo = cat.stdout.strip()
        served = client.predict(handle_file(photo), 150, api_name="/predict")
        direct = run(installed, "-m", "xviz", "predict", photo, "--json", "--size", "150")
        (expected,) = json.loads(direct.stdout)["results"]
        assert list(served) == [p["label"] for p in expected["top"]]
        # Two float32 computations of the same forward pass (the server's, with the graph kept
        # for the backward pass and channels-last; the CLI's, without): they agree to ~1e-6.
        probabilities = [p["probability"] for p in expected["top"]]
        assert list(served.values()) == pytest.approx(probabilities, rel=1e-5, abs=1e-7)
        # The stylesheets came from the package too.
        assert ".xviz-small" in (httpx.get(f"{url}config", timeout=30).json().get("css") or "")
    finally:
        server.terminate()
        server.wait(30)
