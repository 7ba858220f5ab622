"""What an operator feeds the service: bad values are one line and exit status 2, never worse.

Each case runs the real console script on real files: a FIFO, /dev/zero, a keys file that is
emptied or swapped while `serve` reads it again, or that lists no keys at start.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from research_service.auth import key_file
from research_service.settings import Settings
from tests import cli_process
from tests.cli_process import Finished
from tests.served import CORPUS, Served, open_files_limit, start, stop

SECRET = "a" * 40
PASSWORD = "S3CRETpw"


def one_line(finished: Finished) -> str:
    """The single line a refused command wrote, checked to be no traceback."""
    assert finished.returncode == 2, finished.stderr
    lines = finished.stderr.splitlines()
    assert len(lines) == 1, finished.stderr
    assert "Traceback" not in finished.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("RESEARCH_STREAM_TOKEN_TTL_S", "inf", "not a finite number for stream_token_ttl_s"),
        ("RESEARCH_LLM_TOKEN_TIMEOUT_S", "1e400", "not a finite number for llm_token_timeout_s"),
        ("RESEARCH_RUN_DEADLINE_S", "9" * 400, "not a finite number for run_deadline_s"),
        ("RESEARCH_WEBHOOK_RETRY_S", "-1", "webhook_retry_s must be > 0"),
        ("RESEARCH_WEBHOOK_RETRY_S", "nan", "not a finite number for webhook_retry_s"),
        ("RESEARCH_WEBHOOK_RETRY_S", "0", "webhook_retry_s must be > 0"),
        # Taken, it broke every prune (an OverflowError in SQLite) and time retention with it.
        (
            "RESEARCH_RETENTION_RUNS",
            "1" + "0" * 23,
            "retention_runs must be at most 9007199254740992",
        ),
    ],
)
async def test_a_number_that_switches_a_limit_off_is_refused(
    tmp_path: Path, variable: str, value: str, said: str
) -> None:
    finished = await cli_process.run("serve", "--data-dir", str(tmp_path), **{variable: value})
    line = one_line(finished)
    assert said in line
    assert variable in line


async def test_a_flag_of_inf_is_a_usage_error() -> None:
    finished = await cli_process.run("serve", "--heartbeat-s", "inf")
    assert finished.returncode == 2
    assert "--heartbeat-s: 'inf' is not a finite number for heartbeat_s" in finished.stderr


async def test_a_value_of_10000_digits_is_quoted_short() -> None:
    line = one_line(await cli_process.run("serve", RESEARCH_PORT="1" + "0" * 10_000))
    assert "(10001 characters) is not a valid int for port" in line
    assert len(line) < 200


@pytest.mark.parametrize(
    ("variable", "url", "said"),
    [
        ("RESEARCH_DATABASE_URL", f"research:{PASSWORD}@db.internal/research", "postgresql://"),
        ("DATABASE_URL", f"postgresql://u:{PASSWORD}@127.0.0.1:99999/db", "a port is 1-65535"),
        ("RESEARCH_DATABASE_URL", f"postgresql://u:{PASSWORD}@[::1/db", "an IPv6 host in [ ]"),
        ("OPENAI_BASE_URL", f"u:{PASSWORD}@localhost:11434/v1", "http:// or https://"),
        ("RESEARCH_SEARXNG_URL", f"http://u:{PASSWORD}@searx .internal", "a space"),
    ],
)
async def test_a_url_that_cannot_be_used_is_named_and_never_echoed(
    tmp_path: Path, variable: str, url: str, said: str
) -> None:
    finished = await cli_process.run(
        "serve", "--data-dir", str(tmp_path), "--store", "postgres", **{variable: url}
    )
    line = one_line(finished)
    assert said in line
    assert variable in line
    assert PASSWORD not in finished.stderr + finished.stdout


@pytest.mark.parametrize("under", ["", "sub"])
async def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path, under: str) -> None:
    file = tmp_path / "file"
    file.write_text("not a folder\n")
    line = one_line(await cli_process.run("serve", "--data-dir", str(file / under)))
    assert f"{file}" in line
    assert "--data-dir (RESEARCH_DATA_DIR)" in line


async def serve_keys(
    tmp_path: Path, keys: Path, timeout: float = 60, *, store: str = "memory"
) -> Finished:
    return await cli_process.run(
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--corpus",
        str(CORPUS),
        "--store",
        store,
        "--auth",
        "keys",
        "--api-keys-file",
        str(keys),
        "--port",
        "0",
        timeout=timeout,
    )


async def test_a_fifo_as_the_keys_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo)
    line = one_line(await serve_keys(tmp_path, fifo))
    assert f"the API keys file {fifo} is not a regular file" in line


async def test_dev_zero_as_the_keys_file_is_refused_not_read_forever(tmp_path: Path) -> None:
    # Under a 4 GiB address-space limit an unguarded read ends in MemoryError, not the OOM killer.
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        'ulimit -v 4194304; exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "research_service",
        "serve",
        "--data-dir",
        str(tmp_path),
        "--store",
        "memory",
        "--auth",
        "keys",
        "--api-keys-file",
        "/dev/zero",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_process.child_env(),
    )
    finished = await cli_process.Cli(proc).finish()
    assert "/dev/zero is not a regular file" in one_line(finished)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (f"k:{SECRET}\n" * 30_000, "larger than 1024 KiB"),
        (f"{'b' * 64}\n", "line 1 has no ':' after a name; write NAME:SECRET[:admin]"),
        (f"alice:\xff{SECRET}\n", "is not UTF-8 text (byte 7)"),
    ],
)
async def test_a_keys_file_that_is_wrong_says_so_without_its_secrets(
    tmp_path: Path, text: str, said: str
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_bytes(text.encode("utf-8", "surrogateescape").replace(b"\xc3\xbf", b"\xff"))
    line = one_line(await serve_keys(tmp_path, keys))
    assert said in line
    assert "b" * 64 not in line


@pytest.mark.parametrize("role", ["ADMIN", "Admin", " admin ", "\tadmin", " ADMIN", "aDmIn"])
async def test_a_role_not_written_admin_is_refused_not_taken_into_the_secret(
    tmp_path: Path, role: str
) -> None:
    """A secret may hold ':', but `:ADMIN` is a misspelt role, not a key that is no admin."""
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# the team\nalice:{SECRET}:{role}\n")
    line = one_line(await serve_keys(tmp_path, keys))
    assert line.endswith(
        f"{keys} line 2: the role after the last ':' is not written ':admin'; write it in "
        "lower case with no space after the ':' (NAME:SECRET:admin)"
    )
    assert SECRET not in line


@pytest.mark.parametrize(
    ("line", "secret", "admin"),
    [
        (f"root:{SECRET}:admin", SECRET, True),
        (f"root : {SECRET} :admin", SECRET, True),
        (f"root:{SECRET}:ADMIN:admin", f"{SECRET}:ADMIN", True),
        (f"alice:{SECRET}:user", f"{SECRET}:user", False),
        (f"alice:{SECRET}:admins", f"{SECRET}:admins", False),
        (f"alice:{SECRET}:x-admin", f"{SECRET}:x-admin", False),
    ],
)
def test_the_lines_read_before_the_role_rule_keep_their_meaning(
    line: str, secret: str, admin: bool
) -> None:
    (key,) = key_file.parse(line, source="keys.txt", id_key=b"id")
    assert key.matches(secret)
    assert key.info.admin is admin


@pytest.mark.parametrize("text", ["", "\n\n", "# alice:SECRET\n  # bob:SECRET:admin\n\n"])
async def test_a_keys_file_listing_no_keys_stops_serve_at_start(tmp_path: Path, text: str) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(text)
    line = one_line(await serve_keys(tmp_path, keys))
    assert line == (
        f"research-service: the API keys file {keys} lists no keys; add NAME:SECRET[:admin] lines"
    )


async def test_auth_keys_with_no_place_for_keys_is_refused_before_the_index_is_built(
    tmp_path: Path,
) -> None:
    """`--store memory` keeps no keys: without a keys file the start is refused at once, not
    after the search index is built (minutes for a large --corpus)."""
    data = tmp_path / "data"
    refused = await cli_process.run(
        "serve",
        *("--data-dir", str(data), "--corpus", str(CORPUS), "--store", "memory"),
        *("--auth", "keys", "--port", "0"),
    )
    assert one_line(refused) == (
        "research-service: --auth keys needs API keys: with --store memory they come only from "
        "--api-keys-file (RESEARCH_API_KEYS_FILE); give one, or use --store sqlite and "
        "`research-service keys create NAME`"
    )
    assert not list(data.glob("corpus-*")), "the index was built before the refusal"


async def test_an_empty_keys_file_beside_the_run_stores_keys_is_refused_too(
    tmp_path: Path,
) -> None:
    """The file was given for its keys: an empty one is a mistake even when the store has some."""
    made = await cli_process.run(
        "keys", "create", "ops", "--admin", "--data-dir", str(tmp_path / "data")
    )
    assert made.returncode == 0, made.stderr
    keys = tmp_path / "keys.txt"
    keys.write_text("# none yet\n")
    line = one_line(await serve_keys(tmp_path, keys, store="sqlite"))
    assert line.endswith(
        "lists no keys; add NAME:SECRET[:admin] lines, or leave out --api-keys-file "
        "(RESEARCH_API_KEYS_FILE) to use only the keys made by `research-service keys create`"
    )


IN_CLOSE_NOWRITE, IN_OPEN = 0x10, 0x20


def opens_counter(path: Path) -> int:
    """An inotify descriptor that notes each open of `path` (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    # Closes too: inotify merges an event into the same one still unread before it.
    watched = IN_OPEN | IN_CLOSE_NOWRITE
    if fd < 0 or libc.inotify_add_watch(fd, os.fsencode(path), watched) < 0:
        pytest.skip(f"no inotify here: {os.strerror(ctypes.get_errno())}")
    return fd


def opens_noted(fd: int) -> int:
    """How many opens `fd` has noted (and not yet told)."""
    opens = 0
    while True:
        try:
            events = os.read(fd, 65536)
        except BlockingIOError:
            return opens
        offset = 0
        while offset < len(events):
            _, mask, _, length = struct.unpack_from("iIII", events, offset)
            opens += bool(mask & IN_OPEN)
            offset += 16 + length


async def test_serve_reads_the_keys_file_once_to_start(tmp_path: Path) -> None:
    """The keys checked at start are the keys served: no second read in which they could differ."""
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{SECRET}\n")
    watch = opens_counter(keys)
    try:
        served = await start(
            "--port", "0", "--data-dir", str(tmp_path / "data"), "--corpus", str(CORPUS),
            "--store", "memory", "--auth", "keys", "--api-keys-file", str(keys),
        )  # fmt: skip
        try:
            # Read after "Running on": every open of start-up is noted by then.
            assert opens_noted(watch) == 1
            assert await status_as(served, SECRET) == 200
        finally:
            await stop(served)
    finally:
        os.close(watch)


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[Served, Path]]:
    """`serve` with a keys file holding alice's key, started with a byte order mark."""
    keys = tmp_path / "keys.txt"
    keys.write_bytes(f"\ufeffalice:{SECRET}\r\n".encode())
    served = await start(
        "--port", "0", "--data-dir", str(tmp_path / "data"), "--corpus", str(CORPUS),
        "--store", "memory", "--auth", "keys", "--api-keys-file", str(keys),
    )  # fmt: skip
    try:
        yield served, keys
    finally:
        await stop(served)


