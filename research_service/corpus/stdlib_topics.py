"""The language reference topics that `pydoc_data/topics.py` holds, one document each."""

from __future__ import annotations

import ast
import functools
import logging
from pathlib import Path
from typing import Final

from research_service.corpus.documents import Document, DocumentRef
from research_service.corpus.python_source import parse_python
from research_service.text import drop_underlines, squash

log = logging.getLogger(__name__)

DOCS_URL: Final = "https://docs.python.org/3/"
# Which page of docs.python.org holds each `pydoc_data.topics` label (the anchor is the label).
TOPIC_PAGES: Final = {
    "reference/simple_stmts.html": "assert assignment augassign break continue del global "
    "import nonlocal pass raise return yield",
    "reference/compound_stmts.html": "async class compound else for function if try while with",
    "reference/expressions.html": "atom-identifiers atom-literals attribute-references await "
    "binary bitwise booleans calls comparisons conversions dict exprlists in lambda lists "
    "operator-summary power shifting slicings subscriptions unary",
    "reference/datamodel.html": "attribute-access callable-types context-managers "
    "customization numeric-types objects sequence-types specialnames types",
    "reference/executionmodel.html": "dynamic-features exceptions execmodel naming",
    "reference/lexical_analysis.html": "floating id-classes identifiers imaginary integers "
    "numbers strings",
    "library/stdtypes.html": "bltin-code-objects bltin-ellipsis-object bltin-null-object "
    "bltin-type-objects specialattrs string-methods truth typesfunctions typesmapping "
    "typesmethods typesmodules typesseq typesseq-mutable",
    "library/string.html": "formatstrings",
    "library/pdb.html": "debugger",
}
_PAGE_OF: Final = {label: page for page, labels in TOPIC_PAGES.items() for label in labels.split()}


def topic_refs(path: Path, fingerprint: str) -> list[DocumentRef]:
    """One reference per language reference topic in the `pydoc_data/topics.py` at `path`."""
    return [
        DocumentRef(
            key=f"topic:{label}",
            fingerprint=fingerprint,
            load=functools.partial(_load_topic, path, label, fingerprint),
        )
        for label in _read_topics(str(path), fingerprint)
    ]


@functools.lru_cache(maxsize=1)
def _read_topics(path: str, fingerprint: str) -> dict[str, str]:
    """The `topics` dict of `pydoc_data/topics.py`, read as a literal, never imported."""
    del fingerprint  # only part of the cache key: a changed file is read again
    try:
        tree = parse_python(Path(path).read_bytes(), path)
    except (OSError, SyntaxError, ValueError) as exc:
        log.warning("skipping the language reference topics: %s", exc)
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "topics" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
    return {}


def _load_topic(path: Path, label: str, fingerprint: str) -> Document | None:
    text = _read_topics(str(path), fingerprint).get(label)
    if text is None:
        return None
    first, _, rest = drop_underlines(text).strip().partition("\n")
    title, body = squash(first) or label, rest.strip()
    page = _PAGE_OF.get(label, "reference/index.html")
    return Document(
        key=f"topic:{label}",
        title=title,
        url=f"{DOCS_URL}{page}#{label}",
        text=body,
        fingerprint=fingerprint,
    )
