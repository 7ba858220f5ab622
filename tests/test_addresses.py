"""URLs as messages show them: no password, wherever it is written."""

from __future__ import annotations

import pytest

from research_service.addresses import public_url, redact_url, without_userinfo


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:p@ss@host:1/v1", "http://host:1/v1"),  # an "@" in the password
        ("http://host/search?q=a@b", "http://host/search?q=a@b"),  # an "@" past the host
        ("see http://u:pw@h/x and more", "see http://h/x and more"),
    ],
)
def test_a_url_in_words_loses_its_user_and_password(url: str, shown: str) -> None:
    assert without_userinfo(url) == shown


def test_a_password_in_a_query_is_hidden_too() -> None:
    assert redact_url("postgresql://h/db?password=s3cret&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require"
    )
    assert redact_url("postgresql://u:s3cret@h/db") == "postgresql://u:***@h/db"
    assert public_url("http://u:s3cret@gate/v1?key=k#x") == "http://gate/v1"
