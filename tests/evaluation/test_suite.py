"""The pyiqa-backed suite: PSNR-Y / SSIM-Y against scikit-image, the LPIPS/DISTS paths, names, and lazy pyiqa."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from eval_helpers import PHOTOS, degrade, photo
from skimage import color
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from d3sr.errors import ConfigError
from d3sr.evaluation.suite import METRICS, MetricSuite, metric_names
from d3sr.psnr_ssim import psnr_y, ssim_y

pytest.importorskip("pyiqa")

# SSIM as Wang et al. 2004 / BasicSR / pyiqa: 11×11 Gaussian σ=1.5, population covariance, 'valid' window positions.
SSIM_ARGS = {"data_range": 255, "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def y_channel(image: np.ndarray) -> np.ndarray:
    """Independent Y of YCbCr (BT.601 studio range, 16–235) from scikit-image."""
    return color.rgb2ycbcr(image)[..., 0]


@pytest.fixture(scope="module")
def photo_pairs():
    """(name, hr, sr) uint8 crops with a small synthetic degradation (noise)."""
    return [(name, photo(name, 96, 120), degrade(photo(name, 96, 120), 6.0, i)) for i, name in enumerate(PHOTOS)]


@pytest.fixture(scope="module")
def suite():
    return MetricSuite(["psnr", "ssim"], device="cpu")


def test_suite_psnr_ssim_match_skimage_on_y(photo_pairs, suite):
    for _, hr, sr in photo_pairs:
        scores = suite(tensor(sr), tensor(hr))
        expected_psnr = peak_signal_noise_ratio(y_channel(hr), y_channel(sr), data_range=255)
        assert scores["psnr"] == pytest.approx(expected_psnr, abs=1e-3)
        # pyiqa's SSIM rounds Y to 8-bit levels (as the MATLAB reference code does) before comparing.
        expected_ssim = structural_similarity(y_channel(hr).round(), y_channel(sr).round(), **SSIM_ARGS)
        assert scores["ssim"] == pytest.approx(expected_ssim, abs=1e-5)
        # ... so it differs from the unrounded pure-torch SSIM used during training only slightly.
        assert scores["ssim"] == pytest.approx(float(ssim_y(tensor(sr), tensor(hr))), abs=3e-3)
        assert scores["psnr"] == pytest.approx(float(psnr_y(tensor(sr), tensor(hr))), abs=1e-3)


def test_suite_rgb_and_crop_border_match_skimage(photo_pairs):
    _, hr, sr = photo_pairs[1]
    rgb = MetricSuite(["psnr"], device="cpu", color="rgb")(tensor(sr), tensor(hr))["psnr"]
    assert rgb == pytest.approx(peak_signal_noise_ratio(hr, sr, data_range=255), abs=1e-3)
    cropped = MetricSuite(["psnr", "ssim"], device="cpu", crop_border=4)(tensor(sr), tensor(hr))
    y_hr, y_sr = y_channel(hr)[4:-4, 4:-4], y_channel(sr)[4:-4, 4:-4]
    assert cropped["psnr"] == pytest.approx(peak_signal_noise_ratio(y_hr, y_sr, data_range=255), abs=1e-3)
    assert cropped["ssim"] == pytest.approx(structural_similarity(y_hr.round(), y_sr.round(), **SSIM_ARGS), abs=1e-5)
    with pytest.raises(ConfigError, match="crop_border=60 leaves nothing"):
        MetricSuite(["psnr"], device="cpu", crop_border=60)(tensor(sr), tensor(hr))


def test_identical_images_give_inf_psnr_and_unit_ssim(photo_pairs, suite):
    _, hr, _ = photo_pairs[0]
    scores = suite(tensor(hr), tensor(hr))
    assert scores["psnr"] == float("inf")
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-12)


def test_lpips_and_dists_run_on_random_backbone_files(with_random_hub, photo_pairs):
    suite = MetricSuite(["lpips", "dists"], device="cpu")
    _, hr, sr = photo_pairs[2]
    same = suite(tensor(hr), tensor(hr))
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert same["dists"] == pytest.approx(0.0, abs=1e-5)
    noisy = suite(tensor(sr), tensor(hr))
    heavy = suite(tensor(degrade(hr, 60.0, 9)), tensor(hr))
    assert 0 < noisy["dists"] < heavy["dists"]
    assert noisy["lpips"] > 0 and heavy["lpips"] > 0


def test_metric_names_and_variants_follow_the_protocol():
    import pyiqa.default_model_configs as configs

    assert metric_names(["maniqa-pipal", "PSNR", "psnr"]) == ["maniqa", "psnr"]
    with pytest.raises(ConfigError, match="unknown metric 'clipiqa\\+'"):
        metric_names(["clipiqa+"])
    defaults = configs.DEFAULT_CONFIGS
    assert METRICS["maniqa"].pyiqa_name == "maniqa-pipal"
    assert defaults["maniqa-pipal"]["metric_opts"]["train_dataset"] == "pipal"
    assert defaults["maniqa"]["metric_opts"]["train_dataset"] == "koniq"  # why plain 'maniqa' is not the protocol's
    assert METRICS["clipiqa"].pyiqa_name == "clipiqa" and "model_type" not in defaults["clipiqa"]["metric_opts"]
    assert defaults["lpips"]["metric_opts"]["net"] == "alex"
    assert defaults["musiq"]["metric_opts"]["pretrained"] == "koniq10k"


def test_pyiqa_is_imported_only_when_a_metric_is_built():
    # Importing the evaluation package, its modules and the weights command needs no pyiqa; building a metric does.
    modules = ["d3sr.evaluation", "d3sr.evaluation.suite", "d3sr.evaluation.folders", "d3sr.evaluation.weights",
               "d3sr.evaluation.report", "d3sr.evaluation.paper", "d3sr.check_weights"]  # fmt: skip
    code = (
        f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\n"
        "assert 'pyiqa' not in sys.modules, 'pyiqa imported at module level'\n"
        "from d3sr.evaluation.suite import build_metric\nbuild_metric('psnr', 'cpu')\nassert 'pyiqa' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
