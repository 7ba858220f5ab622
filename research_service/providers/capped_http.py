"""An HTTP transport whose response bodies stop at a size: a model server cannot fill memory.

The OpenAI SDK reads a reply that is not streamed whole, and a streamed one line by line, with
no limit of its own: a server that sends bytes without end (a broken proxy, a hostile server)
would grow the process until the kernel killed it, every other run with it. Read through this
transport, a body past `limit` bytes fails the read with ReplyTooLarge, which the SDK reports as
a failed connection and llm_errors as a reply that is not the API's (`llm_bad_response`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

# The OpenAI SDK's own HTTP library (a fork of httpx): its client takes only its transports.
import httpx2

#: Far above any reply of the Chat Completions API: a whole answer streamed at the largest
#: budget (--max-tokens-per-run), a few hundred bytes of JSON per token, is a few MiB.
MAX_REPLY_BYTES: Final = 32 * 1024 * 1024


class ReplyTooLarge(httpx2.ReadError):
    """A response body went past the transport's limit."""


class CappedTransport(httpx2.AsyncBaseTransport):
    """`inner`, with every response body cut off (ReplyTooLarge) past `limit` bytes."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, *, limit: int = MAX_REPLY_BYTES) -> None:
        self.inner = inner
        self.limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """The response, its body read through the cap."""
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _Capped(response.stream, request, self.limit)
        return response

    async def aclose(self) -> None:
        """Close the transport underneath."""
        await self.inner.aclose()


class _Capped(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, request: httpx2.Request, limit: int) -> None:
        self.inner, self.request, self.limit = inner, request, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = 0
        async for chunk in self.inner:
            read += len(chunk)
            if read > self.limit:
                raise ReplyTooLarge(
                    f"the reply is larger than {self.limit // (1024 * 1024)} MiB",
                    request=self.request,
                )
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()
