"""Plain-text helpers for the corpus index, the page reader, the builtin model and input checks."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Final

DEFAULT_MIN_PASSAGE: Final = 300
DEFAULT_MAX_PASSAGE: Final = 800
DEFAULT_SNIPPET_CHARS: Final = 400
SECTION_LINE_CHARS: Final = 200
ELLIPSIS: Final = "…"

_STOPWORD_TEXT: Final = """
    a about above after again against all also am an and any are aren as at be because been
    before being below between both but by can cannot could couldn d did didn do does doesn
    doing don done down during each either else etc ever every few for from further get gets
    got had hadn has hasn have haven having he her here hers herself him himself his how i if
    in into is isn it its itself just ll m me might more most much must mustn my myself need
    needs no nor not now of off on once one only or other ought our ours ourselves out over own
    please s same shall shan she should shouldn so some such t than that the their theirs
    them themselves then there these they this those through to too under until up upon us use
    used uses using ve very via want wants was wasn way ways we were weren what whats when
    where whether which while who whom whose why will with within without won would wouldn y
    yes yet you your yours yourself yourselves
"""
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())

# A word, or a dotted identifier such as `asyncio.gather` kept whole.
_TERM = re.compile(r"\w+(?:\.\w+)*")
_HAS_ALNUM = re.compile(r"[^\W_]")
# A sentence ends at . ! ? (or an ellipsis) followed by space and something that starts a
# sentence: a capital, a digit, or a `code` heading such as "class `json.JSONDecoder`:".
# Requiring that keeps "e.g. foo" and "json.dumps" inside one sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=`|(?:class|coroutine) `|[\"'(\[*]?[A-Z0-9])")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
_SPACE = re.compile(r"\s+")
# Bounded: a role has a few parts (`:py:func:`), and ":a:a:a…" must not be read again from
# every colon (quadratic: seconds for 32 KB of it).
_ROLE = re.compile(r":(?:[\w-]{1,40}:){1,4}`~?([^`<\n]{1,500}?)(?:\s*<[^>\n]{0,500}>)?`")
_LITERAL = re.compile(r"``(.+?)``")
_UNDERLINE = re.compile(r"^[ \t]*([*=\-~^#+])\1{2,}[ \t]*$", re.MULTILINE)
_SUFFIXES: Final = ("ing", "ed", "es", "s", "e")


def words(text: str) -> list[str]:
    """Every word and dotted identifier in `text`, lowercased, in order."""
    return [t for t in _TERM.findall(text.lower()) if _HAS_ALNUM.search(t)]


def key_terms(text: str) -> list[str]:
    """The distinct non-stopword terms of `text`, in order of first appearance."""
    seen: dict[str, None] = {}
    for word in words(text):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)


@functools.lru_cache(maxsize=1 << 16)  # a corpus repeats the same few thousand words
def stem(word: str) -> str:
    """A crude stem (parse, parses, parsing -> par) good enough to compare terms."""
    for _ in range(2):
        if word.endswith("ss"):
            break  # class, process, address: not a plural
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                break
        else:
            break
    return word


def stems(terms: Iterable[str]) -> set[str]:
    """The stems of `terms`; identifiers also give their parts (and `first.last` if dotted)."""
    out: set[str] = set()
    for term in terms:
        parts = term.split(".")
        if len(parts) > 1:
            out.add(term)
            # `asyncio.tasks.gather` is what the docs call `asyncio.gather`.
            out.add(f"{parts[0]}.{parts[-1]}")
        # Like the index's tokenizer, `parse_float` also counts as `parse` and `float`.
        for part in "_".join(parts).split("_"):
            if part and part not in STOPWORDS:
                out.add(stem(part))
        if "_" in term and len(parts) == 1:
            out.add(term)
    return out


def encodable(text: str) -> bool:
    r"""Whether `text` can be written out as UTF-8: it holds no lone surrogate.

    JSON's `\ud800` escapes survive `json.loads` as lone surrogates, which no event, record
    or log line can carry, and which yarl drops from a URL without a word.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def well_formed(text: str) -> str:
    """`text` with surrogate pairs joined and lone surrogates replaced by U+FFFD.

    For text from servers the service does not control (search results, pages, a model's
    replies): one lone surrogate in a title or a token would make the run's events unsendable.
    """
    if encodable(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def squash(text: str) -> str:
    """`text` with every run of whitespace turned into one space."""
    return _SPACE.sub(" ", text).strip()


def sentences(text: str) -> list[str]:
    """Split `text` into sentences, whitespace squashed."""
    out: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        flat = squash(paragraph)
        if flat:
            out.extend(s for s in _SENTENCE_END.split(flat) if s)
    return out


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 1)]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" \n,;:-") + ELLIPSIS


