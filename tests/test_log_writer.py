"""Log lines written by a thread of their own: a log nobody reads, a full disk, what is lost.

Real parts: a `serve` process whose stderr pipe is not read, an `os.pipe` that is full, a
tmpfs that is full, /dev/full. Tests wait for the writer with `flush`, never on time.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from research_service import log_writer
from research_service.log_writer import LineWriter
from tests.conftest import MakeService
from tests.full_disk import fill, free, small_disk
from tests.served import CORPUS, follow_log, start, stop
from tests.test_metrics import scrape

WAIT_S = 10


NOTICES = logging.Formatter("%(message)s")
DROPPED = re.compile(r"(\d+) log line\(s\) dropped: the log's reader fell behind")


def returns_at_once(work: Callable[[], None]) -> None:
    """`work` runs to its end on a thread of its own: a call that blocks fails the test."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    assert not thread.is_alive(), "logging waited for the log's reader"


def fill_pipe(fd: int) -> None:
    """Write newlines to the pipe until it takes no more: the next write blocks."""
    os.set_blocking(fd, False)
    try:
        while True:
            os.write(fd, b"\n" * 4096)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, True)


class Reader(threading.Thread):
    """Reads a pipe to its end, from the moment it is started."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.lines: list[str] = []

    def run(self) -> None:
        with open(self.fd, "rb") as pipe:
            self.lines = [text for text in pipe.read().decode().split("\n") if text]

    def until_end(self) -> list[str]:
        self.join(WAIT_S)
        assert not self.is_alive(), "the pipe was never closed"
        return self.lines


def put_all(writer: LineWriter, lines: range) -> None:
    """Hand the writer `line N` for each N, checking that no call waits."""

    def put() -> None:
        for n in lines:
            writer.put(f"line {n}")

    returns_at_once(put)


def test_lines_past_the_queue_are_dropped_counted_and_reported_after_those_before() -> None:
    read_end, write_end = os.pipe()
    reader = Reader(read_end)
    reader.start()
    with open(write_end, "w", encoding="utf-8") as stream:
        # The writer gathers its first batch for a minute: 5 lines fit, the next 10 do not.
        writer = LineWriter(stream, NOTICES, capacity=5, linger=60)
        put_all(writer, range(15))
        assert writer.lost == 10
        assert writer.flush(WAIT_S)  # now, not in a minute
        writer.close()
    assert reader.until_end() == [
        *(f"line {n}" for n in range(5)),
        "10 log line(s) dropped: the log's reader fell behind",
    ]
    assert writer.lost == 10


def test_a_log_nobody_reads_never_holds_up_who_logs() -> None:
    read_end, write_end = os.pipe()
    fill_pipe(write_end)
    with open(write_end, "w", encoding="utf-8") as stream:
        writer = LineWriter(stream, NOTICES, capacity=5, linger=0)
        put_all(writer, range(100))  # the writer's first write waits for a reader: none comes
        lost = writer.lost
        assert 90 <= lost <= 95, lost  # one batch taken (1-5 lines), 5 more queued
        reader = Reader(read_end)
        reader.start()  # the reader is back: what was queued is written, then the warning
        assert writer.flush(WAIT_S)
        writer.close()
    written = [int(text.removeprefix("line ")) for text in reader.until_end() if "line " in text]
    assert written == sorted(written)
    reported = [int(m[1]) for text in reader.lines if (m := DROPPED.fullmatch(text))]
    assert len(written) + lost == 100
    assert sum(reported) == lost == writer.lost


async def test_lines_a_full_disk_refuses_are_counted_and_reported_when_it_has_room(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        log = (disk / "service.log").open("w", encoding="utf-8")
        await fill(disk)
        writer = LineWriter(log, NOTICES, linger=0)
        for line in "abc":
            writer.put(line)
        assert writer.flush(WAIT_S)
        assert writer.lost == 3
        await free(disk)
        writer.put("d")
        assert writer.flush(WAIT_S)
        writer.close()
        log.close()
        assert (disk / "service.log").read_text().splitlines() == [
            "d",
            "3 log line(s) not written: the log's stream failed",
        ]
        assert writer.lost == 3


async def test_the_metrics_count_the_log_lines_lost(
    make_service: MakeService, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Path("/dev/full").open("w", encoding="utf-8") as full:  # noqa: ASYNC230 - a device
        writer = LineWriter(full, NOTICES)  # every write to it: ENOSPC
        writer.put("one")
        writer.put("two")
        writer.close()
    assert writer.lost == 2
    service = await make_service()
    assert (await scrape(service, client))["research_log_lines_lost_total"] == 0
    monkeypatch.setattr(log_writer, "current", writer)  # the process's writer, as serve's
    assert (await scrape(service, client))["research_log_lines_lost_total"] == 2


async def test_a_service_whose_log_nobody_reads_keeps_answering(tmp_path: Path) -> None:
    # Each request logs a line of ~150 bytes: a pipe takes 64 KiB, ~430 of them.
    served = await start(
        "--port=0",
        f"--data-dir={tmp_path / 'data'}",
        f"--corpus={CORPUS}",
        follow=False,
    )
    try:
        async with httpx.AsyncClient(base_url=served.base, timeout=WAIT_S) as client:
            for n in range(1500):
                response = await client.get("/healthz", headers={"User-Agent": f"probe-{n}"})
                assert response.status_code == 200, response.text
            follow_log(served)  # the reader is back: every line arrives, in order
            await served.wait_log(rb'"probe-1499"')
            metrics = await client.get("/metrics")
    finally:
        assert await stop(served) == 0
    logged = [
        int(n) for n in re.findall(rb'"GET /healthz HTTP/1.1" 200 .* "probe-(\d+)"', served.log)
    ]
    assert logged == list(range(1500))
    assert b"dropped" not in served.log
    assert re.search(r"^research_log_lines_lost_total 0\.0$", metrics.text, re.MULTILINE)
