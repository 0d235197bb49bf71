"""The user-facing errors, and how every entry point reports them: one `error:` line and exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import InstantiationException


class D3SRError(RuntimeError):
    """An error caused by the user's setup (missing weights or files, a bad value): one message, exit status 2."""


class ConfigError(D3SRError, ValueError):
    """A configuration or argument value that is not valid; the message names the key and what is allowed.

    Raised once, where the value enters (constructors, option parsers); a ValueError too, so library callers
    can catch it as one.
    """


def user_error(error: BaseException) -> BaseException | None:
    """The D3SRError behind `error` (its cause chain included), if the user caused it."""
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
