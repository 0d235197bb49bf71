"""What every Hydra command shares: composing its config shipped in d3sr/conf, and one-line user errors (exit 2)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from d3sr.errors import run_reporting_errors, user_error

log = logging.getLogger("d3sr")

CONFIG_DIR = Path(__file__).resolve().parent / "conf"  # shipped inside the package, so an installed wheel has it


def hydra_command(config_name: str, run: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """The `main` of `python -m d3sr.<command>`: compose conf/<config_name>.yaml with the command line, then run.

    A user error ends in one `error:` line and exit status 2; a run that returns a non-zero int exits with it;
    any other result is returned (a sweeper reads train's optimized metric this way). Under `-m` a failing job is
    logged in one line and left to Hydra, so the other jobs of the sweep still run.
    """

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def main(cfg: DictConfig) -> Any:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # One job of a sweep: a failure is said in one line and raised to Hydra, which records it and goes on
            # with the next job (exiting here would end the whole sweep).
            try:
                return run(cfg)
            except Exception as error:
                cause = user_error(error) or error
                log.error("job %s failed: %s: %s", HydraConfig.get().job.num, type(cause).__name__, cause)
                raise
        result = run_reporting_errors(run, cfg)
        if isinstance(result, int) and not isinstance(result, bool) and result:
            sys.exit(result)
        return result

    return main
