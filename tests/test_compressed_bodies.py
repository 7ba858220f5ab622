"""Compressed request bodies cost what the body limit allows, never what they inflate to.

A gzip body of about 60 KiB (under the 64 KiB limit) inflates to 60 MiB; one of 250 KiB sent to
an endpoint that reads no body inflates to 256 MiB. aiohttp decoded both whole, in one turn of
the event loop (every stream stalled meanwhile). The service decodes only what it reads, at
most one byte past the limit. Each test counts the bytes inflated, through the decompressors
the codings go through: zlib's own for gzip, aiohttp's (which the service reuses) for the
others.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

import pytest
from aiohttp.compression_utils import ZLibDecompressor

from research_service.web import body_encoding
from research_service.web.validation import MAX_BODY_BYTES
from tests.conftest import Service

READ_TIMEOUT_S = 20.0


class CountingZlib:
    """`zlib` as the service's gzip decoding sees it, its decompressors' output counted."""

    def __init__(self, total: list[int]) -> None:
        self.total = total
        self.MAX_WBITS = zlib.MAX_WBITS

    def decompressobj(self, wbits: int) -> Any:
        inner = zlib.decompressobj(wbits=wbits)
        total = self.total

        class Counting:
            def decompress(self, data: bytes, max_length: int = 0) -> bytes:
                out = inner.decompress(data, max_length)
                total[0] += len(out)
                return out

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        return Counting()


@pytest.fixture
def inflated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes every gzip/deflate decompressor of this process produced, summed in [0]."""
    total = [0]
    original = ZLibDecompressor.decompress_sync

    def counting(self: ZLibDecompressor, data: bytes, max_length: int = 0) -> bytes:
        out = original(self, data, max_length)
        total[0] += len(out)
        return out

    monkeypatch.setattr(ZLibDecompressor, "decompress_sync", counting)
    monkeypatch.setattr(body_encoding, "zlib", CountingZlib(total))
    return total


def gzip_of_zeros(mib: int, *, prefix: bytes = b"") -> bytes:
    """`prefix` then `mib` MiB of zeros, gzipped (about 1 KiB per MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(prefix)]
    parts += [packer.compress(bytes(1 << 20)) for _ in range(mib)]
    return b"".join([*parts, packer.flush()])


def request(head: str, body: bytes, coding: str) -> bytes:
    lines = [
        f"{head} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Encoding: {coding}",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response with a Content-Length: its status and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return status, await reader.readexactly(length)


async def exchange(service: Service, *requests: bytes) -> list[tuple[int, bytes]]:
    """Send `requests` on one connection (pipelined) and read one response each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.server.port)
    try:
        writer.write(b"".join(requests))
        async with asyncio.timeout(READ_TIMEOUT_S):
            return [await read_response(reader) for _ in requests]
    finally:
        writer.close()


async def test_a_body_that_inflates_past_the_limit_is_413_after_inflating_only_the_limit(
    service: Service, inflated: list[int]
) -> None:
    body = gzip_of_zeros(60, prefix=b'{"question": "')
    assert len(body) < MAX_BODY_BYTES
    ((status, answer),) = await exchange(service, request("POST /v1/runs", body, "gzip"))
    assert status == 413
    assert inflated[0] <= MAX_BODY_BYTES + 1
    problem = json.loads(answer)
    assert problem["type"].endswith("/body-too-large")
    assert problem["detail"] == (
        f"the body decodes (gzip) to more than {MAX_BODY_BYTES} bytes, the limit"
    )
    assert service.manager.active_runs == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(gzip_of_zeros(256), id="256-MiB-of-zeros"),
        pytest.param(b"not gzip at all", id="not-gzip"),
    ],
)
async def test_a_body_no_handler_reads_is_never_inflated(
    service: Service, inflated: list[int], body: bytes
) -> None:
    # The next request on the connection is answered once the unread body has been drained;
    # the connection stays open: what nobody reads cannot fail to decode.
    unread = request("GET /healthz", body, "gzip")
    after = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answers = await exchange(service, unread, after)
    assert [status for status, _ in answers] == [200, 200]
    assert inflated[0] == 0


@pytest.mark.parametrize("coding", ["gzip", "deflate", "GZip"])
async def test_a_compressed_body_within_the_limit_is_read(
    service: Service, inflated: list[int], coding: str
) -> None:
    text = json.dumps({"question": "How do I parse JSON?", "options": {"breadth": 1}}).encode()
    wbits = 31 if coding.lower() == "gzip" else 15
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    body = packer.compress(text) + packer.flush()
    ((status, answer),) = await exchange(service, request("POST /v1/runs", body, coding))
    assert status == 201, answer
    assert json.loads(answer)["question"] == "How do I parse JSON?"
    assert inflated[0] == len(text)


#: Where a compressed body is cut: how many of its bytes are sent, of `n`.
CUTS = {
    "in-its-trailer": lambda n: n - 4,
    "in-its-data": lambda n: n // 2,
    "after-10-bytes": lambda n: 10,
}


@pytest.mark.parametrize("cut", list(CUTS))
@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_compressed_body_cut_short_is_refused_not_read_as_a_shorter_one(
    service: Service, coding: str, cut: str
) -> None:
    """A plan's edit cut short once passed as no body at all: an approval of the plan shown.
    Cut anywhere, a body is refused as undecodable."""
    text = json.dumps({"question": "How do I read a CSV file?", "options": {"breadth": 1}})
    packer = zlib.compressobj(9, zlib.DEFLATED, 31 if coding == "gzip" else 15)
    whole = packer.compress(text.encode()) + packer.flush()
    body = whole[: CUTS[cut](len(whole))]
    ((status, answer),) = await exchange(service, request("POST /v1/runs", body, coding))
    assert status == 400, answer
    problem = json.loads(answer)
    assert problem["type"].endswith("/malformed-request")
    assert problem["detail"] == (
        f"the request body cannot be read: Can not decode content-encoding: {coding}"
    )
    assert service.manager.active_runs == 0
