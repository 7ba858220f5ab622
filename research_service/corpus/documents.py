"""What a corpus source hands the index: documents, and cheap references that load them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Document:
    """One searchable text with a stable key and a fingerprint that changes with its content.

    `name` is what the text documents, as a reader would type it (a module's dotted name such
    as `json` or `urllib.request`); a query that names it ranks the document first.
    """

    key: str
    title: str
    url: str
    text: str
    fingerprint: str
    name: str = ""

    def ref(self) -> DocumentRef:
        """A reference that loads this already-loaded document."""
        return DocumentRef(key=self.key, fingerprint=self.fingerprint, load=lambda: self)


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """A document not read yet: its key and fingerprint cost a `stat`, `load` reads the text.

    `load` returns None when the document cannot be read; the source has logged why.
    """

    key: str
    fingerprint: str
    load: Callable[[], Document | None]
