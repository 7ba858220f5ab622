"""The README's curl examples, run as written against a live service."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import Service

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_BASE = "http://127.0.0.1:8080"
_SH_BLOCK = re.compile(r"^```sh\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def quick_try_commands() -> list[str]:
    """The curl commands of the README's "Quick try" section, continuation lines joined."""
    section = README.read_text(encoding="utf-8").split("## Quick try", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for block in _SH_BLOCK.finditer(section):
        joined = block["body"].replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.startswith("curl")]
    return commands


async def run(command: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, f"{command}\n{err.decode()}"
    return out.decode()


async def test_quick_try_commands_work_as_written(service: Service) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is missing; .ci/run must install it")
        pytest.skip("curl is not installed")
    service.llm.pieces = [f"word{n} " for n in range(10)]
    base = service.url("/").rstrip("/")
    commands = [c.replace(EXAMPLE_BASE, base) for c in quick_try_commands()]
    assert len(commands) == 4
    one_shot, create, listen, resume = commands

    assert "event: done" in await run(one_shot)
    created = json.loads(await run(create))
    assert created["status"] == "queued"
    example_id = re.search(r"/v1/runs/([0-9a-f]{16})/events", listen)
    assert example_id is not None
    stream = await run(listen.replace(example_id[1], created["id"]))
    assert stream.startswith("retry: 3000")
    assert stream.rstrip().splitlines()[-2] == "event: done"
    resumed = await run(resume.replace(example_id[1], created["id"]))
    seqs = [int(s) for s in re.findall(rf"^id: {created['id']}:(\d+)$", resumed, re.MULTILINE)]
    assert seqs[0] == 13
    assert seqs == list(range(13, 13 + len(seqs)))
