"""A user's folder as a corpus: Markdown, reStructuredText, plain text, HTML and PDF files."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import stat as stat_mode
from html.parser import HTMLParser
from pathlib import Path
from typing import Final

from research_service.corpus.documents import Document, DocumentRef
from research_service.corpus.pdf import MAX_PDF_BYTES, pdf_text
from research_service.regular_files import read_regular
from research_service.text import clean_rest, squash

log = logging.getLogger(__name__)

# Bump when the extracted text changes shape, so every index re-reads the folder.
#: In every document's fingerprint: a new one re-reads every file (files-2: the extractors
#: read in one pass, and a document's URL names its place in the folder).
EXTRACTOR_VERSION: Final = "files-2"
SUFFIXES: Final = frozenset({".md", ".markdown", ".txt", ".rst", ".html", ".htm", ".pdf"})
# Bigger files are almost always data dumps or logs, not prose worth citing.
MAX_FILE_BYTES: Final = 5_000_000
DROPPED_TAGS: Final = frozenset({"script", "style", "nav", "header", "footer", "aside", "noscript"})
BLOCK_TAGS: Final = frozenset(
    {"p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "tr", "table", "pre", "blockquote",
     "section", "article", "main", "h1", "h2", "h3", "h4", "h5", "h6", "figcaption", "hr"}
)  # fmt: skip
HEADINGS: Final = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# Elements that never have an end tag, so they must not open a dropped region.
VOID_TAGS: Final = frozenset({"br", "hr", "img", "input", "meta", "link", "source", "wbr"})

# Every pattern is linear in what it reads (no part that can end in several places followed by
# one that must fail): "# Notes" + 8,000 spaces + "x" once took minutes to match, and a line of
# 100,000 "[" as long. A heading's closing #s are stripped after the match (_heading_text);
# a link's text and target stay within one line, a bounded length, and stop at the next "[".
_MD_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*)$")
_MD_IMAGE = re.compile(r"!\[([^\][\n]{0,1000})\]\([^)[\n]{0,2000}\)")
_MD_LINK = re.compile(r"\[([^\][\n]{1,1000})\]\([^)[\n]{0,2000}\)")
# A "<" that no ">" closes before the next "<": text, not a tag (CPython 3.11's HTML parser
# looks for its end again from every such "<", so 40,000 of them took seconds).
_UNCLOSED_LT = re.compile(r"<(?=[^<>]*(?:<|\Z))")
_MD_FENCE = re.compile(r"^\s*(```|~~~)")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)
_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+<>:.])\1{2,}\s*$")


def folder_documents(root: Path) -> list[DocumentRef]:
    """References to every supported file under `root`, skipping hidden files and folders."""
    refs: list[DocumentRef] = []
    base = root.resolve()
    # The folder too: an index given a moved or copied folder re-reads it, as its URLs name
    # the folder (unchanged files kept the old folder's links).
    where = hashlib.sha256(os.fsencode(base)).hexdigest()[:12]
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder, name)
            if name.startswith(".") or path.suffix.lower() not in SUFFIXES:
                continue
            try:
                stat = path.stat()
            except OSError as exc:
                # A dangling link, a file gone since the listing: skipped, and counted so.
                key = path.relative_to(root).as_posix()
                refs.append(
                    DocumentRef(key, f"unreadable:{exc}", functools.partial(_gone, path, exc))
                )
                continue
            fingerprint = f"{EXTRACTOR_VERSION}:{where}:{stat.st_mtime_ns}:{stat.st_size}"
            key = path.relative_to(root).as_posix()
            # Linked to by its place in the folder, not where a link points: the path is
            # what --base-url rebases, and a link's target may be none of its readers' business.
            url = (base / key).as_uri()
            load = functools.partial(load_file, path, key=key, fingerprint=fingerprint, url=url)
            if not _utf8(key):
                # Its key and URL cannot be stored: one such file failed the whole sync.
                key = os.fsencode(key).decode("utf-8", "replace")
                load = functools.partial(_not_utf8, key)
            elif not stat_mode.S_ISREG(stat.st_mode):
                # Never opened: a FIFO would block the sync, a link to /dev/zero fill memory.
                load = functools.partial(_not_regular, path)
            elif path.is_symlink() and not path.resolve().is_relative_to(base):
                # As links to folders are not followed: the corpus is what is in the folder.
                load = functools.partial(_outside, path)
            refs.append(DocumentRef(key=key, fingerprint=fingerprint, load=load))
    return refs


def _utf8(name: str) -> bool:
    """Whether a file name as the OS gave it (undecodable bytes as surrogates) is UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _gone(path: Path, exc: OSError) -> Document | None:
    """The load of a file that could not even be looked at: skipped, and said so."""
    log.warning("skipping %s: %s", path, exc.strerror or exc)
    return None


def _not_utf8(key: str) -> Document | None:
    """The load of a file whose name is not UTF-8: skipped, and said so."""
    log.warning("skipping %s: its name is not UTF-8; rename it", key)
    return None


def _not_regular(path: Path) -> Document | None:
    """The load of a FIFO, socket or device: skipped, and said so."""
    log.warning("skipping %s: not a regular file (a FIFO, socket or device)", path)
    return None


