"""The paper's reported numbers, as data (D³SR, NeurIPS 2025, arXiv 2410.04224).

Only D³SR's own rows: Table 1 (×4, whole images; PSNR/SSIM on the Y channel) and Table 3 (complexity at 512² output).
Keys are the metric names of `d3sr.evaluation.suite.METRICS`; a metric the paper does not report is absent.
"""

from __future__ import annotations

import re

# Table 1, D³SR-s1 rows: RealSR and DIV2K-val (with ground truth), RealSet65 (no-reference metrics only).
TABLE1: dict[str, dict[str, float]] = {
    "RealSR": {"psnr": 24.11, "ssim": 0.7152, "lpips": 0.2961, "dists": 0.1782, "niqe": 3.899, "musiq": 68.23,
               "maniqa": 0.6383, "clipiqa": 0.5647},
    "DIV2K-val": {"psnr": 22.05, "ssim": 0.6031, "lpips": 0.3556, "dists": 0.1500, "niqe": 3.295, "musiq": 68.51,
                  "maniqa": 0.5795, "clipiqa": 0.5370},
    "RealSet65": {"niqe": 3.998, "musiq": 70.25, "maniqa": 0.6298, "clipiqa": 0.5481},
}  # fmt: skip

# Table 3, D³SR column: one step, 966.3 M parameters, 2,132 G MACs and 0.11 s for a 512×512 output on one A100-40GB.
TABLE3: dict[str, float] = {"steps": 1, "params_m": 966.3, "macs_g": 2132.0, "time_s": 0.11, "output_size": 512}

# Table 1's test sets are evaluated on whole images (not the 512² crops of the StableSR test sets).
TABLE1_PROTOCOL = "whole images, ×4, PSNR/SSIM on Y of YCbCr"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_ALIASES = {"realsr": "RealSR", "div2kval": "DIV2K-val", "div2k": "DIV2K-val", "realset65": "RealSet65"}


def paper_test_set(name: str | None) -> str | None:
    """The Table 1 test set called `name` ('RealSR', 'realsr', 'DIV2K_val', ...), or None if the paper has none."""
    return _ALIASES.get(_key(name)) if name else None


def paper_row(name: str | None) -> dict[str, float] | None:
    """D³SR's Table 1 numbers for the test set `name`, or None if the paper does not report that set."""
    test_set = paper_test_set(name)
    return dict(TABLE1[test_set]) if test_set else None
