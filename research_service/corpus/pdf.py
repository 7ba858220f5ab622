"""Text from PDF files (with pypdf): the title and the pages' prose as paragraphs."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from research_service.text import squash

if TYPE_CHECKING:
    from pypdf import PageObject

log = logging.getLogger(__name__)

# PDFs carry images and fonts, so they are allowed to be bigger than text files.
MAX_PDF_BYTES: Final = 50_000_000
# Past this many pages a PDF is a book or a scan; its start is what gets indexed.
MAX_PDF_PAGES: Final = 1_000
# Past this much text, as much as a text file may hold, the rest is not extracted: a small PDF
# whose pages all draw one compressed stream of megabytes took minutes and gigabytes.
MAX_PDF_TEXT_CHARS: Final = 5_000_000
# Past this much CPU time the rest is not extracted either: pages that draw no text from a
# stream of millions of operators pass no text cap (1,000 such pages in a 161 KB file would
# have taken 47 minutes, the index's whole sync waiting).
MAX_PDF_CPU_S: Final = 20.0
TITLE_CHARS: Final = 120
# A line this much shorter than the page's longest ends a paragraph if it ends a sentence.
SHORT_LINE_SHARE: Final = 0.75
# Titles that PDF producers write when the author gave none.
_FILLER_TITLE = re.compile(r"(?i)^(untitled|microsoft word - .*|document\d*|slide \d+)$")
_SENTENCE_END = re.compile(r"[.!?:;)\"\u201d\u2019]$")
# "exam-" at a line end followed by "ple": a word hyphenated by the layout.
_HYPHENATED = re.compile(r"(\w)-\n(?=[a-z])")


def pdf_text(path: Path, data: bytes) -> tuple[str, str] | None:
    """The title and text of the PDF `data` (from `path`); None, with the reason logged, if none."""
    # Imported here: it takes ~80 ms, and most corpora (the stdlib docs) have no PDF.
    from pypdf import PdfReader  # noqa: PLC0415 - see above

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            log.warning("skipping %s: the PDF is password-protected", path)
            return None
        pages = reader.pages[:MAX_PDF_PAGES]
        if len(reader.pages) > MAX_PDF_PAGES:
            log.warning(
                "%s has %d pages; indexing the first %d", path, len(reader.pages), len(pages)
            )
        texts = _page_texts(path, pages)
        meta_title = reader.metadata.title if reader.metadata is not None else None
    # pypdf raises many exception types on malformed files (its own, KeyError, ValueError,
    # zlib.error, RecursionError …); one bad PDF must only skip that file, not stop a sync.
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("skipping %s: not a readable PDF (%s: %s)", path, type(exc).__name__, exc)
        return None
    paragraphs = [p for text in texts for p in page_paragraphs(text)]
    if not paragraphs:
        log.warning("skipping %s: the PDF has no text layer (a scan?); OCR it first", path)
        return None
    title = squash(meta_title or "")
    if not title or _FILLER_TITLE.match(title):
        # Else the first line, which on most documents is the heading.
        first = next(line for text in texts if (line := squash(text.strip().split("\n", 1)[0])))
        title = first if len(first) <= TITLE_CHARS else ""
    return title, "\n\n".join(paragraphs)


def _page_texts(path: Path, pages: Sequence[PageObject]) -> list[str]:
    """The pages' text, up to the page that passes MAX_PDF_TEXT_CHARS or MAX_PDF_CPU_S in all."""
    texts: list[str] = []
    extracted = 0
    started = time.thread_time()
    for page in pages:
        texts.append(page.extract_text())
        extracted += len(texts[-1])
        if len(texts) == len(pages):
            break
        if extracted > MAX_PDF_TEXT_CHARS:
            too_much = f"more than {MAX_PDF_TEXT_CHARS} characters of text"
        elif time.thread_time() - started > MAX_PDF_CPU_S:
            too_much = f"pages that took more than {MAX_PDF_CPU_S:g} s to read"
        else:
            continue
        log.warning("%s holds %s; indexing its first %d pages", path, too_much, len(texts))
        break
    return texts


def page_paragraphs(text: str) -> list[str]:
    """One page's extracted lines joined back into paragraphs.

    PDF text comes as layout lines: a paragraph ends at a blank line, or at a line that ends
    a sentence well short of the page's longest line (the last line of a paragraph).
    """
    text = _HYPHENATED.sub(r"\1", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [squash(line) for line in text.split("\n")]
    width = max((len(line) for line in lines), default=0)
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line)
        if current and (
            not line or (_SENTENCE_END.search(line) and len(line) < width * SHORT_LINE_SHARE)
        ):
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs
