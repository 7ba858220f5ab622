"""The tests' own servers on ports the tests pick: a taken port is picked again, not a failure.

nginx and redis-server cannot bind port 0 and say which port they got, so the tests pick a
released port for them; another process (a client's connection, another test worker) may take
it first. And a test that wants a refused connection needs a port nobody can take.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import cluster, nginx
from tests.cluster import RedisServer
from tests.loopback import HOST, PortTaken, free_port, refused_port


def test_a_refused_port_refuses_and_no_one_else_can_bind_it() -> None:
    port = refused_port()
    assert refused_port() == port  # one for the whole session
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.connect((HOST, port))
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError, match="Address already in use") as taken:
            other.bind((HOST, port))
    assert taken.value.errno == errno.EADDRINUSE


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process would hold: bound and listening here."""
    with socket.create_server((HOST, 0)) as held:
        yield held.getsockname()[1]


def nginx_folder(tmp_path: Path) -> Path:
    """A folder for nginx whose configuration includes the test's own `site.conf`."""
    nginx.require_nginx()
    folder = tmp_path / "nginx"
    (folder / "temp").mkdir(parents=True)
    (folder / "nginx.conf").write_text(nginx.main_config(folder, site="site.conf"))
    return folder


async def test_nginx_is_started_again_on_new_ports_when_one_was_taken(
    tmp_path: Path, taken_port: int
) -> None:
    folder = nginx_folder(tmp_path)
    picked: list[int] = []

    def configure() -> int:
        port = free_port() if picked else taken_port
        picked.append(port)
        (folder / "site.conf").write_text(f"server {{ listen {HOST}:{port}; return 204; }}\n")
        return port

    async with nginx.child(folder, configure) as (_, port):
        assert picked == [taken_port, port]
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://{HOST}:{port}/")
        assert response.status_code == 204
        assert response.headers["Server"].startswith("nginx")


async def test_nginx_gives_up_after_the_attempts(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two attempts, not three: nginx itself tries to bind for 2.5 s before it gives up.
    monkeypatch.setattr(nginx, "PORT_ATTEMPTS", 2)
    folder = nginx_folder(tmp_path)
    tries: list[int] = []

    def configure() -> None:
        tries.append(taken_port)
        (folder / "site.conf").write_text(f"server {{ listen {HOST}:{taken_port}; }}\n")

    with pytest.raises(PortTaken, match="Address already in use"):
        async with nginx.child(folder, configure):
            pytest.fail("nginx cannot have started on a taken port")
    assert len(tries) == 2


async def test_redis_server_on_a_taken_port_says_so(tmp_path: Path, taken_port: int) -> None:
    server = RedisServer(taken_port, tmp_path)
    with pytest.raises(PortTaken, match="Address already in use"):
        await server.start()
    assert server.process is not None
    assert server.process.returncode is not None


async def test_redis_server_is_started_again_on_a_new_port_when_one_was_taken(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    picked: list[int] = []

    def pick() -> int:
        picked.append(free_port() if picked else taken_port)
        return picked[-1]

    monkeypatch.setattr(cluster, "free_port", pick)
    server = await RedisServer.started(tmp_path)
    try:
        assert picked == [taken_port, server.port]
        client = await cluster.redis_or_skip(server.url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    finally:
        await server.stop()
