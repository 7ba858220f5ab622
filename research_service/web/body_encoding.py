"""A request body's Content-Encoding, decoded by the service, never past the body limit.

aiohttp's own decoding (`auto_decompress`) inflates a body as it arrives, before a handler
decides to read it, and inflates what a handler left unread too, as it drains it before the
next request: in one turn of the event loop, so a 2 MB gzip body sent to `GET /healthz` (1 GB
of zeros inflated) held the loop, every stream with it, for seconds. The service serves with
`auto_decompress` off (`web.serving`); the one reader of bodies (`validation.json_object`)
decodes here, and at most one byte past the limit is ever inflated, whatever the body holds.
"""

from __future__ import annotations

import zlib
from typing import Final

from aiohttp.compression_utils import (
    BrotliDecompressor,
    DecompressionBaseHandler,
    ZLibDecompressor,
    ZSTDDecompressor,
)

#: The codings a body is decoded from (those aiohttp decodes); any other is taken as it is.
CODINGS: Final = frozenset({"gzip", "deflate", "br", "zstd"})
#: zlib's window bits for a gzip stream (a gzip header and trailer around deflate).
GZIP_WBITS: Final = 16 + zlib.MAX_WBITS


class UndecodableBody(ValueError):
    """The body does not decode as its Content-Encoding says (the message says which)."""


def coding_of(header: str) -> str | None:
    """The coding a Content-Encoding value names, if the service decodes it (as aiohttp did)."""
    value = header.lower() if header.isascii() else ""
    return value if value in CODINGS else None


def decoded(raw: bytes, coding: str, *, limit: int) -> bytes:
    """`raw` decoded from `coding`: all of it, or `limit + 1` bytes when it decodes to more."""
    if not raw:
        return raw
    try:
        if coding == "gzip":
            return _gunzip(raw, limit=limit)
        decoder = _decoder(coding, raw)
        body = decoder.decompress_sync(raw, max_length=limit + 1)
        # A deflate stream must end: a cut one is refused (as aiohttp refused it).
        if coding == "deflate" and len(body) <= limit and not getattr(decoder, "eof", True):
            raise ValueError("deflate stream cut short")
    except Exception:  # noqa: BLE001 -- every codec's own error is "this does not decode"
        raise UndecodableBody(f"Can not decode content-encoding: {coding}") from None
    return body


def _gunzip(raw: bytes, *, limit: int) -> bytes:
    """Every member of a gzip body, or its first `limit + 1` bytes.

    A member cut short (its trailer, its data, even its header) is refused: aiohttp's decoder
    hands back what it could decode, so a cut body passed as a shorter one, or as none.
    """
    body = b""
    rest = raw
    while rest:
        member = zlib.decompressobj(wbits=GZIP_WBITS)
        body += member.decompress(rest, limit + 1 - len(body))
        if len(body) > limit:
            return body
        if not member.eof:
            raise ValueError("gzip stream cut short")
        rest = member.unused_data
    return body


def _decoder(coding: str, raw: bytes) -> DecompressionBaseHandler:
    if coding == "br":
        return BrotliDecompressor()
    if coding == "zstd":
        return ZSTDDecompressor()
    # RFC 1950's header says deflate (CM = 8); without it, a raw deflate stream, as browsers
    # and aiohttp accept it.
    return ZLibDecompressor(encoding=coding, suppress_deflate_header=raw[0] & 0xF != 8)
