"""A real nginx with TLS and HTTP/2, configured from deploy/nginx/research-service-cluster.conf.

The cluster example as written, but for the test's loopback port, its upstream (the test's
service in place of the two API nodes), a certificate that deploy/nginx/make-cert.sh makes in
the test's folder, and the access log on nginx's stderr, where the test can wait for its lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tests import nginx
from tests.loopback import free_port

SITE: Final = "research-service-cluster.conf"
MAKE_CERT: Final = nginx.DEPLOY / "make-cert.sh"
#: What the example says, and what the tests put in its place (each must be there as written).
EXAMPLE_SERVERS: Final = "    server api-1:8080;\n    server api-2:8080;\n"
EXAMPLE_LISTEN: Final = "    listen 443 ssl http2;\n"
EXAMPLE_CERTS: Final = "/etc/nginx/certs/"
EXAMPLE_ACCESS_LOG: Final = "access_log /var/log/nginx/access.log research_cluster;"
#: One access log line of the example's `research_cluster` format: method, path, protocol, status.
ACCESS: Final = re.compile(rb'"(?P<method>[A-Z]+) (?P<path>\S+) (?P<protocol>HTTP/[0-9.]+)" (\d+)')
TIMEOUT_S: Final = 30.0


def require_openssl() -> str:
    """The openssl command; a test without it fails under CI=true and is skipped otherwise."""
    found = shutil.which("openssl")
    if found is not None:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("openssl is missing in CI; .ci/run should have installed it")
    pytest.skip("openssl is not installed (apt-get install openssl)")


def make_cert(folder: Path) -> Path:
    """A self-signed pair made by deploy/nginx/make-cert.sh in `folder`; the certificate's path."""
    require_openssl()
    made = subprocess.run(
        [str(MAKE_CERT), str(folder)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert not (folder / ".gitignore").exists(), "only the default folder gets a .gitignore"
    return folder / "fullchain.pem"


def site_config(*, upstream_port: int, port: int, certs: Path, http2: bool) -> str:
    """The cluster example on 127.0.0.1:`port`, with the test's upstream and certificate."""
    site = (nginx.DEPLOY / SITE).read_text(encoding="utf-8")
    for said in (EXAMPLE_SERVERS, EXAMPLE_LISTEN, EXAMPLE_ACCESS_LOG):
        assert site.count(said) == 1, f"{SITE} no longer says {said!r}"
    site = site.replace(EXAMPLE_SERVERS, f"    server 127.0.0.1:{upstream_port};\n")
    listen = "ssl http2" if http2 else "ssl"
    site = site.replace(EXAMPLE_LISTEN, f"    listen 127.0.0.1:{port} {listen};\n")
    site = site.replace(EXAMPLE_CERTS, f"{certs}/")
    # nginx opens /dev/stderr as a file: its own stderr, the pipe the test reads.
    return site.replace(EXAMPLE_ACCESS_LOG, "access_log /dev/stderr research_cluster;")


@dataclass
class TlsNginx:
    """A running nginx serving the cluster example over TLS on `port`."""

    child: nginx.Child
    port: int
    certificate: Path

    def url(self, path: str = "") -> str:
        """The address of the service's `path` (no leading slash) through nginx."""
        return f"https://127.0.0.1:{self.port}/{path}"

    async def wait_access(self, path: re.Pattern[str], *, count: int) -> list[re.Match[bytes]]:
        """Wait until nginx has logged `count` requests whose path matches; return those lines."""
        wanted = re.compile(rb'"[A-Z]+ ' + path.pattern.encode() + rb' HTTP/[0-9.]+" \d+')
        await self.child.wait_log(wanted, count=count)
        return [m for m in ACCESS.finditer(self.child.log) if path.fullmatch(m["path"].decode())]


@contextlib.asynccontextmanager
async def running(
    folder: Path, *, upstream_port: int, http2: bool = True
) -> AsyncIterator[TlsNginx]:
    """The cluster example in front of 127.0.0.1:`upstream_port` until the block ends."""
    nginx.require_nginx()
    (folder / "snippets").mkdir(parents=True)
    (folder / "temp").mkdir()
    certificate = make_cert(folder / "certs")
    (folder / "snippets" / nginx.SNIPPET).write_text(nginx.snippet_config(read_timeout=None))
    (folder / "nginx.conf").write_text(nginx.main_config(folder, site=SITE))

    def configure() -> int:
        port = free_port()
        site = site_config(
            upstream_port=upstream_port, port=port, certs=certificate.parent, http2=http2
        )
        (folder / SITE).write_text(site)
        return port

    async with nginx.child(folder, configure) as (started, port):
        yield TlsNginx(started, port, certificate)
