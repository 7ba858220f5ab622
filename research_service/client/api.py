"""The JSON endpoints of a research-service, called over HTTP like any other client would."""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

import aiohttp

from research_service import net
from research_service.errors import RunRefused, ServiceUnreachable
from research_service.web.problems import detail_of

#: Time allowed for a JSON request (create, snapshot, cancel), connecting included.
REQUEST_TIMEOUT_S = 30.0


async def problem_detail(response: aiohttp.ClientResponse) -> str:
    """What a non-2xx answer says: the problem's detail, else its status and first line."""
    body = await response.read()
    detail = detail_of(body)
    if detail is not None:
        return detail
    text = body.decode("utf-8", "replace").strip()
    first = text.splitlines()[0][:200] if text else response.reason or ""
    return f"HTTP {response.status} {first}".strip()


class ServiceClient:
    """Create, inspect and cancel runs on the service at `base_url` (e.g. http://host:8080)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/") + "/"

    def url(self, path: str) -> str:
        """An absolute URL for a path the service returned (`/v1/runs/…`)."""
        return urljoin(self.base_url, path.lstrip("/"))

    async def create(self, question: str, options: dict[str, int]) -> dict[str, Any]:
        """`POST /v1/runs`: the created run's body."""
        body: dict[str, Any] = {"question": question}
        if options:
            body["options"] = options
        return await self._json("POST", "v1/runs", body=body)

    async def snapshot(self, run_id: str) -> dict[str, Any]:
        """`GET /v1/runs/{id}`: the run's snapshot."""
        return await self._json("GET", f"v1/runs/{run_id}")

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """`POST /v1/runs/{id}/cancel`."""
        return await self._json("POST", f"v1/runs/{run_id}/cancel")

    async def _json(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]:
        url = self.url(path)
        try:
            async with self.session.request(
                method, url, json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            ) as response:
                if response.status >= 400:
                    detail = await problem_detail(response)
                    if response.status < 500:
                        raise RunRefused(detail, status=response.status)
                    raise ServiceUnreachable(f"{method} {url} failed: {detail}")
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceUnreachable(
                f"cannot reach the service at {self.base_url} ({describe(exc)}); is it running? "
                "Start it with `research-service serve`, or leave out --server to use an "
                "in-process one"
            ) from exc
        if not isinstance(data, dict):
            raise ServiceUnreachable(f"{method} {url} answered something that is not JSON")
        return data


def describe(exc: BaseException) -> str:
    """A short reason for a failure of the service's connection or stream."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "no data for too long"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the connection closed in the middle of the response"
    return net.describe(exc)
