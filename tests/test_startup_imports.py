"""What a process loads: a service on its embedded defaults leaves out the libraries of the
features it does not use (cluster mode's Redis client, the page reader's trafilatura and lxml,
a quarter of a second each at every start; the PostgreSQL store's asyncpg, 30 ms); the feature
that needs one loads it when it opens.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from typing import Final

from tests import cli_process
from tests.served import CORPUS

#: The top-level packages of the libraries a single process on its defaults has no use for.
LEFT_OUT: Final = ("redis", "trafilatura", "lxml", "asyncpg")

SERVICE: Final = """
import asyncio, json, sys
from pathlib import Path
from aiohttp.test_utils import TestServer
from research_service.app import create_app
from research_service.settings import Settings

async def main(data_dir: str, corpus: str) -> None:
    settings = Settings(data_dir=Path(data_dir), corpus=Path(corpus))
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    await server.close()
    print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))

asyncio.run(main(*sys.argv[1:]))
"""

READER: Final = """
import asyncio, json, sys
from pathlib import Path
from research_service.reading import open_reader
from research_service.settings import Settings

async def main(data_dir: str) -> None:
    before = "trafilatura" in sys.modules
    async with open_reader(Settings(data_dir=Path(data_dir))):
        print(json.dumps([before, "trafilatura" in sys.modules]))

asyncio.run(main(*sys.argv[1:]))
"""


async def loaded(script: str, *args: str) -> object:
    """What `script`, run by a new interpreter, prints (as JSON)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_process.child_env(),
    )
    async with asyncio.timeout(cli_process.TIMEOUT_S):
        stdout, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()
    return json.loads(stdout)


async def test_a_service_on_its_defaults_loads_no_cluster_postgres_or_page_reader_library(
    tmp_path: Path,
) -> None:
    # Installed here (the test extra has them all), so leaving them out is the service's doing.
    assert all(importlib.util.find_spec(name) is not None for name in LEFT_OUT)
    modules = await loaded(SERVICE, str(tmp_path / "data"), str(CORPUS))
    assert isinstance(modules, list)
    assert "research_service" in modules
    assert "aiohttp" in modules
    assert [name for name in LEFT_OUT if name in modules] == []


async def test_a_page_reader_loads_trafilatura_when_it_opens(tmp_path: Path) -> None:
    assert await loaded(READER, str(tmp_path / "data")) == [False, True]
