"""A Redis outage is said once, then once a minute while it lasts, and when it ends: each of a
node's loops retried several times a second, and logged a warning each time (100 lines for a
10 s outage)."""

from __future__ import annotations

import logging

import pytest

from research_service import outage as outage_module
from research_service.outage import REPEAT_S, Outage


def test_a_failing_spell_is_said_at_its_start_each_minute_and_at_its_end(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(outage_module.time, "monotonic", lambda: clock[0])
    spell = Outage("cannot publish live events to Redis")
    with caplog.at_level(logging.WARNING, logger=outage_module.__name__):
        for _ in range(100):  # ten seconds of retries, ten a second
            spell.failed(ConnectionError("Connection refused"))
            clock[0] += 0.1
        assert [r.getMessage() for r in caplog.records] == [
            "cannot publish live events to Redis (Connection refused); retrying"
        ]
        clock[0] += REPEAT_S
        spell.failed(ConnectionError("Connection refused"))
        spell.failed(ConnectionError("Connection refused"))
        spell.ok()
        spell.ok()  # no spell any more: nothing to say
        spell.failed(ConnectionError("Connection reset"))  # a new spell
    assert [r.getMessage() for r in caplog.records[1:]] == [
        "cannot publish live events to Redis for 70 s now, 101 attempts (Connection refused); "
        "retrying",
        "cannot publish live events to Redis: works again after 70 s and 102 failed attempts",
        "cannot publish live events to Redis (Connection reset); retrying",
    ]
