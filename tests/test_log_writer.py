"""Log lines written by a thread of their own: a log nobody reads, a full disk, what is lost.

Real parts: a `serve` process whose stderr pipe is not read, an `os.pipe` that is full, a
tmpfs that is full, /dev/full. Each test waits on what the writer thread reached (its
formatter says so), never on time.
"""

from __future__ import annotations

import logging
import os
import queue
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
from tests.loopback import free_port
from tests.served import CORPUS, follow_log, start, stop
from tests.test_metrics import scrape

WAIT_S = 10


class Paced(logging.Formatter):
    """`%(message)s`, saying which line the writer reached; a line named in `held` waits there
    until its event is set."""

    def __init__(self) -> None:
        super().__init__("%(message)s")
        self.reached: queue.Queue[str] = queue.Queue()
        self.held: dict[str, threading.Event] = {}

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        self.reached.put(message)
        if (gate := self.held.get(message)) is not None:
            assert gate.wait(WAIT_S), f"{message!r} was never let through"
        return super().format(record)

    def wait_for(self, *messages: str) -> None:
        """Until the writer reached these lines, in this order."""
        for message in messages:
            assert self.reached.get(timeout=WAIT_S) == message


def line(message: str) -> logging.LogRecord:
    return logging.LogRecord("research_service.test", logging.INFO, __file__, 1, message, (), None)


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


def test_a_log_nobody_reads_drops_lines_counts_them_and_says_so_once_it_reads_again() -> None:
    read_end, write_end = os.pipe()
    fill_pipe(write_end)
    formatter = Paced()
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 - closed below, once written
    writer = LineWriter(stream, formatter, capacity=5)
    writer.put(line("line 0"))
    formatter.wait_for("line 0")  # taken: its write now waits for a reader
    returns_at_once(lambda: [writer.put(line(f"line {n}")) for n in range(1, 16)])
    assert writer.lost == 10  # lines 1-5 wait in the queue; 6-15 found it full

    read: list[bytes] = []
    reader = threading.Thread(target=lambda: read.append(_read_all(read_end)))
    reader.start()
    formatter.wait_for(*(f"line {n}" for n in range(1, 6)))  # the queue is empty again
    writer.put(line("after"))
    writer.close()
    stream.close()
    reader.join(WAIT_S)
    lines = [text for text in read[0].decode().split("\n") if text]
    assert lines == [
        *(f"line {n}" for n in range(6)),
        "10 log line(s) dropped: the log's reader fell behind",
        "after",
    ]
    assert writer.lost == 10


def _read_all(fd: int) -> bytes:
    with open(fd, "rb") as pipe:
        return pipe.read()


async def test_lines_a_full_disk_refuses_are_counted_and_reported_when_it_has_room(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        log = (disk / "service.log").open("w", encoding="utf-8")
        await fill(disk)
        formatter = Paced()
        formatter.held["d"] = freed = threading.Event()
        writer = LineWriter(log, formatter)
        for message in "abcd":
            writer.put(line(message))
        formatter.wait_for("a", "b", "c", "d")  # a, b and c were refused; d waits
        assert writer.lost == 3
        await free(disk)
        freed.set()
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
        writer = LineWriter(full, logging.Formatter())  # every write to it: ENOSPC
        writer.put(line("one"))
        writer.put(line("two"))
        writer.close()
    assert writer.lost == 2
    service = await make_service()
    assert (await scrape(service, client))["research_log_lines_lost_total"] == 0
    monkeypatch.setattr(log_writer, "current", writer)  # the process's writer, as serve's
    assert (await scrape(service, client))["research_log_lines_lost_total"] == 2


async def test_a_service_whose_log_nobody_reads_keeps_answering(tmp_path: Path) -> None:
    # Each request logs a line of ~150 bytes: a pipe takes 64 KiB, ~430 of them.
    served = await start(
        f"--port={free_port()}",
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