def passages(
    text: str, *, min_chars: int = DEFAULT_MIN_PASSAGE, max_chars: int = DEFAULT_MAX_PASSAGE
) -> list[str]:
    """Split `text` into passages of about `min_chars`..`max_chars` on paragraph boundaries."""
    units: list[str] = []
    for raw in _PARAGRAPH_BREAK.split(text):
        paragraph = raw.strip()
        if not paragraph:
            continue
        if len(paragraph) <= max_chars:
            units.append(paragraph)
        else:
            units.extend(_split_long(paragraph, max_chars))
    chunks: list[str] = []
    current = ""
    for unit in units:
        full = len(current) + 2 + len(unit) > max_chars
        if current and (full or (len(current) >= min_chars and _opens_section(unit))):
            chunks.append(current)
            current = unit
        else:
            current = f"{current}\n\n{unit}" if current else unit
    if current:
        # A short tail reads better glued to its predecessor than standing alone.
        if chunks and len(current) < min_chars // 2 and len(chunks[-1]) + len(current) < max_chars:
            chunks[-1] = f"{chunks[-1]}\n\n{current}"
        else:
            chunks.append(current)
    return chunks


def _opens_section(paragraph: str) -> bool:
    """Whether a paragraph starts with a short line ending in `:`, like "`json.dumps(obj)`:".

    A passage that starts at such a line carries the name of what it explains.
    """
    first = paragraph.split("\n", 1)[0].rstrip()
    return len(first) <= SECTION_LINE_CHARS and first.endswith(":")


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    """Cut one over-long paragraph into pieces at sentence, then word, boundaries."""
    pieces: list[str] = []
    current = ""
    for whole in sentences(paragraph):
        sentence = whole
        while len(sentence) > max_chars:
            head = sentence[:max_chars]
            space = head.rfind(" ")
            cut = space if space > max_chars // 2 else max_chars
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut].rstrip())
            sentence = sentence[cut:].lstrip()
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces


def snippet(text: str, terms: Iterable[str], *, limit: int = DEFAULT_SNIPPET_CHARS) -> str:
    """The part of `text` (about `limit` chars) from the sentence that best matches `terms`.

    Sentences are joined by spaces within a paragraph and by a newline between paragraphs,
    so a docstring heading without a full stop does not run into the next sentence.
    """
    wanted = stems(terms)
    parts = [
        (number, sentence)
        for number, paragraph in enumerate(_PARAGRAPH_BREAK.split(text))
        for sentence in sentences(paragraph)
    ]
    if not parts:
        return ""
    hits = [len(wanted & stems(words(sentence))) for _, sentence in parts]
    start = hits.index(max(hits))
    # When the match is near the end, some text before it is better than a short snippet.
    while start > 0 and sum(len(s) + 1 for _, s in parts[start - 1 :]) < limit // 2:
        start -= 1
    pieces: list[str] = []
    for index in range(start, len(parts)):
        number, sentence = parts[index]
        if index > start:
            pieces.append(" " if parts[index - 1][0] == number else "\n")
        pieces.append(sentence)
        if sum(map(len, pieces)) > limit:
            break
    return shorten("".join(pieces), limit)


def clean_rest(text: str) -> str:
    """ReST made readable: roles and ``literals`` as `code`, a trailing `::` as `:`."""
    text = drop_underlines(text)
    text = _ROLE.sub(r"`\1`", text)
    text = _LITERAL.sub(r"`\1`", text)
    return text.replace("::\n", ":\n").strip()


def drop_underlines(text: str) -> str:
    """`text` without reST title underlines (`=====`), which leave a paragraph break."""
    return _UNDERLINE.sub("", text)
