"""Atomic file output shared by the entry points: a reader never sees a half-written file or folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from d3sr.errors import D3SRError


def _sibling(path: Path, tag: str) -> Path:
    """A hidden name beside `path` for this process: `.<name>.<tag>-<pid>`."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(temporary) for a temporary file beside `path`, then rename it over `path`; returns the path.

    The temporary file is removed if writing fails, so an existing `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _sibling(path, "tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def check_output_folder(output: str | Path, overwrite: bool) -> None:
    """D3SRError, before any work, when `output` is a file, or a non-empty folder and not `overwrite`."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise D3SRError(f"output={output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise D3SRError(f"output={output} is not empty; choose a new folder or pass overwrite=true")


def write_folder_atomically(output: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(staging) for a new empty folder beside `output`, then rename it to `output`; returns the path.

    An existing `output` is replaced by the new folder only once it is complete; if writing fails the staging folder
    is removed and `output` is left as it was.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging, retired = _sibling(output, "tmp"), _sibling(output, "old")
    for leftover in (staging, retired):  # of an earlier process with this pid that was killed mid-write
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir()
    try:
        write(staging)
        if output.exists():
            os.replace(output, retired)
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    return output
