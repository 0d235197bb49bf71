"""A bad command line ends in one line that names the key or option and what is valid (checked before Hydra runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from d3sr.commands import check_command_line
from d3sr.errors import ConfigError


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["loss.lambda_advv=0.1"], "loss.lambda_advv is not a config key: did you mean loss.lambda_adv?"),
        (["iterationz=3"], "did you mean iterations?"),
        (["-m", "loss.lambda_advv=0.1,0.2"], "loss.lambda_advv is not a config key"),
        (["degradation=foo"], "degradation=foo is not an option of degradation: choices are bicubic, realesrgan"),
        (["model/discriminator=sdxxl"], "choices are demo, demo_pixel"),
        (["experiment=nope"], "experiment=nope is not an option of experiment"),
        (["loss.lambda_adv=(("], "cannot read the command line"),
    ],
)
def test_bad_overrides_are_one_line_naming_key_and_choices(args: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_command_line("train", args)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["experiment=demo", "iterations=3", "+loss.extra=1"],
        ["-m", "loss.lambda_adv=0.001,0.01", "hparams_search=loss_weights"],
        ["--cfg", "job", "nonsense.key=1"],  # other Hydra flags: left to Hydra
    ],
)
def test_good_command_lines_pass(args: list[str]) -> None:
    check_command_line("train", args)


def test_cli_exit_status_2_and_one_line() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "d3sr.train", "loss.lambda_advv=0.1"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: loss.lambda_advv is not a config key"), run.stderr
