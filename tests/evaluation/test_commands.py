"""The two evaluation tools as commands: `python -m d3sr.check_weights` and `python -m d3sr.complexity`.

Each has its own --help, exits 0 when done, 1 (check_weights) when weight files are missing, and 2 with one
`error:` line for a bad argument.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from d3sr import check_weights, complexity


def exit_status(main, argv) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


@pytest.mark.parametrize(
    ("command", "usage", "option"),
    [
        (check_weights, "python -m d3sr.check_weights", "--metrics"),
        (complexity, "python -m d3sr.complexity", "--size"),
    ],
)
def test_help(command, usage, option, capsys):
    assert exit_status(command.main, ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {usage}") and option in out and "Exit status" in out


def test_check_weights_exit_status(empty_hub, random_hub, capsys, monkeypatch):
    pytest.importorskip("pyiqa")  # only for the random LPIPS/DISTS files; the command itself needs no pyiqa
    monkeypatch.setenv("TORCH_HOME", str(random_hub))
    assert exit_status(check_weights.main, ["--metrics", "psnr", "lpips", "dists"]) == 0
    assert "All weight files are present." in capsys.readouterr().out
    monkeypatch.setenv("TORCH_HOME", str(empty_hub))
    assert exit_status(check_weights.main, ["--metrics", "lpips"]) == 1
    out = capsys.readouterr().out
    assert "[missing] lpips" in out and "LPIPS_v0.1_alex-df73285e.pth" in out
    # Aliases are resolved; the default is the paper's Table 1 metrics.
    assert exit_status(check_weights.main, ["--metrics", "maniqa-pipal"]) == 1
    assert "MANIQA_PIPAL-ae6d356b.pth" in capsys.readouterr().out
    assert exit_status(check_weights.main, []) == 1
    out = capsys.readouterr().out
    assert all(f"] {name:8s}" in out for name in ("psnr", "ssim", "lpips", "dists", "niqe", "musiq", "maniqa"))
    assert "] clipiqa" in out and "] fid" not in out


def test_check_weights_unknown_metric_is_one_error_line_exit_2(tmp_path):
    cmd = [sys.executable, "-m", "d3sr.check_weights", "--metrics", "psnr", "sharpness"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env={**os.environ})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: metrics: unknown metric 'sharpness'; choose from psnr, ssim, lpips, dists, niqe, musiq, maniqa, "
        "clipiqa, fid"
    ]
    assert result.stdout == ""


def test_complexity_prints_the_table(capsys):
    assert exit_status(complexity.main, []) == 0
    out = capsys.readouterr().out
    assert "| MACs (G), conv + linear layers | 2,132.3 | 2,132 |" in out
    assert "| parameters (M) | 965.78 | 966.3 |" in out


@pytest.mark.parametrize(("size", "message"), [("100", "multiple of 8"), ("0", "size must be > 0")])
def test_complexity_bad_size_exit_2(size, message, capsys):
    assert exit_status(complexity.main, ["--size", size]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
