"""RFC 9457 problem+json on the wire: the type URIs, the content type, reading a detail back.

The service writes problems (`web/problems.py`); the terminal client and the export read them.
"""

from __future__ import annotations

import json
from typing import Final

PROBLEM_TYPE_BASE: Final = "https://research-service.dev/problems/"
PROBLEM_CONTENT_TYPE: Final = "application/problem+json"


def detail_of(body: bytes) -> str | None:
    """The `detail` of a problem+json body, or None when the body is not one."""
    try:
        problem = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        return None
    detail = problem.get("detail") if isinstance(problem, dict) else None
    return detail if isinstance(detail, str) else None
