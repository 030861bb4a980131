"""What the image gate costs the server: peak memory and time per request, for big and hostile
images, through the real server (``python app.py``), and the server's resident memory.

    python bench/gate.py [--weights kitchenware]

For each case the server's peak resident memory is reset (``/proc/PID/clear_refs``), the
image is sent (as an upload through gradio_client, or as a ``data:`` URL in a hand-made
payload), and the growth of the peak over the memory before is printed with the outcome.
Goal: no request grows the peak by more than about 500 MB. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from raw_api import call  # tests/raw_api.py: the hand-made payloads

ROOT = Path(__file__).resolve().parent.parent
META = {"_type": "gradio.FileData"}


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def encoded(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def smooth(width: int, height: int, channels: int = 3) -> Image.Image:
    """A smooth colour field: compresses well, so that 40 megapixels fit in 20 MB."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack(
        [127 + 120 * np.sin(x / 500), 127 + 120 * np.cos(y / 700), 127 + 60 * np.sin((x + y) / 900)]
        + ([np.full_like(x, 200)] if channels == 4 else []),
        axis=-1,
    )
    return Image.fromarray(rgb.astype(np.uint8))


def cases(tmp: Path) -> list[tuple[str, str, bytes]]:
    """(name, how it is sent: "upload" or "data", file bytes)."""
    photo = encoded(smooth(7000, 5600), "JPEG", quality=85)  # 39.2 MP
    out = [
        ("39 MP JPEG (accepted)", "upload", photo),
        ("39 MP RGBA PNG (accepted)", "upload", encoded(smooth(7000, 5600, 4), "PNG")),
        ("the same JPEG cut, EOI kept", "upload", photo[: len(photo) // 2] + b"\xff\xd9"),
        ("80 MP PNG, 250 kB", "upload", _png_80mp()),
        ("80 MP PNG as data: URL", "data", _png_80mp()),
        ("72 MB BMP as data: URL", "data", bytes(72 * 10**6)),
        ("631-byte JPEG 'of' 6300x6300", "upload", _tiny_big_jpeg()),
        ("coffee.jpg as data: URL", "data", (ROOT / "xviz/data/examples/coffee.jpg").read_bytes()),
    ]
    return out


def _png_80mp() -> bytes:
    return encoded(Image.new("L", (8944, 8944), 9), "PNG", optimize=True)


def _tiny_big_jpeg() -> bytes:
    data = bytearray(encoded(Image.new("RGB", (8, 8), (10, 10, 10)), "JPEG"))
    at = data.find(b"\xff\xc0") + 5
    data[at : at + 4] = (6300).to_bytes(2, "big") * 2
    return bytes(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="kitchenware")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xviz-gate-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        env = {
            **os.environ,
            "GRADIO_SERVER_PORT": str(port),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_TEMP_DIR": str(tmp / "gradio"),
            "XVIZ_WEIGHTS": args.weights,
            "XVIZ_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        started = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/"
        try:
            while True:
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            up = time.perf_counter() - started
            pid = server.pid
            print(f"xviz gate bench: weights {args.weights}; serving after {up:.1f} s")
            print(f"resident memory, idle after start: {status_kb(pid, 'VmRSS') / 1024:.0f} MB")
            client = Client(url, verbose=False)
            native = client.predict(
                handle_file(str(ROOT / "xviz/data/examples/cat.jpg")), 299, api_name="/predict"
            )
            del native
            print(f"after one analysis at 299: {status_kb(pid, 'VmRSS') / 1024:.0f} MB\n")
            print(f"{'case':<32} {'file MB':>8} {'peak +MB':>9} {'s':>6}  outcome")
            for name, how, content in cases(tmp):
                path = tmp / "image.bin"
                path.write_bytes(content)
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak := now
                before = status_kb(pid, "VmRSS")
                t0 = time.perf_counter()
                if how == "upload":
                    try:
                        client.predict(handle_file(str(path)), 299, api_name="/predict")
                        outcome = "analysed"
                    except Exception as err:  # the refusal's message, as a user gets it
                        outcome = f"refused: {str(err)[:70]}"
                else:
                    data = "data:image/png;base64," + base64.b64encode(content).decode()
                    got = call(url, "predict", [{"path": None, "url": data, "meta": META}, 299])
                    outcome = "analysed" if got.success else f"refused: {(got.error or '')[:70]}"
                seconds = time.perf_counter() - t0
                grown = (status_kb(pid, "VmHWM") - before) / 1024
                print(
                    f"{name:<32} {len(content) / 2**20:>8.1f} {grown:>9.0f} {seconds:>6.2f}  "
                    f"{outcome}"
                )
            print(f"\nresident memory at the end: {status_kb(pid, 'VmRSS') / 1024:.0f} MB")
            client.close()
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
