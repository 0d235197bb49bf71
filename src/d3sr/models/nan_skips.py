"""The NaN-skip policy: a step whose loss is NaN or inf is skipped, and too many in a row stop the run.

One object per training run counts, for each optimizer (0: G, 1: D), whether its current accumulation window met a
non-finite loss ("poisoned": no backward and no update for that window), the steps skipped over the whole run and the
iterations in a row with a skipped step. `max_in_a_row` such iterations end the run with one D3SRError that says what
to do. The counters go into checkpoints (`state_dict`), so a resumed run keeps counting.
"""

from __future__ import annotations

import logging
import math

from d3sr.errors import ConfigError, D3SRError

log = logging.getLogger("d3sr.train")


class NanSkips:
    """Counts skipped steps for `max_in_a_row` (model.max_skipped_steps) and says which windows are poisoned."""

    def __init__(self, max_in_a_row: int) -> None:
        if max_in_a_row < 1:
            raise ConfigError(f"model.max_skipped_steps must be >= 1, got {max_in_a_row}")
        self.max_in_a_row = int(max_in_a_row)
        self.total = 0  # optimizer steps skipped for a non-finite loss (G and D alike), over the whole run
        self.in_a_row = 0  # consecutive iterations with a skipped step
        self._poisoned: set[int] = set()  # optimizers whose current accumulation window met a non-finite loss
        self._now: list[str] = []  # the non-finite losses whose steps this iteration skips

    def record(self, index: int, loss_value: float, finite_on_every_rank: bool) -> None:
        """Note optimizer `index`'s loss of this micro-batch; a non-finite one (on any rank) poisons its window."""
        if finite_on_every_rank:
            return
        if index not in self._poisoned:
            here = f"NaN/inf on another rank ({loss_value} here)" if math.isfinite(loss_value) else f"= {loss_value}"
            self._now.append(f"{'GD'[index]} loss {here}")
        self._poisoned.add(index)

    def poisoned(self, index: int) -> bool:
        """Whether optimizer `index`'s current accumulation window met a non-finite loss (no backward, no update)."""
        return index in self._poisoned

    def close_window(self, index: int) -> bool:
        """End optimizer `index`'s accumulation window; returns whether its update is skipped."""
        skipped = index in self._poisoned
        self._poisoned.discard(index)
        return skipped

    def end_iteration(self, iteration: int, last_checkpoint: str) -> None:
        """Count this iteration's skipped steps; D3SRError once `max_in_a_row` iterations in a row had one."""
        skipped, self._now = self._now, []
        last_checkpoint = last_checkpoint or "none saved yet"
        if not skipped:
            self.in_a_row = 0
            return
        self.total += len(skipped)
        self.in_a_row += 1
        log.warning("Iteration %d: %s; step skipped (%d in a row, the run stops at %d)", iteration,
                    ", ".join(skipped), self.in_a_row, self.max_in_a_row)  # fmt: skip
        if self.in_a_row >= self.max_in_a_row:
            raise D3SRError(
                f"training stopped at iteration {iteration}: {self.in_a_row} iterations in a row had a NaN/inf loss "
                f"(the last: {', '.join(skipped)}), so their steps were skipped "
                f"(model.max_skipped_steps={self.max_in_a_row}). Last checkpoint: {last_checkpoint}"
                ". Lower the learning rates or check the data, then resume from it (ckpt_path=...)"
            )

    def state_dict(self) -> dict[str, int]:
        """The counters, as checkpoints hold them."""
        return {"total": self.total, "in_a_row": self.in_a_row}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Counters from a checkpoint (missing ones: 0)."""
        self.total, self.in_a_row = int(state.get("total", 0)), int(state.get("in_a_row", 0))
