"""Standard library documentation written in C: whole C modules, and names Python re-exports."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import logging
import re
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Final

from research_service.corpus.docstrings import module_title, section
from research_service.corpus.documents import Document
from research_service.text import clean_rest

log = logging.getLogger(__name__)

# `($module, /, a, x)` or `($self, /)`: the bound first parameter the docs leave out.
_SELF = re.compile(r"\(\$\w+,\s*")

LIBRARY_URL: Final = "https://docs.python.org/3/library/"
# Written in C, so there is no source to parse. Importing these runs no Python code and has
# no side effects (unlike `antigravity` or `this`), so reading their docstrings is safe.
C_MODULES: Final = ("builtins", "sys", "itertools", "math", "cmath", "time", "gc", "array")
# Names the `site` module adds to `builtins`: interactive helpers, not the language.
SITE_NAMES: Final = frozenset({"copyright", "credits", "license", "exit", "quit", "help"})


def load_c_module(name: str, fingerprint: str) -> Document | None:
    """A C module's docstring and its own public functions, classes and methods."""
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        log.warning("skipping stdlib module %s: %s", name, exc)
        return None
    sections = [clean_rest(module.__doc__ or "")]
    sections.extend(_own_entries(module, name))
    url = f"{LIBRARY_URL}functions.html" if name == "builtins" else None
    return Document(
        key=f"stdlib:{name}",
        title=module_title(name, sections[0]) if sections[0] else f"{name} — built-in functions",
        url=url or f"{LIBRARY_URL}{name}.html#module-{name}",
        text="\n\n".join(s for s in sections if s),
        fingerprint=fingerprint,
        name=name,
    )


def reexports(
    tree: ast.Module, owner: str, *, keep: Callable[[str], bool]
) -> tuple[str, list[str]]:
    """What a Python module imports from private C modules (`from _csv import reader`).

    Returns the first such C module's docstring and an entry for every imported name that
    `keep` accepts, headed with the name the Python module gives it (`csv.reader`).
    """
    lead = ""
    entries: list[str] = []
    for node, guarded in _top_level(tree.body):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        module = _private_c_module(node.module)
        if module is None:
            continue
        lead = lead or clean_rest(module.__doc__ or "")
        for alias in node.names:
            if alias.asname not in (None, alias.name):
                continue  # renamed on import (`make_encoder as c_make_encoder`): internal
            if alias.name == "*":
                # `try: from _decimal import *`: a speed-up of what the Python code defines.
                names = [] if guarded else _public_names(module)
            else:
                names = [alias.name]
            for attr in names:
                obj = getattr(module, attr, None)
                if obj is not None and keep(attr):
                    entries.extend(_object_entries(f"{owner}.{attr}", obj))
    return lead, [e for e in entries if e]


def _top_level(body: list[ast.stmt]) -> Iterator[tuple[ast.stmt, bool]]:
    """Module-level statements, and whether each is in a `try:` (`try: from _heapq import *`)."""
    for node in body:
        yield node, False
        if isinstance(node, ast.Try):
            yield from ((inner, True) for inner in node.body)


def _private_c_module(name: str) -> ModuleType | None:
    """The private C module `name` (built in or an extension), imported; else None."""
    if not name.startswith("_") or "." in name:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec is not None else None
    is_c = origin == "built-in" or (
        origin is not None and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    )
    if not is_c:
        return None  # frozen or Python: importing it could run code
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        log.debug("cannot read the C module %s: %s", name, exc)
        return None


def _public_names(module: ModuleType) -> list[str]:
    return sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v))


def _own_entries(module: ModuleType, name: str) -> Iterator[str]:
    """Entries of the public functions and classes a C module defines itself."""
    prefix = "" if name == "builtins" else f"{name}."
    for attr in sorted(vars(module)):
        obj = getattr(module, attr)
        if attr.startswith("_") or attr in SITE_NAMES or getattr(obj, "__module__", "") != name:
            continue
        yield from _object_entries(f"{prefix}{attr}", obj)


def _object_entries(name: str, obj: object) -> Iterator[str]:
    """The entry of a function, or of a class and its public methods."""
    if isinstance(obj, type):
        yield _entry(name, obj, kind="class")
        for member, value in sorted(vars(obj).items()):
            if not member.startswith("_") and callable(value):
                yield _entry(f"{name}.{member}", value)
    elif callable(obj):
        yield _entry(name, obj)


def _entry(name: str, obj: object, *, kind: str = "") -> str:
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return ""
    signature = getattr(obj, "__text_signature__", None)
    if isinstance(signature, str) and not kind:
        name += _SELF.sub("(", signature).replace("(/, ", "(").replace("(/)", "()")
    return section(name, doc, kind=kind)
