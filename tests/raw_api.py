"""Hand-made requests to the served app, the way an attacker or the browser sends them.

``gradio_client`` uploads local files and shapes payloads itself; these helpers send exactly
the JSON given: through the HTTP API (``/gradio_api/call/<api_name>``) and through the queue
protocol the browser uses for every event, named or not (``/gradio_api/queue/join``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT = 120


@dataclass(frozen=True)
class Outcome:
    """How a request ended: its output values, or the error message the client got."""

    success: bool
    data: list[Any] | None = None
    error: str | None = None


def _events(response: httpx.Response):
    """The JSON payloads of a server-sent event stream, with their event names."""
    name = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            text = line.split(":", 1)[1].strip()
            yield name, json.loads(text) if text and text != "null" else None


def call(url: str, api_name: str, data: list[Any], session_hash: str | None = None) -> Outcome:
    """POST ``data`` to a named endpoint (as session ``session_hash``, default a new one) and
    wait for its result."""
    base = url.rstrip("/")
    body = {"data": data, "session_hash": session_hash}
    # json.dumps, not httpx: it writes NaN as JSON does not, as a careless client may.
    started = httpx.post(
        f"{base}/gradio_api/call/{api_name}",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    if started.status_code >= 400:  # refused at the door: the body says why
        try:
            return Outcome(False, error=started.json().get("error") or started.text)
        except ValueError:
            return Outcome(False, error=started.text)
    event_id = started.json()["event_id"]
    with httpx.stream(
        "GET", f"{base}/gradio_api/call/{api_name}/{event_id}", timeout=TIMEOUT
    ) as stream:
        for name, payload in _events(stream):
            if name == "complete":
                return Outcome(True, data=payload)
            if name == "error":
                return Outcome(False, error=(payload or {}).get("error"))
    raise AssertionError(f"no result for {api_name}")


def dependency(config: dict, elem_id: str) -> tuple[int, int]:
    """(fn_index, trigger_id) of the event whose trigger has ``elem_id``."""
    ids = {c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id}
    for dep in config["dependencies"]:
        for target, _ in dep["targets"]:
            if target in ids:
                return dep["id"], target
    raise AssertionError(f"no event triggered by #{elem_id}")


def _body(
    data: list[Any], fn_index: int, session_hash: str, trigger_id: int | None, event_data: Any
) -> dict[str, Any]:
    """An event's request body, as the browser's client writes it."""
    return {
        "data": data,
        "event_data": event_data,
        "fn_index": fn_index,
        "trigger_id": trigger_id,
        "session_hash": session_hash,
    }


def _joined(base: str, body: dict[str, Any]):
    """Joins the queue with ``body``; yields (event_id, each message of that event)."""
    joined = httpx.post(f"{base}/gradio_api/queue/join", json=body, timeout=30)
    joined.raise_for_status()
    event_id = joined.json()["event_id"]
    with httpx.stream(
        "GET", f"{base}/gradio_api/queue/data", params={"session_hash": body["session_hash"]},
        timeout=TIMEOUT,
    ) as events:  # fmt: skip
        for _, message in _events(events):
            if message and message.get("event_id") == event_id:
                yield event_id, message


def _completed(message: dict[str, Any]) -> Outcome:
    output = message.get("output") or {}
    if message.get("success"):
        return Outcome(True, data=output.get("data"))
    return Outcome(False, error=output.get("error"))


def join(
    url: str,
    fn_index: int,
    data: list[Any],
    session_hash: str,
    trigger_id: int | None = None,
    event_data: Any = None,
) -> Outcome:
    """Run event ``fn_index`` as the browser does, for the session ``session_hash``, with the
    ``event_data`` a page script would send (a clicked channel, block, position)."""
    body = _body(data, fn_index, session_hash, trigger_id, event_data)
    for _, message in _joined(url.rstrip("/"), body):
        if message.get("msg") == "process_completed":
            return _completed(message)
    raise AssertionError(f"no result for event {fn_index}")


def stream(
    url: str,
    fn_index: int,
    frames: list[list[Any]],
    session_hash: str,
    trigger_id: int | None = None,
) -> list[Outcome]:
    """Run streaming event ``fn_index`` as the browser's camera does, for the session
    ``session_hash``: join with the first frame's inputs, send each next frame's to
    ``/gradio_api/stream/<event_id>`` when the previous one's output arrives, then close the
    stream. One outcome per frame (Gradio's ``routes.py`` and ``queueing.py``: a streaming
    event answers ``process_streaming`` per input and ``process_completed`` once closed)."""
    base = url.rstrip("/")
    outcomes: list[Outcome] = []
    for event_id, message in _joined(
        base, _body(frames[0], fn_index, session_hash, trigger_id, None)
    ):
        if message.get("msg") == "process_streaming":
            outcomes.append(Outcome(True, data=(message.get("output") or {}).get("data")))
            if len(outcomes) < len(frames):
                body = _body(frames[len(outcomes)], fn_index, session_hash, trigger_id, None)
                httpx.post(f"{base}/gradio_api/stream/{event_id}", json=body, timeout=30)
            else:
                httpx.post(f"{base}/gradio_api/stream/{event_id}/close", timeout=30)
        elif message.get("msg") == "process_completed":
            completed = _completed(message)
            return outcomes if completed.success else [*outcomes, completed]
    raise AssertionError(f"no end of stream {fn_index}")


def instant(
    url: str,
    fn_index: int,
    data: list[Any],
    session_hash: str,
    trigger_id: int | None = None,
    client: httpx.Client | None = None,
) -> Outcome:
    """Run event ``fn_index`` that is outside the queue (``queue=False``), as the browser
    posts it (``/gradio_api/run/predict``), for the session ``session_hash``."""
    body = _body(data, fn_index, session_hash, trigger_id, None)
    post = client.post if client is not None else httpx.post
    response = post(f"{url.rstrip('/')}/gradio_api/run/predict", json=body, timeout=30)
    try:
        payload = response.json()
    except ValueError:
        return Outcome(False, error=response.text)
    if response.status_code >= 400 or payload.get("error"):
        return Outcome(False, error=payload.get("error") or response.text)
    return Outcome(True, data=payload.get("data"))


def new_session() -> str:
    return uuid.uuid4().hex[:11]


def default_data(config: dict, fn_index: int) -> list[Any]:
    """The values a fresh page sends for event ``fn_index``'s inputs (states as null)."""
    components = {c["id"]: c for c in config["components"]}
    dep = next(d for d in config["dependencies"] if d["id"] == fn_index)
    return [
        None if components[i]["type"] == "state" else components[i]["props"].get("value")
        for i in dep["inputs"]
    ]
