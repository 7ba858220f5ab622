"""The marked sample blocks of a document: find, replace, and compare them without timings."""

from __future__ import annotations

import re
from typing import Final

# <!-- sample: NAME --> ... <!-- /sample -->, each marker on a line of its own.
_BLOCK: Final = re.compile(
    r"^<!-- sample: (?P<name>[a-z0-9/_-]+) -->\n(?P<body>.*?)^<!-- /sample -->$",
    re.MULTILINE | re.DOTALL,
)
# The end of a stream token or session cookie: the expiry (seconds) and the signature.
_SIGNED_TAIL: Final = r"\d+\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"
# What changes from one capture to the next: times, durations and what encodes them (a
# stream token's and a session cookie's expiry and signature too: `<ids>.<expires>.<sig>`).
_VOLATILE: Final = (
    (re.compile(r'("(?:elapsed_ms|t_ms|wait_ms)": ?)\d+'), r"\g<1>0"),
    (re.compile(r'("timings_ms": ?\{)[^}]*\}'), r"\g<1>…}"),
    (re.compile(r'("(?:created_at|finished_at|expires_at)": ?)"[^"]*"'), r'\g<1>"…"'),
    (re.compile(r'("next": ?)"[^"]*"'), r'\g<1>"…"'),
    (re.compile(rf"((?:token|research_session)=(?:[A-Za-z0-9-]+\.)+?){_SIGNED_TAIL}"), r"\g<1>…"),
)


class SampleError(Exception):
    """The documents and the captures do not name the same samples."""


def blocks(text: str) -> dict[str, str]:
    """Every marked sample of a document: name -> the text between its markers."""
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(text):
        if match["name"] in found:
            raise SampleError(f"sample {match['name']!r} is marked twice")
        found[match["name"]] = match["body"]
    return found


def replace(text: str, captured: dict[str, str]) -> str:
    """The document with every marked sample's text replaced by its capture."""
    missing = sorted(set(blocks(text)) - set(captured))
    unmarked = sorted(set(captured) - set(blocks(text)))
    if missing or unmarked:
        raise SampleError(
            f"marked but not captured: {missing}; captured but not marked: {unmarked}"
        )

    def swap(match: re.Match[str]) -> str:
        name = match["name"]
        return f"<!-- sample: {name} -->\n{captured[name]}<!-- /sample -->"

    return _BLOCK.sub(swap, text)


def normalise(text: str) -> str:
    """`text` with its timings blanked, so two captures of one scenario compare equal."""
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text
