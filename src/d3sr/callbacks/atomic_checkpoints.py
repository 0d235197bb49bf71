"""Checkpoint files written atomically: a failed or interrupted save leaves the previous file as it was.

Lightning's TorchCheckpointIO saves through an fsspec transaction, which on a local disk writes a temporary file in
the system's temporary folder and then *moves* it: when that folder is on another file system (often a small one)
the move is a copy over the old checkpoint, so a kill or a full disk during it leaves a truncated last.ckpt. Here the
temporary file is written beside the target, flushed to disk, then renamed over it (`os.replace`, atomic on POSIX).
A write that fails ends in one D3SRError naming the file and the reason (an `error:` line and exit 2 in the CLI).
check_checkpoint_folders probes every checkpoint folder before training, so a folder that cannot be written (read-only,
no permission, under a file) stops the run at start-up instead of at the first save.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from d3sr.atomic_files import write_atomically
from d3sr.errors import D3SRError


def _write(checkpoint: dict[str, Any], path: Path) -> None:
    """torch.save to `path`, flushed to the disk before it is renamed into place."""
    with open(path, "wb") as file:
        torch.save(checkpoint, file)
        file.flush()
        os.fsync(file.fileno())


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves are atomic (temporary file + rename); remote URLs are left to fsspec."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        existed = path.exists()
        try:
            write_atomically(path, lambda temporary: _write(checkpoint, temporary))
        except (OSError, RuntimeError) as raised:
            # torch's zip writer reports a failed write (a full disk) as a RuntimeError ("unexpected pos") chained
            # from the OSError: find the OSError, whichever way it came.
            error = os_error_in(raised)
            if error is None:
                raise
            why = _describe(error)
            kept = f"the previous {path.name} is unchanged" if existed else "no checkpoint was written there"
            raise D3SRError(
                f"cannot write the checkpoint {path}: {why}; {kept}. {_remedy(error)}, then resume from the last "
                "checkpoint"
            ) from error


def os_error_in(error: BaseException) -> OSError | None:
    """`error` if it is an OSError, else the first OSError it was raised from (__cause__ / __context__), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def _describe(error: OSError) -> str:
    code = errno.errorcode.get(error.errno or 0)
    return f"{error.strerror or error}" + (f" ({code})" if code else "")


def _remedy(error: OSError) -> str:
    """What the user can do about a failed write, by its cause."""
    if error.errno in NOT_WRITABLE:
        return "Make that folder writable or point paths.output_dir elsewhere"
    return "Free space in that folder or point paths.output_dir elsewhere"


def check_writable(folder: Path) -> None:
    """D3SRError unless files can be created in `folder` (made if missing): a probe file is written and removed."""
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        write_atomically(probe, lambda temporary: temporary.write_bytes(b"d3sr"))
        probe.unlink()
    except (OSError, RuntimeError) as raised:
        error = os_error_in(raised)
        if error is None:
            raise
        raise D3SRError(
            f"cannot write checkpoints to {folder}: {_describe(error)} (checked before training). {_remedy(error)}"
        ) from error


def check_checkpoint_folders(trainer: L.Trainer) -> None:
    """check_writable for the folder of every checkpoint callback of the trainer that has one."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "dirpath", None) and "://" not in str(callback.dirpath):
            check_writable(Path(callback.dirpath))


def use_atomic_checkpoints(trainer: L.Trainer) -> None:
    """Make the trainer save checkpoints atomically, when its strategy uses Lightning's default TorchCheckpointIO."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
