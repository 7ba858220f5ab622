"""`research-service keys` as a real console script, and `serve`'s auth start-up checks."""

from __future__ import annotations

import re
import signal
import sqlite3
from pathlib import Path

import httpx

from research_service.runs.sqlite_db import RUN_STORE_FILE
from tests import cli_process
from tests.cli_process import Finished
from tests.served import CORPUS, start, stop

KEY_SHAPE = re.compile(r"^rsk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


async def keys(data: Path, *args: str) -> Finished:
    return await cli_process.run("keys", *args, "--data-dir", str(data))


async def create(data: Path, name: str, *flags: str) -> str:
    """A new key for `name`, as the last line of the command's stdout."""
    made = await keys(data, "create", name, *flags)
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[-1]
    assert KEY_SHAPE.match(key), made.stdout
    return key


def secret_part(key: str) -> str:
    """The part of `rsk_<id>_<secret>` after the id (it may hold underscores itself)."""
    return key.split("_", 2)[2]


def store_bytes(data: Path) -> bytes:
    """Every byte the run store keeps on disk (the file and its write-ahead log)."""
    files = sorted(data.glob(RUN_STORE_FILE + "*"))
    assert files
    return b"".join(path.read_bytes() for path in files if not path.name.endswith(".lock"))


async def test_keys_create_prints_a_new_key_as_its_last_line(tmp_path: Path) -> None:
    made = await keys(tmp_path, "create", "alice")
    assert made.returncode == 0, made.stderr
    *_, key = made.stdout.splitlines()
    assert KEY_SHAPE.match(key)
    assert "alice" in made.stderr
    assert key not in made.stderr
    admin = await create(tmp_path, "root", "--admin")
    assert admin != key


async def test_keys_list_shows_names_and_roles_never_a_secret_or_hash(tmp_path: Path) -> None:
    alice = await create(tmp_path, "alice")
    root = await create(tmp_path, "root", "--admin")
    listed = await keys(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "CREATED", "LAST", "USED", "STATE"]
    assert [row.split()[:2] for row in rows] == [["alice", "user"], ["root", "admin"]]
    assert all(row.split()[-1] == "active" for row in rows)
    with sqlite3.connect(tmp_path / RUN_STORE_FILE) as db:
        hashes = [
            (bytes(s).hex(), bytes(h).hex())
            for s, h in db.execute("SELECT salt, hash FROM api_keys")
        ]
    db.close()
    output = listed.stdout + listed.stderr
    for secret in (alice, root, secret_part(alice), secret_part(root)):
        assert secret not in output
    for salt, digest in hashes:
        assert salt not in output.lower()
        assert digest not in output.lower()


async def test_keys_create_refuses_a_duplicate_or_invalid_name_with_exit_2(tmp_path: Path) -> None:
    await create(tmp_path, "alice")
    again = await keys(tmp_path, "create", "alice", "--admin")
    assert again.returncode == 2
    assert again.stdout == ""
    assert "a key named 'alice' exists" in again.stderr
    assert "keys revoke alice" in again.stderr
    for bad in ("bad name", "", "x" * 65, "semi;colon", "ünïcode"):
        refused = await keys(tmp_path, "create", bad)
        assert refused.returncode == 2, bad
        assert refused.stdout == ""
        assert "not valid" in refused.stderr
    listed = await keys(tmp_path, "list")
    assert [row.split()[:2] for row in listed.stdout.splitlines()[1:]] == [["alice", "user"]]


async def test_keys_revoke_exits_0_then_1_and_frees_the_name(tmp_path: Path) -> None:
    await create(tmp_path, "alice")
    revoked = await keys(tmp_path, "revoke", "alice")
    assert revoked.returncode == 0, revoked.stderr
    again = await keys(tmp_path, "revoke", "alice")
    assert again.returncode == 1
    assert "no usable key named 'alice'" in again.stderr
    unknown = await keys(tmp_path, "revoke", "nobody")
    assert unknown.returncode == 1
    listed = await keys(tmp_path, "list")
    (row,) = listed.stdout.splitlines()[1:]
    assert row.split()[0] == "alice"
    assert "revoked" in row
    # The name can have a new key once the old one is revoked.
    await create(tmp_path, "alice")


async def test_the_store_keeps_only_a_salted_hash_of_each_key(tmp_path: Path) -> None:
    made = [await create(tmp_path, name) for name in ("alice", "bob")]
    raw = store_bytes(tmp_path)
    for key in made:
        assert key.encode() not in raw
        assert secret_part(key).encode() not in raw
    with sqlite3.connect(tmp_path / RUN_STORE_FILE) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(api_keys)")]
        rows = db.execute("SELECT id, salt, hash FROM api_keys ORDER BY created_at").fetchall()
    db.close()
    assert set(columns) == {
        "id",
        "name",
        "admin",
        "salt",
        "hash",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    for key, (key_id, salt, digest) in zip(made, rows, strict=True):
        assert key.startswith(f"rsk_{key_id}_")
        assert len(bytes(salt)) == 16
        assert len(bytes(digest)) == 32
    assert rows[0][1] != rows[1][1]


async def test_a_running_service_takes_a_new_key_and_drops_a_revoked_one_at_once(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    root = await create(data, "root", "--admin")
    served = await start(
        "--port", "0", "--data-dir", str(data), "--corpus", str(CORPUS), "--auth", "keys"
    )
    try:
        async with httpx.AsyncClient(base_url=served.base, timeout=30) as client:
            assert (await client.get("/v1/runs")).status_code == 401
            alice = await create(data, "alice")
            who = await client.get("/v1/session", headers={"Authorization": f"Bearer {alice}"})
            assert who.status_code == 200, who.text
            assert who.json() == {"auth": "keys", "name": "alice", "admin": False}
            created = await client.post(
                "/v1/runs",
                json={"question": "Which key?"},
                headers={"Authorization": f"Bearer {alice}"},
            )
            assert created.status_code == 201, created.text

            revoked = await keys(data, "revoke", "alice")
            assert revoked.returncode == 0, revoked.stderr
            refused = await client.get("/v1/runs", headers={"Authorization": f"Bearer {alice}"})
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"].startswith("Bearer ")
            listed = await client.get("/v1/runs", headers={"Authorization": f"Bearer {root}"})
            assert [run["id"] for run in listed.json()["runs"]] == [created.json()["id"]]
    finally:
        assert await stop(served, signal.SIGTERM) == 0
    assert "Traceback" not in served.log.decode()
    listing = await keys(data, "list")
    alice_row = next(row for row in listing.stdout.splitlines() if row.startswith("alice"))
    assert alice_row.split()[4] != "-"  # last used: set by the service


async def test_serve_with_keys_and_a_memory_store_needs_a_keys_file(tmp_path: Path) -> None:
    args = ("--auth", "keys", "--store", "memory", "--port", "0", "--data-dir", str(tmp_path))
    failed = await cli_process.run("serve", *args, "--corpus", str(CORPUS))
    assert failed.returncode != 0
    assert "RESEARCH_API_KEYS_FILE" in failed.stderr
    assert "--api-keys-file" in failed.stderr
    assert "Running on" not in failed.stderr


async def test_serve_on_every_interface_with_auth_off_warns_loudly(tmp_path: Path) -> None:
    served = await start(
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--auth",
        "off",
        "--store",
        "memory",
        "--data-dir",
        str(tmp_path),
        "--corpus",
        str(CORPUS),
    )
    try:
        match = await served.wait_log(rb"WARNING .*AUTH IS OFF on 0\.0\.0\.0[^\n]*")
        assert b"--auth keys" in match[0]
    finally:
        assert await stop(served, signal.SIGTERM) == 0


async def test_serve_on_loopback_with_auth_off_does_not_warn(tmp_path: Path) -> None:
    """The control: one person on loopback is the no-keys case, said nowhere as a danger."""
    served = await start(
        "--port", "0", "--store", "memory", "--data-dir", str(tmp_path), "--corpus", str(CORPUS)
    )
    try:
        async with httpx.AsyncClient(base_url=served.base, timeout=30) as client:
            assert (await client.get("/v1/runs")).status_code == 200
    finally:
        assert await stop(served, signal.SIGTERM) == 0
    assert b"AUTH IS OFF" not in served.log
