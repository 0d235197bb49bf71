"""What every Hydra command shares: composing its config shipped in d3sr/conf, and one-line user errors (exit 2)."""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from d3sr.errors import ConfigError, run_reporting_errors, user_error

log = logging.getLogger("d3sr")

CONFIG_DIR = Path(__file__).resolve().parent / "conf"  # shipped inside the package, so an installed wheel has it
MULTIRUN_FLAGS = ("-m", "--multirun")


def hydra_command(config_name: str, run: Callable[[DictConfig], Any],
                  check: Callable[[DictConfig, bool], None] | None = None) -> Callable[[], Any]:  # fmt: skip
    """The `main` of `python -m d3sr.<command>`: compose conf/<config_name>.yaml with the command line, then run.

    A user error ends in one `error:` line and exit status 2; a run that returns a non-zero int exits with it;
    any other result is returned (a sweeper reads train's optimized metric this way). Under `-m` a failing job is
    logged in one line and left to Hydra, so the other jobs of the sweep still run. check(cfg, multirun), if given,
    sees the composed config (with its `hydra` node, first value of each sweep) before Hydra starts: what it raises
    stops the command in one line before any job runs.
    """

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def hydra_main(cfg: DictConfig) -> Any:
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

    def main() -> Any:
        # Hydra reports a bad command line in several lines; check it first and say what is wrong in one.
        cfg = run_reporting_errors(check_command_line, config_name, sys.argv[1:])
        if check is not None and cfg is not None:
            run_reporting_errors(check, cfg, any(arg in MULTIRUN_FLAGS for arg in sys.argv[1:]))
        return hydra_main()

    return main


def first_values(overrides: list[str]) -> list[str]:
    """Each override as a single `key=value`: a sweep (`a=1,2`, `a=range(1,3)`) becomes its first value.

    The one use of Hydra's override parser, which is not a public API (hydra.core.override_parser): its test
    (tests/test_command_line.py) names the Hydra version when the parser changes. Sweeper-only syntax whose values
    cannot be listed (interval(), ...) is dropped: the sweeper checks it. Raises OverrideParseException.
    """
    singles = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            try:
                first = next(iter(override.sweep_string_iterator()))
            except Exception:  # noqa: BLE001 - interval() and other sweeper-only syntax: the sweeper checks those
                continue
            singles.append(f"{override.get_key_element()}={first}")
        else:
            singles.append(override.input_line)
    return singles


def check_command_line(config_name: str, args: list[str]) -> DictConfig | None:
    """ConfigError, in one line naming the key and what is valid, when the overrides in `args` do not compose.

    Covers an unknown key (`loss.lambda_advv=0.1`), an unknown group option (`degradation=foo`) and a value of the
    wrong type. Sweeps (`a=1,2`, `-m`) are checked with their first value. Command lines with other Hydra flags
    (`--cfg job`, `--help`, ...) and command lines without overrides (the shipped configs compose) are left to
    Hydra: None is returned. Otherwise returns the composed config.
    """
    overrides = [arg for arg in args if arg not in MULTIRUN_FLAGS]
    if not overrides or any(arg.startswith("-") for arg in overrides):
        return None
    try:
        singles = first_values(overrides)
    except OverrideParseException as error:
        raise ConfigError(f"cannot read the command line: {_one_line(error)}") from None

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        try:
            return compose(config_name, overrides=singles, return_hydra_config=True)
        except MissingConfigException as error:
            raise ConfigError(_missing_option_message(error)) from None
        except ConfigCompositionException as error:
            key = _unknown_key(error)
            if key is None:
                raise ConfigError(_one_line(error)) from None
            others = [o for o in singles if o.split("=", 1)[0].lstrip("+~") != key]
            raise ConfigError(_unknown_key_message(key, _compose_or_none(config_name, others))) from None


def _compose_or_none(config_name: str, overrides: list[str]) -> DictConfig | None:
    from hydra import compose

    try:
        return compose(config_name, overrides=overrides, return_hydra_config=True)
    except Exception:  # noqa: BLE001 - only used to list the valid keys
        return None


def _unknown_key(error: ConfigCompositionException) -> str | None:
    """The dotted key of a `Could not override 'key'` error whose cause is a key not in the config."""
    cause = error.__cause__ or error.__context__
    if not isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        return None
    return cause.full_key or None


def _unknown_key_message(key: str, cfg: DictConfig | None) -> str:
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if cfg is not None and parent else cfg
    where = parent or "the top level"
    if not isinstance(node, DictConfig):
        return f"{key} is not a config key ({where} has no such key); add a new key with +{key}=VALUE"
    keys = [str(k) for k in node.keys() if not str(k).startswith("_") and not (node is cfg and k == "hydra")]
    close = difflib.get_close_matches(name, keys, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    return (
        f"{key} is not a config key: {hint}keys of {where}: {', '.join(keys)} (to add a new key, write +{key}=VALUE)"
    )


def _missing_option_message(error: MissingConfigException) -> str:
    missing = error.missing_cfg_file or ""
    group, _, option = missing.rpartition("/")
    if group and error.options is not None:
        choices = ", ".join(sorted(error.options)) or "none"
        return f"{group}={option} is not an option of {group}: choices are {choices}"
    return _one_line(error)


def _one_line(error: BaseException) -> str:
    """Hydra's multi-line message joined into one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines)
