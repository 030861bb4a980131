"""The served app under many users at once: failures, latency, isolation, the queue, memory.

    python bench/load.py [--clients 8] [--images 3] [--weights kitchenware|random] [--size N]
                         [--memory 100] [--cache-mb 128] [--queue-size 2] [--queue-clients 12]

The app (``app.build_demo``) is served in this process on loopback, so that its cache and
sessions can be read; every client is a ``gradio_client.Client`` (its own session) in its own
thread. Each client analyses its own images (the shipped examples and the kitchen photos,
randomly cropped, flipped and brightened, no two alike) with ``/analyze``, then explores each:
``/analyze`` at two other blocks and layers (the block, layer and page events have no API
name), ``/ablate`` and ``/attribute`` (Saliency) on its session, and ``/predict``.

Printed: requests, failures (goal 0), median and p95 latency per endpoint as the clients saw
it (queueing included: model events run one at a time); whether every top-5 a client got
(``/analyze``, ``/predict``, and ``/ablate``'s original, read from the session state) is its
own image's, compared with a sequential run of the same images outside the server; what the
sessions leave behind once their clients close; then ``python app.py`` is started with a
small ``XVIZ_QUEUE_SIZE`` and hit by ``--queue-clients`` clients at once, to record what the
refused ones are told. With ``--memory N``, N more distinct images are analysed and the
server's resident memory is printed against the cache budget as they go.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio notices a closed client at its next heartbeat (15 s by default); the session
# release below is observed sooner with a shorter one.
os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for app.py

import numpy as np
import torch
from gradio_client import Client, handle_file
from gradio_client.utils import QueueError
from PIL import Image, ImageEnhance, ImageOps

from app import build_demo
from bench.common import bench_model
from xviz.app.explorer import Explorer
from xviz.app.server import launch_options
from xviz.data.gallery import kitchen_examples, shipped_examples
from xviz.engine.analysis import class_labels
from xviz.engine.preprocess import preprocess
from xviz.model.weights import kitchenware_file
from xviz.model.xception import Xception

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4  # relative, on each of the top-5 probabilities
# (block, layer) of the first /analyze, then of the two explore calls.
VIEWS = [
    ("block2", "block2_sepconv1"),
    ("block5", "block5_sepconv2"),
    ("block13", "block13_sepconv1"),
]

Top5 = list[tuple[str, float]]


# --- inputs and the sequential reference ------------------------------------------------------


def distinct_images(n: int, directory: Path, seed: int) -> list[Path]:
    """``n`` PNGs, each a random crop (flipped, brightened) of a shipped or kitchen photo."""
    sources = shipped_examples() + [p for p, _ in kitchen_examples(per_class=4)]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as src:
            img = ImageOps.exif_transpose(src).convert("RGB")
        img.thumbnail((480, 480))
        w, h = img.size
        cw, ch = (int(side * rng.uniform(0.55, 0.95)) for side in (w, h))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
        path = directory / f"image-{seed}-{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


def reference_top5(model: Xception, paths: Sequence[Path], size: int) -> dict[Path, Top5]:
    """Top-5 of each image by the bare model, one at a time: no server, no cache."""
    labels = class_labels(model)
    device = next(model.parameters()).device
    expected = {}
    for path in paths:
        with torch.inference_mode():
            probs = torch.softmax(model(preprocess(str(path), size).to(device)), dim=1)[0]
        top = torch.topk(probs, min(5, len(labels)))
        expected[path] = [
            (labels[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
    return expected


def label_top5(label: dict) -> Top5:
    """A ``gr.Label`` value as the client receives it -> [(label, confidence)]."""
    return [(c["label"], c["confidence"]) for c in label["confidences"]]


def same_top5(got: Top5, expected: Top5) -> bool:
    return [g for g, _ in got] == [e for e, _ in expected] and all(
        abs(p - q) <= TOLERANCE * max(q, 1e-6) for (_, p), (_, q) in zip(got, expected, strict=True)
    )


# --- the clients ------------------------------------------------------------------------------


@dataclass
class Record:
    endpoint: str
    seconds: float
    error: str | None = None


@dataclass
class Results:
    records: list[Record] = field(default_factory=list)
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, endpoint: str, fn: Callable[[], object]) -> object | None:
        started = time.perf_counter()
        try:
            out = fn()
        except Exception as err:  # counted and printed: a failure is a result here
            self._add(Record(endpoint, time.perf_counter() - started, _describe(err)))
            return None
        self._add(Record(endpoint, time.perf_counter() - started))
        return out

    def check(self, what: str, got: Top5, expected: Top5) -> None:
        with self.lock:
            self.checked += 1
            if not same_top5(got, expected):
                self.mismatches.append(f"{what}: got {got[:2]}, expected {expected[:2]}")

    def _add(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"


def explore(
    client: Client, path: Path, size: int, expected: Top5, results: Results, full: bool
) -> None:
    """One user's work on one image: analyse it, then (``full``) look around in its session."""
    for i, (block, layer) in enumerate(VIEWS if full else VIEWS[:1]):
        sort = "mean" if i else "index"
        inputs = (handle_file(str(path)), size, layer, sort, "auto", "shared", 0, block, 0.5)
        out = results.call(
            "/analyze (explore)" if i else "/analyze",
            lambda inputs=inputs: client.predict(*inputs, api_name="/analyze"),
        )
        if out is not None:
            results.check(f"{path.name} /analyze", label_top5(out[0]), expected)
    if not full:
        return
    out = results.call(
        "/ablate",
        lambda: client.predict(
            "relu_between", ["block5"], VIEWS[0][1], "left", 0, "auto", api_name="/ablate"
        ),
    )
    if out is not None:
        results.check(f"{path.name} /ablate original (session)", label_top5(out[0]), expected)
    results.call(
        "/attribute", lambda: client.predict("saliency", "block13", 0.5, api_name="/attribute")
    )
    out = results.call(
        "/predict", lambda: client.predict(handle_file(str(path)), size, api_name="/predict")
    )
    if out is not None:
        results.check(f"{path.name} /predict", list(out.items()), expected)