async def status_as(served: Served, secret: str) -> int:
    async with httpx.AsyncClient(base_url=served.base, timeout=30) as client:
        headers = {"Authorization": f"Bearer {secret}"}
        return (await client.get("/v1/runs", headers=headers)).status_code


async def test_a_byte_order_mark_and_crlf_line_ends_are_not_part_of_a_key(
    keyed: tuple[Served, Path],
) -> None:
    served, _ = keyed
    assert await status_as(served, SECRET) == 200


async def test_a_keys_file_emptied_while_served_keeps_its_keys_until_the_next_check(
    keyed: tuple[Served, Path],
) -> None:
    """An editor's empty moment cuts no stream; a file left empty revokes every key."""
    served, keys = keyed
    since = len(served.log)
    keys.write_text("")
    await served.wait_log(rb"now lists no keys; keeping the 1 keys read before", since=since)
    assert await status_as(served, SECRET) == 200
    await served.wait_log(rb"reloaded 0 API keys", since=since)
    assert await status_as(served, SECRET) == 401


async def test_an_edit_within_one_tick_of_the_mtime_clock_is_still_read(
    keyed: tuple[Served, Path],
) -> None:
    """A coarse mtime clock gives two writes one mtime: the size and ctime tell them apart."""
    served, keys = keyed
    before = keys.stat()
    since = len(served.log)
    keys.write_text(f"alice:{SECRET}\nbob:{'b' * 40}\n")
    os.utime(keys, ns=(before.st_atime_ns, before.st_mtime_ns))
    await served.wait_log(rb"reloaded 2 API keys", since=since)
    assert await status_as(served, "b" * 40) == 200


