"""JSON as this service writes it: no NaN or Infinity, no number beyond a float."""

from __future__ import annotations

import json
import math
from typing import Any, Final

#: Integers a service writes are far below this (counts, milliseconds); a reader in another
#: language takes one past a float's range as infinity.
MAX_INT: Final = 2**63


def loads(text: str) -> Any:
    """`text` decoded; ValueError for NaN, Infinity or a number that overflows (`1e400`).

    Python's decoder takes all three (the last as infinity), which no JSON reader elsewhere
    does: a file that held them would be passed on as events no client can parse.
    """
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_bounded)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _bounded(text: str) -> int:
    number = int(text)  # Python's own limit first: "Exceeds the limit (4300 digits)"
    if abs(number) >= MAX_INT:
        raise ValueError(f"{text[:20]}… is beyond the integers a service writes")
    return number


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} is beyond what a float holds")
    return number