def run_clients(
    url: str,
    work: Sequence[Sequence[Path]],
    size: int,
    expected: dict[Path, Top5],
    full: bool = True,
    before_close: Callable[[], None] | None = None,
    downloads: Path | None = None,
) -> tuple[Results, float]:
    """One thread and one Client per list in ``work``, all starting together -> results, wall s.

    ``before_close`` runs once every client is done, before they disconnect. ``downloads``:
    where the clients save the files they get (default gradio_client's, $GRADIO_TEMP_DIR)."""
    results = Results()
    where = {} if downloads is None else {"download_files": str(downloads)}
    clients = [Client(url, verbose=False, **where) for _ in work]
    start = threading.Barrier(len(work) + 1)

    def user(client: Client, paths: Sequence[Path]) -> None:
        start.wait()
        for path in paths:
            explore(client, path, size, expected[path], results, full)

    threads = [threading.Thread(target=user, args=cw) for cw in zip(clients, work, strict=True)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    if before_close is not None:
        before_close()
    for client in clients:
        client.close()
    return results, wall


def split(paths: Sequence[Path], n: int) -> list[list[Path]]:
    return [list(paths[i::n]) for i in range(n)]


# --- reporting --------------------------------------------------------------------------------


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory (VmRSS) of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc: Linux only")


def trimmed_rss_mb() -> float | None:
    """RSS once glibc's ``malloc_trim(0)`` has handed free heap pages back; None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    libc.malloc_trim(0)
    return rss_mb()


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[round(0.95 * (len(ordered) - 1))]


def print_latency(results: Results, wall: float) -> None:
    header = f"{'requests':>8} {'failures':>8} {'median s':>9} {'p95 s':>7} {'max s':>7}"
    print(f"{'endpoint':<20} {header}")
    names = list(dict.fromkeys(r.endpoint for r in results.records))
    for name in [*names, "all"]:
        rows = [r for r in results.records if name in ("all", r.endpoint)]
        ok = [r.seconds for r in rows if r.error is None] or [float("nan")]
        print(
            f"{name:<20} {len(rows):>8} {sum(r.error is not None for r in rows):>8} "
            f"{statistics.median(ok):>9.2f} {p95(ok):>7.2f} {max(ok):>7.2f}"
        )
    n = len(results.records)
    print(f"wall time {wall:.1f} s, {n / wall:.1f} requests/s")
    for r in [r for r in results.records if r.error][:5]:
        print(f"  failure {r.endpoint}: {r.error}")
    verdict = "OK" if not results.mismatches else "CROSS-TALK"
    print(
        f"isolation: {results.checked - len(results.mismatches)}/{results.checked} top-5 answers "
        f"match the sequential run of the client's own image (rel {TOLERANCE:g}): {verdict}"
    )
    for m in results.mismatches[:5]:
        print(f"  {m}")


def cache_line(explorer: Explorer) -> str:
    s = explorer.cache.stats
    return (
        f"cache {s.bytes / 2**20:.0f}/{s.budget_bytes / 2**20:.0f} MB, {s.entries} entries, "
        f"{s.misses} misses, {s.hits} hits, {s.evictions} evictions"
    )


def sessions_line(demo, explorer: Explorer) -> str:
    data = demo.server_app.state_holder.session_data
    holding = sum(bool(s.state_data) for s in data.values())
    closed = sum(s.is_closed for s in data.values())
    return (
        f"{len(explorer._cancel)} cancel flags, {len(data)} Gradio sessions "
        f"({closed} closed, {holding} holding a gr.State; kept up to "
        f"{demo.state_session_capacity})"
    )


# --- the phases -------------------------------------------------------------------------------


def load_phase(url, demo, explorer, args, tmp: Path) -> None:
    paths = distinct_images(args.clients * args.images, tmp, seed=1)
    expected = reference_top5(explorer.model, paths, args.size)
    print(
        f"\n# Load: {args.clients} clients x {args.images} images at {args.size}px; per image "
        f"/analyze, 2 x /analyze (explore), /ablate, /attribute (saliency), /predict"
    )
    results, wall = run_clients(
        url,
        split(paths, args.clients),
        args.size,
        expected,
        before_close=lambda: print(
            f"sessions before the clients close: {sessions_line(demo, explorer)}"
        ),
    )
    print_latency(results, wall)
    print(cache_line(explorer))
    closed = time.perf_counter()
    while explorer._cancel and time.perf_counter() - closed < 60:
        time.sleep(0.1)
    print(
        f"sessions {time.perf_counter() - closed:.1f} s after they closed "
        f"(heartbeat {os.environ['GRADIO_HEARTBEAT_INTERVAL']} s): {sessions_line(demo, explorer)}"
    )


def memory_phase(url, explorer, args, tmp: Path, rss: list[tuple[str, float]]) -> None:
    paths = distinct_images(args.memory, tmp, seed=2)
    expected = reference_top5(explorer.model, paths, args.size)
    print(
        f"\n# Memory: {args.memory} more distinct images through /analyze, {args.clients} clients"
    )
    print(f"{'RSS after':<16} {'MB':>6}")
    for label, value in rss:
        print(f"{label:<16} {value:>6.0f}")
    failures = mismatches = 0
    step = 25
    for done in range(step, args.memory + step, step):
        batch = paths[done - step : done]
        results, wall = run_clients(
            url, split(batch, args.clients), args.size, expected, full=False
        )
        failures += sum(r.error is not None for r in results.records)
        mismatches += len(results.mismatches)
        gc.collect()
        rss.append((f"+{min(done, args.memory)} images", rss_mb()))
        print(f"{rss[-1][0]:<16} {rss[-1][1]:>6.0f}  in {wall:4.1f} s; {cache_line(explorer)}")
    values = dict(rss)
    stats = explorer.cache.stats
    rounds = -(-args.memory // step)
    half = rss[len(rss) - 1 - rounds // 2]  # the cache is long full by then
    print(
        f"RSS growth since warm-up {rss[-1][1] - values['warm-up']:.0f} MB, of which the cache "
        f"holds {stats.bytes / 2**20:.0f} MB (budget {stats.budget_bytes / 2**20:.0f} MB); "
        f"since {half[0]}: {rss[-1][1] - half[1]:+.0f} MB. {failures} failures, "
        f"{mismatches} mismatches"
    )
    trimmed = trimmed_rss_mb()
    if trimmed is not None:
        print(
            f"RSS after glibc malloc_trim(0): {trimmed:.0f} MB, {trimmed - values['warm-up']:+.0f} "
            f"MB since warm-up ({rss[-1][1] - trimmed:.0f} MB was free memory malloc kept)"
        )


def queue_phase(args, image: Path) -> None:
    """``python app.py`` with a small queue, ``--queue-clients`` /predict calls at once."""
    print(
        f"\n# Queue: XVIZ_QUEUE_SIZE={args.queue_size} python app.py, "
        f"{args.queue_clients} clients call /predict at once"
    )
    if args.weights == "random" or args.queue_clients < 1:
        print("skipped: needs named weights (app.py loads its own) and --queue-clients >= 1")
        return
    port = free_port()
    env = {
        **os.environ,
        "XVIZ_QUEUE_SIZE": str(args.queue_size),
        "XVIZ_WEIGHTS": args.weights,
        "XVIZ_OFFLINE": os.environ.get("XVIZ_OFFLINE", "1"),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
    }
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    try:
        url = wait_until_serving(port, server)
        clients = [Client(url, verbose=False) for _ in range(args.queue_clients)]
        start = threading.Barrier(len(clients))
        outcomes: list[str] = []

        def user(client: Client) -> None:
            start.wait()
            try:
                client.predict(handle_file(str(image)), args.size, api_name="/predict")
                outcomes.append("served")
            except QueueError as err:
                outcomes.append(f"refused, {type(err).__name__}: {err}")
            except Exception as err:  # anything else is a failure to report
                outcomes.append(f"FAILED, {_describe(err)}")

        threads = [threading.Thread(target=user, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for outcome in sorted(set(outcomes)):
            print(f"{outcomes.count(outcome):>4} x {outcome}")
        after = clients[0].predict(handle_file(str(image)), args.size, api_name="/predict")
        print(f"then one more /predict: {'served' if after else 'FAILED'}")
        print(f"server RSS {rss_mb(server.pid):.0f} MB")
        for client in clients:
            client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(port: int, server: subprocess.Popen, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"python app.py exited with {server.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"http://127.0.0.1:{port}/"
        time.sleep(0.5)
    raise TimeoutError(f"python app.py did not listen on port {port} in {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--images", type=int, default=3, help="distinct images per client")
    parser.add_argument(
        "--weights",
        default="kitchenware" if kitchenware_file() else "random",
        help="kitchenware (read offline; the default when installed), another name, or random",
    )
    parser.add_argument("--size", type=int, default=None, help="input side; default: native")
    parser.add_argument("--memory", type=int, default=0, help="images for the memory run")
    parser.add_argument("--cache-mb", type=float, default=128, help="small, so that it evicts")
    parser.add_argument("--queue-size", type=int, default=2)
    parser.add_argument("--queue-clients", type=int, default=12)
    args = parser.parse_args()
    os.environ.setdefault("XVIZ_OFFLINE", "1")

    rss = [("start", rss_mb())]
    explorer = Explorer(bench_model(args.weights), cache_mb=args.cache_mb)
    args.size = args.size or explorer.native_size
    rss.append(("model loaded", rss_mb()))
    demo = build_demo(explorer)
    demo.launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(),
    )
    url = demo.local_url
    with tempfile.TemporaryDirectory(prefix="xviz-load-") as tmp:
        warm = distinct_images(1, Path(tmp), seed=0)
        run_clients(url, [warm], args.size, reference_top5(explorer.model, warm, args.size))
        gc.collect()
        rss.append(("warm-up", rss_mb()))
        print(
            f"xviz load bench: weights {args.weights}, {torch.get_num_threads()} torch threads, "
            f"cache budget {args.cache_mb:g} MB, serving {url}"
        )
        try:
            load_phase(url, demo, explorer, args, Path(tmp))
            gc.collect()
            rss.append(("load run", rss_mb()))
            if args.memory:
                memory_phase(url, explorer, args, Path(tmp), rss)
            else:
                print("\nRSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss))
        finally:
            demo.close()
        queue_phase(args, warm[0])


if __name__ == "__main__":
    main()
