"""Reading a file someone named: a folder is refused by name, and leaves nothing open."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from research_service.regular_files import NotRegularFile, read_regular


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_folder_is_refused_as_a_folder_and_its_descriptor_closed(tmp_path: Path) -> None:
    before = open_descriptors()
    for _ in range(20):
        with pytest.raises(NotRegularFile) as caught:
            read_regular(tmp_path, 1000)
        assert str(caught.value) == f"{tmp_path} is a folder"
        assert caught.value.folder
    assert open_descriptors() == before


def test_a_fifo_is_refused_unread_and_a_file_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile, match="is not a regular file"):
        read_regular(fifo, 1000)
    text = tmp_path / "note.md"
    text.write_bytes(b"# Note\n")
    contents = read_regular(text, 1000)
    assert contents is not None
    assert contents.data == b"# Note\n"
    assert read_regular(text, 3) is None  # larger than the limit: not read
