"""Atomic output: a folder appears whole or not at all, and an output folder is refused before any work."""

from __future__ import annotations

import pytest

from d3sr.atomic_files import check_output_folder, write_folder_atomically
from d3sr.errors import D3SRError


def test_a_folder_replaces_the_old_one_whole_and_a_failed_write_keeps_it(tmp_path):
    output = tmp_path / "bundle"
    output.mkdir()
    (output / "old.txt").write_text("old")

    def write(folder):
        assert folder.is_dir() and folder.parent == tmp_path and folder != output and not any(folder.iterdir())
        (folder / "sub").mkdir()
        (folder / "sub" / "new.txt").write_text("new")

    assert write_folder_atomically(output, write) == output
    assert [p.relative_to(output).as_posix() for p in sorted(output.rglob("*"))] == ["sub", "sub/new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging or retired folder left behind

    def fail(folder):
        (folder / "half.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomically(output, fail)
    assert (output / "sub" / "new.txt").read_text() == "new" and not (output / "half.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_a_new_folder_and_its_parents_are_made(tmp_path):
    output = write_folder_atomically(tmp_path / "a" / "b", lambda folder: (folder / "x").write_text("x"))
    assert (output / "x").read_text() == "x"


def test_an_output_must_be_a_new_or_empty_folder_unless_overwrite(tmp_path):
    check_output_folder(tmp_path / "missing", overwrite=False)
    check_output_folder(tmp_path, overwrite=False)  # empty
    (tmp_path / "taken.txt").write_text("x")
    with pytest.raises(D3SRError, match=r"output=.* is not empty; choose a new folder or pass overwrite=true"):
        check_output_folder(tmp_path, overwrite=False)
    check_output_folder(tmp_path, overwrite=True)
    with pytest.raises(D3SRError, match="exists and is not a folder"):
        check_output_folder(tmp_path / "taken.txt", overwrite=True)
