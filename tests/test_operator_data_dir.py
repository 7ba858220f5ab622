"""A --data-dir that cannot be the data folder: one line and exit status 2, from every command.

`migrate` only reads the folder, so it must tell a folder not made yet (nothing to migrate) from
a file, a broken link or a folder it may not read (a mistake to say).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests import cli_process
from tests.cli_process import Finished
from tests.test_operator_inputs import one_line

FIX = "--data-dir (RESEARCH_DATA_DIR)"


def not_a_folder(tmp_path: Path, kind: str) -> Path:
    """A --data-dir of the given kind, made under `tmp_path`."""
    file = tmp_path / "file"
    file.write_text("not a folder\n")
    if kind == "file":
        return file
    if kind == "under a file":
        return file / "sub"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "unmounted" if kind == "dangling link" else link)
    return link


@pytest.mark.parametrize("kind", ["file", "under a file", "dangling link", "link loop"])
async def test_migrate_refuses_a_data_dir_that_is_no_folder(tmp_path: Path, kind: str) -> None:
    data_dir = not_a_folder(tmp_path, kind)
    line = one_line(await cli_process.run("migrate", "--data-dir", str(data_dir)))
    assert f"the data folder {data_dir} is " in line
    assert FIX in line
    assert "nothing to migrate" not in line


@pytest.mark.parametrize("kind", ["dangling link", "link loop"])
async def test_serve_names_a_data_dir_link_that_leads_nowhere(tmp_path: Path, kind: str) -> None:
    data_dir = not_a_folder(tmp_path, kind)
    line = one_line(await cli_process.run("serve", "--data-dir", str(data_dir)))
    target = os.readlink(data_dir)
    assert f"the data folder {data_dir} is a symbolic link to {target}, which leads to no" in line
    assert FIX in line


@pytest.mark.parametrize(
    ("where", "said"),
    [("locked", "cannot read the data folder"), ("locked/data", "cannot use the data folder")],
    ids=["a locked folder", "under a locked folder"],
)
async def test_migrate_refuses_a_data_dir_it_may_not_read(
    tmp_path: Path, where: str, said: str
) -> None:
    (tmp_path / "locked").mkdir(mode=0o000)
    data_dir = tmp_path / where
    line = one_line(await held_to_the_mode_bits("migrate", "--data-dir", str(data_dir)))
    assert f"{said} {data_dir} (Permission denied)" in line
    assert FIX in line


async def test_keys_list_under_a_folder_it_may_not_enter_says_to_check_permissions(
    tmp_path: Path,
) -> None:
    """It said "cannot be written ([Errno 13] Permission denied: …), or point …"."""
    (tmp_path / "locked").mkdir(mode=0o000)
    data_dir = tmp_path / "locked" / "data"
    line = one_line(await held_to_the_mode_bits("keys", "list", "--data-dir", str(data_dir)))
    assert line.endswith(
        f"the run store {data_dir}/runs.sqlite3 cannot be written; check its permissions, "
        "or point --data-dir elsewhere"
    )


async def held_to_the_mode_bits(*args: str) -> Finished:
    """The command run as a user the folders' mode bits hold (root without its overrides)."""
    command = [sys.executable, "-m", "research_service", *args]
    if os.geteuid() == 0:
        # Root reads any folder: without these two capabilities it is held to the mode bits.
        if shutil.which("setpriv") is None:
            if os.environ.get("CI") == "true":
                pytest.fail("setpriv (util-linux) is missing in CI")
            pytest.skip("running as root, and no setpriv to drop the override")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_process.child_env(),
    )
    return await cli_process.Cli(proc).finish()


async def test_migrate_of_a_folder_not_made_yet_still_has_nothing_to_do(tmp_path: Path) -> None:
    finished = await cli_process.run("migrate", "--data-dir", str(tmp_path / "not-yet"))
    assert finished.returncode == 0, finished.stderr
    assert "nothing to migrate" in finished.stderr
    assert not (tmp_path / "not-yet").exists()
