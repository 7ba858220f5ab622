"""The README's curl examples, run as written against a live service."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import MakeService, Service

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_BASE = "http://127.0.0.1:8080"
#: The console script of this environment, as `research-service` in the README.
CONSOLE = str(Path(sys.executable).with_name("research-service"))
_SH_BLOCK = re.compile(r"^```sh\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


SHARED = "### A shared deployment"


def _commands(section: str, *starts: str) -> list[str]:
    """The commands of a section's sh blocks that start with `starts`, continuations joined."""
    commands: list[str] = []
    for block in _SH_BLOCK.finditer(section):
        joined = block["body"].replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.startswith(starts)]
    return commands


def quick_try_section() -> str:
    """The README's "Quick try" section."""
    return README.read_text(encoding="utf-8").split("## Quick try", 1)[1].split("\n## ", 1)[0]


def quick_try_commands() -> list[str]:
    """The curl commands of the loopback part of "Quick try" (no keys)."""
    return _commands(quick_try_section().split(SHARED, 1)[0], "curl")


def shared_deployment_commands() -> list[str]:
    """The key and curl commands of the shared-deployment part of "Quick try"."""
    return _commands(quick_try_section().split(SHARED, 1)[1], "curl", "research-service keys")


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


async def test_shared_deployment_keys_flow_works_as_written(
    make_service: MakeService, tmp_path: Path
) -> None:
    """Keys made by the README's commands open the service; its curl creates a run with one."""
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is missing; .ci/run must install it")
        pytest.skip("curl is not installed")
    commands = shared_deployment_commands()
    assert [c.split("#")[0].split()[:3] for c in commands[:2]] == [
        ["research-service", "keys", "create"],
        ["research-service", "keys", "create"],
    ]
    data_dir = tmp_path / "data"
    keys = []
    for command in commands[:2]:
        words = command.split("#")[0].split()
        keys.append(await run(f"{shlex.join([CONSOLE, *words[1:]])} --data-dir {data_dir}"))
    alice_key = keys[1].strip().splitlines()[-1]
    assert alice_key.startswith("rsk_")
    service = await make_service(auth="keys", store="sqlite", allowed_hosts="research.example.com")
    (create,) = commands[2:]
    # curl connects to the test service while Host says research.example.com:8080, as written.
    address = f"research.example.com:8080:127.0.0.1:{service.server.port}"
    refused = await run(create.replace("curl -s", f"curl -s --connect-to {address}"))
    assert json.loads(refused)["status"] == 401
    created = json.loads(
        await run(
            f"ALICE_KEY={shlex.quote(alice_key)}; "
            + create.replace("curl -s", f"curl -s --connect-to {address}")
        )
    )
    assert re.fullmatch(r"/v1/runs/[0-9a-f]{16}/events\?token=\S+", created["events_url"])
