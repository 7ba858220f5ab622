"""The connection cap: how many HTTP connections are served at once, and who gives way."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import resource
import socket
import struct
from collections import Counter
from typing import Any, Final, Protocol

from research_service.errors import ConfigError

log = logging.getLogger(__name__)

#: Open files kept free beyond the connection cap, for the run store, outbound HTTP (model,
#: search, page reading) and the process's own files: a quarter of the limit, at least this.
MIN_RESERVED_FILES: Final = 64
#: Resource exhaustion is logged at most once per interval, as counts.
EXHAUSTION_LOG_INTERVAL_S: Final = 10.0
#: A refused connection is closed this long after its 503, so the client can read the answer
#: (closing with its request unread would reset the connection) ...
REFUSED_LINGER_S: Final = 1.0
#: ... unless this many refused connections are lingering already: then it is closed at once.
MAX_LINGERING: Final = 32
#: The most descriptors the kernel's table is made to hold at start-up: 8 bytes of kernel
#: memory each (512 KiB), none of the process's own.
MAX_PRESIZED_FILES: Final = 1 << 16
#: The asyncio message for a failed accept(); logged here as a count instead of a traceback.
ACCEPT_FAILED: Final = "socket.accept() out of system resource"


class Connection(Protocol):
    """What the guard needs of a served connection."""

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport, None once it is closed."""
        ...

    def force_close(self) -> None:
        """Close the connection now."""
        ...


#: SO_LINGER on with a zero timeout: close() resets the connection and drops unsent data.
_LINGER_ZERO: Final = struct.pack("ii", 1, 0)


def reset(transport: asyncio.Transport | None) -> None:
    """Drop a connection at once: a reset to the peer, unsent data and the socket freed.

    A plain close of a socket whose peer stopped reading leaves the kernel holding the
    unsent data (FIN_WAIT1) and the peer waiting; a zero linger sends a reset instead.
    """
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.fileno() >= 0:
        # An OSError: the socket is already gone, with nothing left to reset.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


