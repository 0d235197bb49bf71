"""The NaN-skip policy on its own (the training tests in test_fault_tolerance.py run it inside real steps)."""

from __future__ import annotations

import math

import pytest

from d3sr.errors import ConfigError, D3SRError
from d3sr.models.nan_skips import NanSkips


def test_a_poisoned_window_skips_its_update_and_the_run_stops_after_max_in_a_row() -> None:
    skips = NanSkips(max_in_a_row=2)
    skips.record(0, 1.0, finite_on_every_rank=True)
    assert not skips.poisoned(0) and not skips.close_window(0)
    skips.end_iteration(1, "last.ckpt")
    assert (skips.total, skips.in_a_row) == (0, 0)

    skips.record(1, math.nan, finite_on_every_rank=False)  # D's loss is NaN here
    skips.record(1, 0.5, finite_on_every_rank=True)  # a later micro-batch of the same window: still poisoned
    assert skips.poisoned(1) and not skips.poisoned(0)
    assert skips.close_window(1) and not skips.poisoned(1)
    skips.end_iteration(2, "last.ckpt")
    assert (skips.total, skips.in_a_row) == (1, 1)

    skips.record(0, 0.25, finite_on_every_rank=False)  # finite here, NaN on another rank
    assert skips.close_window(0)
    with pytest.raises(D3SRError, match=r"iteration 3: 2 iterations in a row.*NaN/inf on another rank \(0.25 here\)"):
        skips.end_iteration(3, "")


def test_counters_survive_a_checkpoint_and_bad_limits_name_the_key() -> None:
    skips = NanSkips(5)
    skips.load_state_dict({"total": 4, "in_a_row": 2})
    assert skips.state_dict() == {"total": 4, "in_a_row": 2}
    with pytest.raises(ConfigError, match="model.max_skipped_steps must be >= 1"):
        NanSkips(0)
