"""A stand-in for ZeroGPU's device API, for the ``spaces`` package in ZeroGPU mode.

The endpoints and payloads are those ``spaces`` 0.51.3 calls (``spaces/zero/api.py``,
``spaces/zero/client.py``): ``POST /startup-report`` (200), ``POST /schedule`` with the query
``cgroupPath, taskId, enableQueue, tokenVersion, durationSeconds[, token]`` answered 200 with a
``ScheduleResponse`` JSON (``idle, nvidiaIndex, nvidiaUUID, allowToken``) or 429 with
``QuotaInfos`` (``left``: seconds, ``wait``: a pydantic timedelta, here seconds), ``POST
/allow?allowToken&pid`` (200), ``POST /release?allowToken&fail`` (200), ``GET /queue-size``.
Every request is recorded, so a test can read what the package asked for.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class DeviceAPI:
    """The server's behaviour and what it saw. ``mode``: "quota" answers ``/schedule`` with
    429 (the visitor's quota is spent), "grant" with a GPU."""

    mode: str = "quota"
    left_s: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [params for p, params in self.requests if p == path]


def serve(api: DeviceAPI) -> tuple[ThreadingHTTPServer, str]:
    """Start the stand-in on a free loopback port, in a daemon thread: (server, its URL)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _answer(self, status: int, body: object | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> tuple[str, dict[str, str]]:
            url = urlparse(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            with api.lock:
                api.requests.append((url.path, params))
            return url.path, params

        def do_POST(self) -> None:
            path, params = self._record()
            if path == "/schedule":
                if api.mode == "quota":
                    self._answer(429, {"left": api.left_s, "wait": 3600})
                else:
                    self._answer(
                        200,
                        {"idle": False, "nvidiaIndex": 0, "nvidiaUUID": "GPU-stand-in",
                         "allowToken": f"token-{params.get('taskId')}"},
                    )  # fmt: skip
            elif path in ("/startup-report", "/allow", "/release"):
                self._answer(200)
            else:
                self._answer(404, {"detail": "unknown endpoint"})

        def do_GET(self) -> None:
            path, _ = self._record()
            self._answer(200, 0) if path == "/queue-size" else self._answer(404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
