"""xviz.checks: request values turned into numbers one way, and a link's values through it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xviz.app.ui.links import ViewParams
from xviz.checks import real_number, whole_number
from xviz.errors import AnalysisError


@pytest.mark.parametrize(
    ("value", "text", "expected"),
    [(3, False, 3), (3.0, False, 3), (np.int64(7), False, 7), ("12", True, 12), (" -2 ", True, -2)],
)
def test_whole_numbers_are_accepted(value, text, expected):
    got = whole_number(value, "The page", text=text)
    assert got == expected and type(got) is int


@pytest.mark.parametrize(
    "value", [True, 1.5, math.nan, math.inf, "²", "١٢", "1e3", "3.0", "", None, [1], {"a": 1}]
)
def test_anything_else_gets_a_message_naming_it(value):
    with pytest.raises(AnalysisError, match="The page must be a whole number"):
        whole_number(value, "The page", text=True)


def test_text_is_refused_unless_asked_for():
    with pytest.raises(AnalysisError, match="whole number, not '3'"):
        whole_number("3", "The channel")


def test_bounds_and_where():
    assert whole_number(5, "n_steps", 1, 5) == 5
    with pytest.raises(AnalysisError, match="n_steps must be between 1 and 5, not 6"):
        whole_number(6, "n_steps", 1, 5)
    with pytest.raises(AnalysisError, match="Channel 9 is out of range: m has channels 0 to 8"):
        whole_number(9, "channel", 0, 8, where="m")


def test_real_numbers():
    assert real_number(0.25, "The opacity", 0.0, 1.0) == 0.25
    assert real_number(1, "The opacity", 0.0, 1.0) == 1.0
    for bad in (math.nan, 1.5, True, "0.5", None):
        with pytest.raises(AnalysisError, match="The opacity must be between 0 and 1"):
            real_number(bad, "The opacity", 0.0, 1.0)
    with pytest.raises(AnalysisError, match="above 0 and at most 2"):
        real_number(0, "stdevs", 0.0, 2.0, above_low=True)


def test_a_link_keeps_good_numbers_and_ignores_the_rest():
    tabs = ["activations", "cost"]
    good = ViewParams.parse({"size": "150", "channel": "12"}, tabs)
    assert (good.size, good.channel) == (150, 12)
    # str.isdigit() says yes to these; int() does not take them all: ignored, never an error.
    for odd in ("²", "١٢", "-3", "12.5", "9" * 400):
        bad = ViewParams.parse({"size": odd, "channel": odd}, tabs)
        assert bad.channel is None or bad.channel == int(odd)
        assert bad.size is None
