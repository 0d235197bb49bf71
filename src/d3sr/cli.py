"""What every entry point shares: turning user errors into one clear message and exit code 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import InstantiationException

from d3sr.config import D3SRError

log = logging.getLogger("d3sr")


def user_error(error: BaseException) -> BaseException | None:
    """The D3SRError (or config error raised while instantiating) behind `error`, if the user caused it."""
    seen = error
    while seen is not None:
        if isinstance(seen, D3SRError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, (ValueError, FileNotFoundError)):
        return error
    return None


def run_reporting_errors(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call fn; on a user error print `error: <message>` to stderr and exit with status 2 (no traceback)."""
    try:
        return fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - re-raised unless it is the user's
        cause = user_error(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
