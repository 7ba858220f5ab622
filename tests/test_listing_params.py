"""`GET /v1/runs` takes only the `limit` and `before` values it documents: forgeries are a 400."""

from __future__ import annotations

import base64

import httpx
import pytest

from research_service.web.validation import encode_cursor
from tests.conftest import Service

RUN_ID = "0123456789abcdef"


def forged(text: str) -> str:
    """A cursor-shaped value: the base64url of `text`, as encode_cursor spells its own."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def assert_refused(response: httpx.Response, field: str, says: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["field"] == field
    assert says in problem["detail"]


@pytest.mark.parametrize(
    "cursor",
    [
        forged(f"inf|{RUN_ID}"),
        forged(f"-inf|{RUN_ID}"),
        forged(f"nan|{RUN_ID}"),
        forged(f"1e3|{RUN_ID}"),  # a number encode_cursor would write as 1000.0
        forged(f" 1000.0|{RUN_ID}"),
        forged("1000.0|not-a-run-id"),
        forged("1000.0|"),
        encode_cursor((1000.0, RUN_ID)) + "==",  # padding encode_cursor never writes
    ],
)
async def test_a_forged_cursor_is_a_400_naming_before(
    service: Service, client: httpx.AsyncClient, cursor: str
) -> None:
    response = await client.get(service.url("/v1/runs"), params={"before": cursor})
    assert_refused(response, "before", "not a cursor this service issued")


@pytest.mark.parametrize("limit", ["5_0", "+5", " 5", "5 ", "\uff15", "0x10", "1e1"])
async def test_a_limit_that_is_not_plain_digits_is_a_400(
    service: Service, client: httpx.AsyncClient, limit: str
) -> None:
    response = await client.get(service.url("/v1/runs"), params={"limit": limit})
    assert_refused(response, "limit", f"limit must be an integer from 1 to 100, got {limit!r}")


async def test_a_cursor_the_service_issued_still_pages(
    service: Service, client: httpx.AsyncClient
) -> None:
    for question in ("one?", "two?", "three?"):
        await service.create(client, question)
    first = (await client.get(service.url("/v1/runs"), params={"limit": "2"})).json()
    assert first["next"] is not None
    rest = await client.get(service.url("/v1/runs"), params={"before": first["next"]})
    assert rest.status_code == 200, rest.text
    assert [run["question"] for run in rest.json()["runs"]] == ["one?"]


async def test_a_negative_limit_says_the_range(service: Service, client: httpx.AsyncClient) -> None:
    response = await client.get(service.url("/v1/runs"), params={"limit": "-3"})
    assert_refused(response, "limit", "limit must be from 1 to 100, got -3")