def _outside(path: Path) -> Document | None:
    """The load of a link to a file outside the folder: skipped, and said so."""
    log.warning(
        "skipping %s: a link to %s, outside the folder; copy the file in to index it",
        path,
        path.resolve(),
    )
    return None


def load_file(path: Path, *, key: str, fingerprint: str, url: str) -> Document | None:
    """Read one file into a document, or log why not and return None."""
    suffix = path.suffix.lower()
    limit = MAX_PDF_BYTES if suffix == ".pdf" else MAX_FILE_BYTES
    try:
        contents = read_regular(path, limit)
        if contents is None:
            log.warning("skipping %s: larger than %d bytes", path, limit)
            return None
        data = contents.data
        if suffix == ".pdf":
            return _document(path, pdf_text(path, data), key=key, fingerprint=fingerprint, url=url)
        source = data.decode("utf-8-sig")
    except OSError as exc:
        log.warning("skipping %s: %s", path, exc)
        return None
    except UnicodeDecodeError as exc:
        log.warning("skipping %s: not UTF-8 text (%s); re-save it as UTF-8", path, exc.reason)
        return None
    if suffix in (".html", ".htm"):
        title, text = html_text(source)
    elif suffix in (".md", ".markdown"):
        title, text = markdown_text(source)
    elif suffix == ".rst":
        title, text = rst_text(source)
    else:
        title, text = "", source.strip()
    return _document(path, (title, text), key=key, fingerprint=fingerprint, url=url)


def _document(
    path: Path, extracted: tuple[str, str] | None, *, key: str, fingerprint: str, url: str
) -> Document | None:
    """The document of a file's extracted (title, text); None when nothing was extracted."""
    if extracted is None:
        return None
    title, text = extracted
    return Document(
        key=key,
        title=title or path.stem,
        url=url,
        text=text,
        fingerprint=fingerprint,
    )


def markdown_text(source: str) -> tuple[str, str]:
    """The first heading and the text of a Markdown file, without its markup."""
    title = ""
    lines: list[str] = []
    previous = ""
    in_code = False
    for line in _FRONT_MATTER.sub("", source.replace("\r\n", "\n")).split("\n"):
        if _MD_FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            lines.append(line)  # a `# comment` in a code block is not a heading
            continue
        heading = _MD_HEADING.match(line)
        if heading:
            title = title or _heading_text(heading.group(2))
        elif previous.strip() and re.fullmatch(r"\s*(=+|-+)\s*", line):
            title = title or previous.strip()  # a Setext heading: text over ==== or ----
            continue
        text = _heading_text(heading.group(2)) if heading else line
        previous = _MD_LINK.sub(r"\1", _MD_IMAGE.sub(r"\1", text))
        lines.append(previous)
    return title, "\n".join(lines).strip()


def _heading_text(text: str) -> str:
    """An ATX heading's text without its closing #s and the spaces around them."""
    return text.rstrip().rstrip("#").rstrip()


def rst_text(source: str) -> tuple[str, str]:
    """The first section title and the text of a reStructuredText file."""
    title = ""
    lines: list[str] = []
    for line in source.replace("\r\n", "\n").split("\n"):
        if _RST_ADORNMENT.match(line):
            if lines and lines[-1].strip() and not title:
                title = lines[-1].strip()
            continue
        if line.startswith(".. "):
            # Directives and comments are markup; only `.. note:: text` carries prose.
            _, marker, rest = line.partition(":: ")
            if marker and rest.strip():
                lines.append(rest)
            continue
        lines.append(line)
    return title, clean_rest("\n".join(lines))


def html_text(source: str) -> tuple[str, str]:
    """The first heading (else `<title>`) and the visible text of an HTML page."""
    parser = _TextParser()
    parser.feed(_UNCLOSED_LT.sub("&lt;", source) if "<" in source else source)
    parser.close()
    return parser.heading or parser.title, parser.text()


class _TextParser(HTMLParser):
    """Collects visible text by block, dropping boilerplate elements and their content."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.heading = ""
        self._blocks: list[str] = []
        self._current: list[str] = []
        self._dropped = 0
        self._in_title = False
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROPPED_TAGS and tag not in VOID_TAGS:
            self._dropped += 1
        elif tag == "title":
            self._in_title = True
        elif tag in BLOCK_TAGS:
            self._flush()
            if tag in HEADINGS and not self.heading and not self._dropped:
                self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in DROPPED_TAGS:
            self._dropped = max(0, self._dropped - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in BLOCK_TAGS:
            if tag in HEADINGS and self._heading is not None:
                self.heading = squash("".join(self._heading))
                self._heading = None
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._dropped:
            return
        if self._in_title:
            self.title = squash(self.title + " " + data)
            return
        self._current.append(data)
        if self._heading is not None:
            self._heading.append(data)

    def _flush(self) -> None:
        block = squash("".join(self._current))
        if block:
            self._blocks.append(block)
        self._current = []

    def text(self) -> str:
        """The collected blocks, one paragraph each."""
        self._flush()
        return "\n\n".join(self._blocks)