async def test_a_fifo_swapped_in_for_the_keys_file_stops_no_later_reload(
    keyed: tuple[Served, Path],
) -> None:
    served, keys = keyed
    since = len(served.log)
    keys.unlink()
    os.mkfifo(keys)
    await served.wait_log(rb"is not a regular file.*keeping the old keys", since=since)
    assert await status_as(served, SECRET) == 200
    since = len(served.log)
    fresh = keys.with_name("fresh.txt")
    fresh.write_text(f"carol:{'c' * 40}\n")
    fresh.replace(keys)
    await served.wait_log(rb"reloaded 1 API keys", since=since)
    assert await status_as(served, "c" * 40) == 200
    assert await status_as(served, SECRET) == 401


@pytest.mark.parametrize(
    "url", [f"ftp://u:{PASSWORD}@docs.internal/", f"https://u:{PASSWORD}@d/?a=1"]
)
async def test_index_never_quotes_a_base_url_with_a_password(tmp_path: Path, url: str) -> None:
    finished = await cli_process.run(
        "index", str(CORPUS), "--data-dir", str(tmp_path), "--base-url", url
    )
    assert finished.returncode == 2
    assert "argument --base-url: the URL " in finished.stderr
    assert PASSWORD not in finished.stderr


async def test_replay_of_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "recording.jsonl"
    os.mkfifo(fifo)
    line = one_line(await cli_process.run("replay", str(fifo), timeout=30))
    assert f"{fifo} is not a regular file" in line


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:///research?host=/run/postgresql",  # a Unix socket: no host
        "postgresql://postgres@127.0.0.1:5432/research",
    ],
)
def test_a_postgresql_url_of_a_socket_or_a_host_is_taken(url: str) -> None:
    assert Settings(store="postgres", database_url=url).database_url == url


