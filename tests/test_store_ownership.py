"""One run store, one server: a second `serve` on the same data folder refuses to start."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import httpx

from tests.served import CORPUS, start, stop
from tests.sse import listen


def serve_args(data_dir: Path, *extra: str) -> list[str]:
    return [
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        "--corpus",
        str(CORPUS),
        *extra,
    ]


async def start_failing(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "research_service", "serve", *args),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            _, err = await process.communicate()
    finally:
        if process.returncode is None:  # it started after all: stop it, then fail
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_second_server_on_the_same_store_refuses_and_touches_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    first = await start(*serve_args(data, "--token-delay-ms", "40"), timeout=60)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            created = await client.post(f"{first.base}/v1/runs", json={"question": "Leaves?"})
            events = first.base + created.json()["events_url"]
            seen = await listen(client, events, stop=lambda e: e.event == "token")

            code, err = await start_failing(*serve_args(data))
            assert code == 2
            (line,) = err.strip().splitlines()
            assert re.fullmatch(
                rf"research-service: the run store in {re.escape(str(data))} is in use by "
                rf"another research-service process \(pid {first.process.pid} on [^)]+, since "
                r"[0-9T:Z-]+\); stop that process, or give this one its own --data-dir "
                r"\(or --store memory\)",
                line,
            ), line

            # The first server's run goes on and ends as its listeners and its store agree.
            rest = await listen(client, events, last_event_id=seen.ids[-1], timeout=60)
            assert rest.last[1]["status"] == "completed"
            snapshot = (await client.get(f"{first.base}/v1/runs/{created.json()['id']}")).json()
            assert snapshot["status"] == "completed"
    finally:
        assert await stop(first) == 0
    assert "IntegrityError" not in first.log.decode()
    assert "Traceback" not in first.log.decode()

    # Stopped, it lets the next server have the store, which finds the run completed.
    second = await start(*serve_args(data), timeout=60)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            run_id = created.json()["id"]
            again = (await client.get(f"{second.base}/v1/runs/{run_id}")).json()
        assert again["status"] == "completed"
    finally:
        assert await stop(second) == 0


async def test_a_killed_server_leaves_no_lock_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = await start(*serve_args(data), timeout=60)
    first.process.send_signal(signal.SIGKILL)
    await first.process.wait()
    second = await start(*serve_args(data), timeout=60)
    assert await stop(second) == 0


async def test_memory_stores_share_a_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = await start(*serve_args(data, "--store", "memory"), timeout=60)
    try:
        second = await start(*serve_args(data, "--store", "memory"), timeout=60)
        assert await stop(second) == 0
    finally:
        assert await stop(first) == 0


async def test_a_deleted_lock_file_lets_no_second_server_in(tmp_path: Path) -> None:
    """A clean-up script that removes `runs.sqlite3.lock` once let a second `serve` start,
    which ended the first one's live runs as interrupted while the first wrote on."""
    data = tmp_path / "data"
    first = await start(*serve_args(data), timeout=60)
    try:
        (data / "runs.sqlite3.lock").unlink()
        code, err = await start_failing(*serve_args(data))
        assert code == 2, err
        assert f"the run store in {data} is in use by another research-service process" in err
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await client.get(f"{first.base}/healthz")).status_code == 200
    finally:
        assert await stop(first) == 0
