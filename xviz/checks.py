"""Request values, checked one way.

Whatever a client names (a form field, an API argument, a link's query) can be any JSON value
or any text: these turn it into the number a function needs, or raise an ``AnalysisError``
that says what was wrong and echoes the value cut short. Used by the engine, the methods and
the app alike.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from xviz.errors import AnalysisError, short

_DIGITS = re.compile(r"[+-]?[0-9]+")  # ASCII only: str.isdigit() also says yes to "²"


def whole_number(
    value: Any,
    what: str,
    low: int | None = None,
    high: int | None = None,
    *,
    text: bool = False,
    where: str | None = None,
) -> int:
    """``value`` as an int in ``[low, high]`` (either bound optional).

    Accepts ints and whole floats (``3.0``, as JSON numbers arrive); with ``text``, also a
    string of ASCII digits (``"12"``, a link's value). Never a bool, ``1.5``, NaN or other
    text. ``what`` names the value in messages as a sentence starts with it ("The page",
    "n_steps"); ``where`` makes the
    range message say whose range it is ("Channel 9 is out of range: block5 has channels
    0 to 7").
    """
    number: int | None = None
    whole = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()
    )
    if whole and not isinstance(value, bool):
        number = int(value)
    elif text and isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None:
        raise AnalysisError(f"{what} must be a whole number, not {short(value, 40)}.")
    if (low is not None and number < low) or (high is not None and number > high):
        if where is not None:
            raise AnalysisError(
                f"{_capital(what)} {number} is out of range: {where} has {what}s {low} to {high}."
            )
        raise AnalysisError(f"{what} must be {_bounds(low, high)}, not {number}.")
    return number


def real_number(
    value: Any, what: str, low: float, high: float, *, above_low: bool = False
) -> float:
    """``value`` (a number) as a float in ``[low, high]``, or ``(low, high]`` when
    ``above_low``. Never a bool, NaN, infinity or text."""
    number = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    inside = (low < number if above_low else low <= number) and number <= high  # NaN: False
    if not inside:
        bounds = f"above {low:g} and at most" if above_low else f"between {low:g} and"
        raise AnalysisError(f"{what} must be {bounds} {high:g}, not {short(value, 40)}.")
    return number


def _capital(what: str) -> str:
    return what[:1].upper() + what[1:]


def _bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"
