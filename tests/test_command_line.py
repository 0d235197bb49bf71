"""A bad command line ends in one line that names the key or option and what is valid (checked before Hydra runs)."""

from __future__ import annotations

import os
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


def test_cli_exit_status_2_and_one_line_offline_too() -> None:
    # Offline (HF_HUB_OFFLINE=1, as docs/weights.md tells offline users) the output is our one line, no dependency's.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "d3sr.train", "loss.lambda_advv=0.1"], capture_output=True, text=True, timeout=120,
        env=env,
    )  # fmt: skip
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: loss.lambda_advv is not a config key"), run.stderr


KERNELS_NOTICE = """
from kernels._internals.hf_hub import _check_trust_remote_code
_check_trust_remote_code("kernels-community/quantization-bitsandbytes", local_files_only=True, trust_remote_code=False)
"""


def test_the_kernels_offline_notice_is_silenced_by_importing_d3sr() -> None:
    # The `kernels` package (pulled in by transformers) warns offline that it skips a publisher check. Trigger the
    # real warning: it reaches stderr without d3sr and not once d3sr is imported.
    pytest.importorskip("kernels._internals.hf_hub", reason="this kernels version has no publisher trust check")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for prefix, expect_notice in (("", True), ("import d3sr\n", False)):
        code = f"exec({prefix!r} + {KERNELS_NOTICE!r})"
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 0, run.stderr
        assert ("Skipping publisher trust check" in run.stderr) == expect_notice, run.stderr


def test_hydras_override_parser_still_reads_what_we_rely_on() -> None:
    # commands.first_values is the one use of Hydra's non-public override parser; a change there fails here by name.
    import hydra

    from d3sr.commands import first_values

    got = first_values(["a=1", "+b.c=x", "~d", "e=1,2,3", "f=range(4,7)", "g=choice(p,q)", "h=interval(0,1)"])
    assert got == ["a=1", "+b.c=x", "~d", "e=1", "f=4", "g=p"], (
        f"hydra-core {hydra.__version__} parses overrides differently: update d3sr.commands.first_values"
    )
