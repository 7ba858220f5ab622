"""A fetched page's title and main text: trafilatura for HTML, plain text passed through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from research_service.corpus.files import html_text
from research_service.reading.charset import decode
from research_service.reading.errors import PageEmpty
from research_service.reading.fetch import RawPage
from research_service.text import shorten

TITLE_CHARS: Final = 200
INCLUDE_TABLES: Final = True  # tables often hold the facts a question asks about
# Less than this is a menu or a cookie notice that survived extraction, nothing to cite.
MIN_TEXT_CHARS: Final = 80
# Past this many tags, trafilatura's time grows with their square on some layouts (one table
# row of 200,000 cells: 261 s), so a page this big is read by the corpus's linear reader. A
# large ordinary page has some tens of thousands (30,000 tags: about a second).
MAX_EXTRACTED_TAGS: Final = 50_000


@dataclass(frozen=True, slots=True)
class Extracted:
    """A page's title and main text; paragraphs separated by blank lines."""

    title: str
    text: str


def load() -> None:
    """Import trafilatura (a quarter of a second), when a page reader opens.

    Not with every process that imports this package: a service on its local search reads
    no pages.
    """
    import trafilatura  # noqa: F401, PLC0415


def extract(raw: RawPage) -> Extracted:
    """Title and main text of `raw`; raise PageEmpty if it has none. CPU-bound: run in a thread."""
    text = decode(raw.body, declared=raw.charset, html=raw.is_html)
    extracted = _from_html(text, url=raw.final_url) if raw.is_html else _from_plain(text)
    if extracted is None or len(extracted.text) < MIN_TEXT_CHARS:
        raise PageEmpty(url=raw.final_url)
    return Extracted(title=extracted.title or raw.final_url, text=extracted.text)


def _from_html(html: str, *, url: str) -> Extracted | None:
    """Main text by trafilatura, precise first; a second, recall-leaning pass if that is empty.

    A page of more than MAX_EXTRACTED_TAGS tags has its visible text read in one pass instead.
    """
    if html.count("<") > MAX_EXTRACTED_TAGS:
        title, text = html_text(html)
        return Extracted(title=shorten(title, TITLE_CHARS), text=_paragraphs(text))
    import trafilatura  # noqa: PLC0415 - loaded by `load()` when the reader opened
    from trafilatura.settings import Document  # noqa: PLC0415

    for precise in (True, False):
        document = trafilatura.bare_extraction(
            html,
            url=url,
            include_comments=False,
            include_tables=INCLUDE_TABLES,
            favor_precision=precise,
            favor_recall=not precise,
            with_metadata=True,
            deduplicate=False,
        )
        if isinstance(document, Document) and document.text:
            title = shorten(" ".join((document.title or "").split()), TITLE_CHARS)
            return Extracted(title=title, text=_paragraphs(document.text))
    return None


def _from_plain(text: str) -> Extracted:
    """Plain text as it is; its first non-empty line stands in for a title."""
    body = text.replace("\r\n", "\n").strip()
    first = next((line.strip() for line in body.splitlines() if line.strip()), "")
    return Extracted(title=shorten(first, TITLE_CHARS), text=body)


def _paragraphs(text: str) -> str:
    """The one-line-per-block text of trafilatura, blank lines between blocks, as passages want."""
    return "\n\n".join(line.strip() for line in text.splitlines() if line.strip())
