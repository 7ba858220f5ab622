"""Docstrings as documentation: `name`: headings over cleaned text, and clean one-line titles."""

from __future__ import annotations

import re
from typing import Final

from research_service.text import clean_rest, sentences, shorten, squash

TITLE_CHARS: Final = 80
# A summary shorter than this says little more than the module's name ("csv.py - …").
SHORT_SUMMARY_CHARS: Final = 120

# docs.python.org's synopsis of modules whose docstring opens with no short summary of its
# own: none at all, a file name, or a long sentence about something else (JSON the format).
SYNOPSES: Final = {
    "array": "Efficient arrays of numeric values",
    "ast": "Abstract Syntax Trees",
    "asyncio": "Asynchronous I/O",
    "cmath": "Mathematical functions for complex numbers",
    "collections": "Container datatypes",
    "concurrent.futures": "Launching parallel tasks",
    "csv": "CSV file reading and writing",
    "dataclasses": "Data classes",
    "decimal": "Decimal fixed point and floating point arithmetic",
    "enum": "Support for enumerations",
    "http": "HTTP modules",
    "json": "JSON encoder and decoder",
    "math": "Mathematical functions",
    "multiprocessing": "Process-based parallelism",
    "pathlib": "Object-oriented filesystem paths",
    "sqlite3": "DB-API 2.0 interface for SQLite databases",
    "sys": "System-specific parameters and functions",
    "tomllib": "Parse TOML files",
    "typing": "Support for type hints",
    "unittest": "Unit testing framework",
    "unittest.mock": "Mock object library",
    "urllib": "URL handling modules",
    "urllib.request": "Extensible library for opening URLs",
}

_URL = re.compile(r"\s*<?\bhttps?://[^\s>]+>?")
_PARENTHESES = re.compile(r"\s*\([^()]*\)")
# "Module doctest -- a framework …", "csv.py - read/write …", "wsgiref -- a WSGI …".
_NAME_PREFIX = re.compile(r"(?i)^(?:module\s+)?([\w.]+?)(?:\.py)?(?:\s+module)?\s*(?:--?|—|:)\s+")
# "This module provides …", "The typing module: …": the title already names the module.
_MODULE_PREFIX = re.compile(
    r"(?i)^(?:this|the [\w.]+)(?: extension)? module"
    r"(?: provides| implements| defines| contains| tries to)?:?\s+"
)


def section(name: str, doc: str, *, kind: str = "") -> str:
    """`class `json.JSONDecoder`:` over the cleaned docstring, the way the docs show it."""
    prefix = f"{kind} " if kind else ""
    # One newline only: the heading stays in the same passage as the text under it, and
    # reads as the subject of the docstring's first sentence.
    return f"{prefix}`{name}`:\n{clean_rest(doc)}"


def module_title(name: str, doc: str) -> str:
    """`json — JSON is a subset of JavaScript syntax …`: the name and a clean summary."""
    room = TITLE_CHARS - len(name) - len(" — ")
    text = SYNOPSES.get(name) or summary(name, doc)
    if len(text) > room:
        text = squash(_PARENTHESES.sub("", text))  # asides go first when space is short
    return f"{name} — {shorten(text, room)}" if text and room > 0 else name


def summary(name: str, doc: str) -> str:
    """The first sentence of a module docstring without URLs, markup or a name prefix."""
    paragraph = _URL.sub("", doc.strip().split("\n\n", 1)[0]).replace("`", "")
    found = sentences(paragraph)
    if not found:
        return ""
    first = found[0]
    prefix = _NAME_PREFIX.match(first)
    if prefix and prefix.group(1).lower() in _names(name):
        first = first[prefix.end() :]
    first = _MODULE_PREFIX.sub("", first)
    first = first.strip().rstrip(".")
    if first.lower().removesuffix(".py") in _names(name):
        return ""  # "robotparser.py": a file name, not a summary
    return first[:1].upper() + first[1:]


def _names(name: str) -> set[str]:
    """What a module's docstring may call it: `urllib.robotparser` or `robotparser`."""
    return {name.lower(), name.rsplit(".", 1)[-1].lower()}
