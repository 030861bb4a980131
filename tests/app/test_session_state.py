"""Per-visitor state stays bounded whatever session hashes a client names: thousands of fresh
ones and long ones posted through the real server, to the events that take a session from
the request itself (the first, instant step of a run that Cancel can stop)."""

from __future__ import annotations

import httpx

from tests.raw_api import dependency, instant, new_session
from xviz.app import explorer as ex

# The stores hold ex.MAX_SESSIONS sessions (4096; tests/app/test_explorer.py fills them in
# process); here they are made to hold BOUND, so that a few thousand requests overflow them.
BOUND = 300
FRESH = 5 * BOUND


def _stores(explorer) -> dict[str, int]:
    return {
        "armed": len(explorer._armed),
        "long": len(explorer._long),
        "cancel": len(explorer._cancel),
    }


def test_thousands_of_fresh_and_long_session_hashes_leave_the_stores_bounded(
    served_app, monkeypatch
):
    url, explorer = served_app
    for store in (explorer._armed, explorer._long, explorer._cancel):
        monkeypatch.setattr(store, "max_entries", BOUND)
    config = httpx.get(f"{url}config").json()
    make, make_trigger = dependency(config, "featvis-make")  # its first step: the arm
    stop, stop_trigger = dependency(config, "featvis-cancel")
    before = _stores(explorer)
    with httpx.Client() as client:
        # Control: one visitor's click is taken, and their second long job refused.
        visitor = new_session()
        first = instant(url, make, [], visitor, make_trigger, client)
        assert first.success, first.error
        assert _stores(explorer)["long"] == before["long"] + 1
        again = instant(url, make, [], visitor, make_trigger, client)
        assert not again.success and "still running or waiting" in again.error
        # ... until their Cancel.
        assert instant(url, stop, [], visitor, stop_trigger, client).success
        assert instant(url, make, [], visitor, make_trigger, client).success
        for i in range(FRESH):
            name = f"fresh{i}" if i % 10 else f"{i}-" + "y" * 20_000  # one in ten is long
            outcome = instant(url, make, [], name, make_trigger, client)
            assert outcome.success, outcome.error
            if i % 500 == 0:
                assert instant(url, stop, [], name, stop_trigger, client).success
    after = _stores(explorer)
    assert after["armed"] == after["long"] == BOUND  # full, and no more than full
    assert after["cancel"] <= BOUND
    for store in (explorer._armed, explorer._long, explorer._cancel):
        assert all(len(str(key)) <= ex.SESSION_KEY for key in store._entries)
    # The server still serves the latest visitor: their second click is refused as it should.
    latest = instant(url, make, [], f"fresh{FRESH - 1}", make_trigger, client=None)
    assert not latest.success and "still running" in latest.error