async def test_a_keys_file_with_auth_off_is_refused(tmp_path: Path) -> None:
    """Else the service starts open to everyone on loopback, its keys checked by nobody."""
    keys = tmp_path / "keys"
    keys.write_text("alice:" + "s" * 40 + "\n")
    data = str(tmp_path / "data")
    serve = ("serve", "--port", "0", "--data-dir", data, "--api-keys-file", str(keys))
    line = one_line(await cli_process.run(*serve))
    assert "--api-keys-file is given but auth is off" in line
    assert "add --auth keys" in line


async def test_a_connection_cap_the_open_files_limit_cannot_hold_is_refused(tmp_path: Path) -> None:
    """Past the limit, accepts fail before the cap is reached, and the cap's rule (an idle
    connection gives way to a new one) never applies: idle sockets locked everyone out."""
    serve = ("serve", "--port", "0", "--data-dir", str(tmp_path), "--max-connections", "1000")
    limited = await cli_process.start(*serve, preexec_fn=open_files_limit(256, 256))
    line = one_line(await limited.finish())
    assert "--max-connections 1000 is more than the open-files limit (256) leaves" in line


#: The unprivileged user a store's permissions are tried with (root reads and writes anything).
NOBODY = 65534


async def as_nobody(*args: str) -> Finished:
    """The console script run as user nobody (`setpriv`, util-linux), as the tests are root."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        reason = "running a command as another user needs root and setpriv"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    drop = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    return await (await cli_process.start(*args, before=drop)).finish()


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder user nobody may reach (pytest's tmp_path is root's own)."""
    folder = Path(tempfile.mkdtemp(prefix="research-operator-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


async def test_a_store_the_service_user_cannot_write_is_one_line_at_start(
    open_folder: Path,
) -> None:
    """Before, a traceback of the webhooks' outbox failing to open the store."""
    data = open_folder / "data"
    first = await start("--port", "0", "--data-dir", str(data), "--corpus", str(CORPUS))
    assert await stop(first) == 0
    for path in (data, *data.iterdir()):
        os.chown(path, NOBODY, NOBODY)
    (data / "runs.sqlite3").chmod(0o444)
    serve = ("serve", "--port", "0", "--data-dir", str(data), "--corpus", str(CORPUS))
    line = one_line(await as_nobody(*serve, "--log-level", "WARNING"))
    assert line.endswith("runs.sqlite3 cannot be written; check its permissions")


async def test_export_from_a_folder_it_cannot_read_is_one_line(open_folder: Path) -> None:
    hidden = open_folder / "hidden"
    hidden.mkdir(mode=0o700)
    line = one_line(await as_nobody("export", "0123456789abcdef", "--data-dir", str(hidden)))
    assert line == f"research-service: cannot read {hidden} (Permission denied); " + (
        "run as the user the service runs as"
    )
