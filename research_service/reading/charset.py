"""Bytes of a page to text: byte-order mark, declared charset, <meta> charset, then detection."""

from __future__ import annotations

import codecs
from html.parser import HTMLParser
from typing import Final

from charset_normalizer import from_bytes

from research_service.text import well_formed

# Browsers look for <meta charset> in the first 1024 bytes only (WHATWG "prescan").
META_PRESCAN_BYTES: Final = 1024
# Detection reads a head and a tail; whole multi-megabyte pages would be slow to classify.
DETECT_SAMPLE_BYTES: Final = 64 * 1024
BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
FALLBACK_CHARSET: Final = "utf-8"
#: Python codecs that are no page's charset: punycode decodes in time that grows with the
#: square of its input (a declared `charset=punycode` and 2 MB took minutes), and idna
#: decodes host names, not text.
NOT_FOR_PAGES: Final = frozenset({"punycode", "idna"})


class _MetaCharset(HTMLParser):
    """Finds the charset a page's <meta charset> or <meta http-equiv> declares."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.charset: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "meta" or self.charset is not None:
            return
        values = {name.lower(): value or "" for name, value in attrs}
        if values.get("charset"):
            self.charset = values["charset"].strip()
        elif values.get("http-equiv", "").lower() == "content-type":
            _, _, params = values.get("content", "").partition(";")
            name, _, value = params.strip().partition("=")
            if name.strip().lower() == "charset" and value:
                self.charset = value.strip().strip("'\"")


def known_codec(name: str | None) -> str | None:
    """`name` as a Python codec name, or None if Python does not know it or no page uses it."""
    if not name:
        return None
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return None
    return None if codec in NOT_FOR_PAGES else codec


def meta_charset(head: bytes) -> str | None:
    """The charset declared by a <meta> tag near the start of an HTML document, if any."""
    parser = _MetaCharset()
    parser.feed(head[:META_PRESCAN_BYTES].decode("ascii", errors="replace"))
    charset = known_codec(parser.charset)
    # A <meta> can only be read if the bytes are ASCII-compatible, so UTF-16/32 there is a lie
    # (WHATWG says to take it as UTF-8).
    if charset is not None and charset.startswith(("utf-16", "utf-32")):
        return "utf-8"
    return charset


def detect(body: bytes) -> str | None:
    """The most likely charset of `body`, or None if nothing fits."""
    if len(body) > DETECT_SAMPLE_BYTES:
        half = DETECT_SAMPLE_BYTES // 2
        body = body[:half] + body[-half:]
    best = from_bytes(body).best()
    return None if best is None else known_codec(best.encoding)


def decode(body: bytes, *, declared: str | None, html: bool) -> str:
    """`body` as text, in the first charset that applies; undecodable bytes become U+FFFD.

    A declared codec that is not a text encoding (base64, rot13, idna …) counts as none.
    """
    for bom, name in BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(name, errors="replace")
    charset = known_codec(declared) or (meta_charset(body) if html else None)
    if charset is not None:
        try:
            # Some decode to lone surrogates (utf-7, unicode_escape), which no event can carry.
            return well_formed(body.decode(charset, errors="replace"))
        except (LookupError, UnicodeError):
            pass  # "is not a text encoding", or a codec without errors="replace"
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode(detect(body) or FALLBACK_CHARSET, errors="replace")
