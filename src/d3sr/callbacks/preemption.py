"""Pre-emption: SIGTERM or SIGUSR1 saves last.ckpt at the next step boundary, then the run ends cleanly (exit 0).

What Lightning 2.6 does on its own: SIGTERM sets `trainer.received_sigterm`, and after the current batch (or the
current validation batch) it raises SIGTERMException, a SystemExit, with no checkpoint. Under SLURM with auto-requeue
it also handles SIGUSR1: it saves `hpc_ckpt_<n>.ckpt` from inside the signal handler (mid-step) and requeues the job.

This callback, from the start of training: a signal only sets a flag (SIGTERM's handler replaces Lightning's, so a
signal during validation lets it finish; a SIGUSR1 handler already there, e.g. Lightning's SLURM requeue, still runs
after). At the end of the next training batch that completes an iteration, every rank agrees on the flag (one
all-reduce of it per batch), the ModelCheckpoint callback's last.ckpt is written (same path and format as the periodic
checkpoints: a whole iteration, so resume is exact), the log says where it is, and SIGTERMException ends `fit`;
`d3sr.train` catches it and returns normally (exit status 0).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from d3sr.errors import ConfigError

if TYPE_CHECKING:
    from d3sr.models import D3SRModule

log = logging.getLogger(__name__)


class Preemption(L.Callback):
    """Save last.ckpt and stop at the next iteration boundary after one of `signals` (names, e.g. 'SIGTERM')."""

    def __init__(self, signals: Sequence[str] = ("SIGTERM", "SIGUSR1")) -> None:
        self.signals: list[signal.Signals] = []
        for name in signals:
            if not isinstance(getattr(signal, str(name), None), signal.Signals) or name in ("SIGKILL", "SIGSTOP"):
                raise ConfigError(f"callbacks.preemption.signals: {name} is not a signal that can be caught")
            self.signals.append(getattr(signal, name))
        self.received: str | None = None  # the signal's name, once one arrived
        self.checkpoint: str | None = None  # where the pre-emption checkpoint was written
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum).name
        previous = self._previous.get(signum)
        if signum != signal.SIGTERM and callable(previous):
            previous(signum, frame)  # e.g. Lightning's SLURM requeue on SIGUSR1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed after Lightning's own handlers (registered when fit starts), so ours are the ones that run.
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: D3SRModule, outputs, batch, batch_idx) -> None:
        # Only at an iteration boundary: mid gradient accumulation the summed gradients are not in checkpoints.
        if (batch_idx + 1) % pl_module.accumulate_grad_batches:
            return
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        callback = trainer.checkpoint_callback
        if callback is None:
            path = str(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt")
        else:
            path = callback.format_checkpoint_name({}, callback.CHECKPOINT_NAME_LAST or "last")
        trainer.save_checkpoint(path)
        if callback is not None:
            callback.last_model_path = path
        self.checkpoint = path
        rank_zero_info(
            f"Pre-empted ({self.received or 'signal on another rank'}) at iteration {pl_module.iteration}: "
            f"checkpoint saved to {path}. Resume with ckpt_path={path}"
        )
        raise SIGTERMException()

    def _restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
