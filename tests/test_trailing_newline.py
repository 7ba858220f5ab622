"""A trailing newline is not part of a valid name, id or key (a regular expression's `$`
matches before one; every shape the service checks ends at the string's end, `\\Z`)."""

from __future__ import annotations

import httpx
import pytest

from research_service.auth.keys import check_name, key_id_of
from research_service.events import is_run_id
from tests.conftest import Service


def test_a_key_name_with_a_trailing_newline_is_refused() -> None:
    assert check_name("alice") == "alice"
    with pytest.raises(ValueError, match="is not valid"):
        check_name("alice\n")


def test_a_key_or_run_id_with_a_trailing_newline_is_not_one() -> None:
    key = "rsk_0123456789ab_" + "A" * 43
    assert key_id_of(key) == "0123456789ab"
    assert key_id_of(key + "\n") is None
    assert is_run_id("0123456789abcdef")
    assert not is_run_id("0123456789abcdef\n")


async def test_a_run_id_with_a_trailing_newline_in_a_url_is_refused(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id = await service.create(client)
    await service.wait_done(run_id)
    assert (await client.get(service.url(f"/v1/runs/{run_id}"))).status_code == 200
    snapshot = await client.get(service.url(f"/v1/runs/{run_id}%0A"))
    assert snapshot.status_code in (400, 404)
    assert snapshot.headers["Content-Type"].startswith("application/problem+json")
    events = await client.get(service.url(f"/v1/runs/{run_id}%0A/events"))
    assert events.status_code in (400, 404)
