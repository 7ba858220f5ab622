"""Python source parsed for its docstrings, never imported; CPython 3.11's parser mended."""

from __future__ import annotations

import ast
import logging

log = logging.getLogger(__name__)


def parse_python(source: bytes, filename: str) -> ast.Module:
    """`source`'s syntax tree; SyntaxError or ValueError as `ast.parse` raises them.

    CPython 3.11's `ast.parse` can fail once with "AST constructor recursion depth mismatch"
    (a SystemError) when it runs in a thread, as the index's sync does: seen once in many CI
    runs, on asyncio/streams.py, which failed the whole sync and the service's start. The
    same parse is made once more.
    """
    try:
        return ast.parse(source, filename=filename)
    except SystemError as exc:
        log.info("parsing %s again after the interpreter's own error (%s)", filename, exc)
        return ast.parse(source, filename=filename)
