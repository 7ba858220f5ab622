"""JSON as this service writes it: no NaN or Infinity, no number beyond a float."""

from __future__ import annotations

import json
import math
from typing import Any


def loads(text: str) -> Any:
    """`text` decoded; ValueError for NaN, Infinity or a number that overflows (`1e400`).

    Python's decoder takes all three (the last as infinity), which no JSON reader elsewhere
    does: a file that held them would be passed on as events no client can parse.
    """
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} is beyond what a float holds")
    return number