def unacknowledged_for_at_most(transport: asyncio.BaseTransport, seconds: float) -> None:
    """Have the kernel drop the connection when what it sent stays unacknowledged this long.

    TCP_USER_TIMEOUT (Linux): it bounds a socket the service has closed too, which a peer
    that stopped reading would otherwise keep (FIN_WAIT1, with its unsent data) for as long
    as it likes, whatever --max-connections says.
    """
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if sock is None or option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, round(seconds * 1000)))


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard not in (resource.RLIM_INFINITY, soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
        else:
            soft = hard
    return soft


def presize_file_table(files: int) -> int:
    """Make the kernel's descriptor table hold `files` descriptors now; return how many it holds.

    Linux grows a process's table by doubling, when a new descriptor does not fit. In a process
    with more than one thread each growth waits for an RCU grace period (`expand_files` ->
    `synchronize_rcu`): 10-15 ms during which the `accept()` that needed it blocks the event
    loop. A burst of 300 new connections met two growths (bench/README.md, "A descriptor
    table sized at start-up"). The table never shrinks, so one descriptor opened at the top and
    closed again grows it once, now. At most `MAX_PRESIZED_FILES`, and no more than the
    open-files limit allows; 0 when it cannot be done.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    for bound in (soft, MAX_PRESIZED_FILES):
        if bound != resource.RLIM_INFINITY and (files == resource.RLIM_INFINITY or files > bound):
            files = bound
    if files < 2:
        return 0
    probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # The lowest free descriptor at or above the top: no open one is touched.
        high = fcntl.fcntl(probe, fcntl.F_DUPFD_CLOEXEC, files - 1)
    except OSError as exc:
        log.warning("could not size the descriptor table for %d files: %s", files, exc)
        return 0
    finally:
        os.close(probe)
    os.close(high)
    return high + 1


def check_connection_cap(max_connections: int | None, files: int) -> None:
    """Refuse a --max-connections the open-files limit cannot hold.

    Past the limit, accepts fail (EMFILE) before the cap is reached, so the cap's rule, an idle
    connection gives way to a new one, never applies, and idle sockets lock everyone out.
    """
    room = files - MIN_RESERVED_FILES
    if max_connections is not None and files != resource.RLIM_INFINITY and max_connections > room:
        raise ConfigError(
            f"--max-connections {max_connections} is more than the open-files limit "
            f"({files}) leaves for connections ({room}, {MIN_RESERVED_FILES} kept for the "
            "stores and the search index): lower it, or raise the limit (ulimit -n, LimitNOFILE)"
        )


def default_max_connections() -> int:
    """The connection cap that leaves a quarter of the open-files limit to everything else."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - max(MIN_RESERVED_FILES, soft // 4))


class ConnectionGuard:
    """Counts open connections; at the cap an idle one gives way, else the new one is refused.

    A connection is idle while no request is being handled on it: it is waiting for a
    request's headers (a keep-alive connection, or a client sending slowly). Such a
    connection is the cheapest to lose, so the oldest is closed to admit a new one, as
    nginx reuses idle keep-alive connections. Streams and other requests in progress are
    never closed to make room; when every connection is busy, new ones are refused.
    """

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        # Insertion order is age: the first idle entry is the oldest idle connection.
        self._open: dict[Connection, bool] = {}  # connection -> busy
        self._drained: asyncio.Event | None = None
        self._lingering = 0
        self._counts: Counter[str] = Counter()
        self._last_report = float("-inf")
        self._report_timer: asyncio.TimerHandle | None = None

    def admit(self, connection: Connection) -> bool:
        """Take a new connection; False when it must be refused (every slot is busy)."""
        if len(self._open) >= self.max_connections:
            idle = next((c for c, busy in self._open.items() if not busy), None)
            if idle is None:
                self.note("refused")
                return False
            self.note("closed_idle")
            self._open.pop(idle)
            idle.force_close()
        self._open[connection] = False
        return True

    def refuse(self, transport: asyncio.Transport, answer: bytes) -> None:
        """Answer a refused connection and close it (after a short linger, when affordable)."""
        transport.write(answer)
        if self._lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering += 1

        def close() -> None:
            self._lingering -= 1
            transport.close()

        asyncio.get_running_loop().call_later(REFUSED_LINGER_S, close)

    def left(self, connection: Connection) -> None:
        """A connection closed."""
        self._open.pop(connection, None)
        if not self._open and self._drained is not None:
            self._drained.set()

    def busy(self, connection: Connection, busy: bool) -> None:
        """A request started (True) or ended (False) on `connection`."""
        if connection in self._open:
            self._open[connection] = busy

    def close_idle(self) -> None:
        """Close every connection that has no request in progress (keep-alive ones)."""
        for connection in [c for c, busy in self._open.items() if not busy]:
            connection.force_close()

    async def drained(self) -> None:
        """Wait until every connection has closed."""
        if self._open:
            self._drained = asyncio.Event()
            await self._drained.wait()

    def close_all(self) -> int:
        """Reset every open connection at once; how many there were."""
        doomed = list(self._open)
        for connection in doomed:
            reset(connection.transport)
        return len(doomed)

    # --- exhaustion, counted and reported once per interval ---------------------------------

    def note(self, what: str) -> None:
        """Count one sign of exhaustion; the counts are logged at most once per interval."""
        self._counts[what] += 1
        if self._report_timer is not None:
            return
        loop = asyncio.get_running_loop()
        due = self._last_report + EXHAUSTION_LOG_INTERVAL_S
        self._report_timer = loop.call_at(max(due, loop.time()), self._report)

    def _report(self) -> None:
        self._report_timer = None
        self._last_report = asyncio.get_running_loop().time()
        counts, self._counts = self._counts, Counter()
        parts = [f"{count} {_describe(what)}" for what, count in sorted(counts.items())]
        log.warning(
            "connections at the limit (%d open, --max-connections %d): %s",
            len(self._open),
            self.max_connections,
            "; ".join(parts),
        )

    def loop_exception_handler(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        """The loop's exception handler; failed accepts are counted, not logged one by one."""
        if context.get("message") == ACCEPT_FAILED:
            error = context.get("exception")
            name = errno.errorcode.get(getattr(error, "errno", 0) or 0, "error")
            self.note(f"accept_{name}")
            return
        loop.default_exception_handler(context)


_WORDING: Final = {
    "refused": "new connections refused (every connection busy)",
    "closed_idle": "idle connections closed to admit new ones",
}


def _describe(what: str) -> str:
    """The words for one kind of exhaustion in the periodic report."""
    if what.startswith("accept_"):
        return f"accepts failed ({what.removeprefix('accept_')}: out of file descriptors)"
    return _WORDING[what]
