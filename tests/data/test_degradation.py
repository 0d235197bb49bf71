"""Degradations: noise, JPEG, shapes and ranges, per-image determinism, USM, settings, configs, the data module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from d3sr.data import RealESRGANDegradation
from d3sr.data.datasets import random_crop
from d3sr.data.degradation import BicubicDegradation, gaussian_noise, jpeg, poisson_noise, quantize, usm_sharp
from d3sr.errors import ConfigError
from d3sr.images import embedded_photo, generator_input

# Everything but stage-1 noise switched off: no blur, no resize, no sinc, JPEG at its finest step, ×1.
NOISE_ONLY = dict(
    scale=1,
    stage1=dict(blur_prob=0.0, resize_prob=(0, 0, 1), gaussian_noise_prob=1.0, gray_noise_prob=1.0,
                noise_range=(20, 20), jpeg_range=(100, 100)),
    stage2=dict(blur_prob=0.0, resize_prob=(0, 0, 1), gaussian_noise_prob=1.0, noise_range=(0, 0),
                jpeg_range=(100, 100)),
    final=dict(sinc_prob=0.0),
)  # fmt: skip

# The flat keys of conf/degradation/{realesrgan,stablesr}.yaml before the nested layout, value for value.
KERNELS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
OLD_SET_A = dict(
    scale=4, kernel_list=KERNELS, kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03], sinc_prob=0.1,
    blur_sigma=[0.2, 3], betag_range=[0.5, 4], betap_range=[1, 2], resize_prob=[0.2, 0.7, 0.1],
    resize_range=[0.15, 1.5], gaussian_noise_prob=0.5, noise_range=[1, 30], poisson_scale_range=[0.05, 3],
    gray_noise_prob=0.4, jpeg_range=[30, 95],
    second_blur_prob=0.8, kernel_list2=KERNELS, kernel_prob2=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03], sinc_prob2=0.1,
    blur_sigma2=[0.2, 1.5], betag_range2=[0.5, 4], betap_range2=[1, 2], resize_prob2=[0.3, 0.4, 0.3],
    resize_range2=[0.3, 1.2], gaussian_noise_prob2=0.5, noise_range2=[1, 25], poisson_scale_range2=[0.05, 2.5],
    gray_noise_prob2=0.4, jpeg_range2=[30, 95],
    final_sinc_prob=0.8, resize_first_prob=0.5, kernel_range=[7, 21],
    usm=False, usm_weight=0.5, usm_radius=50, usm_threshold=10, no_degradation_prob=0.0,
)  # fmt: skip
OLD_SET_B = dict(
    scale=4, kernel_list=KERNELS, kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03], sinc_prob=0.1,
    blur_sigma=[0.2, 1.5], betag_range=[0.5, 2], betap_range=[1, 1.5], resize_prob=[0.2, 0.7, 0.1],
    resize_range=[0.3, 1.5], gaussian_noise_prob=0.5, noise_range=[1, 15], poisson_scale_range=[0.05, 2.0],
    gray_noise_prob=0.4, jpeg_range=[60, 95],
    second_blur_prob=0.5, kernel_list2=KERNELS, kernel_prob2=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03], sinc_prob2=0.1,
    blur_sigma2=[0.2, 1.0], betag_range2=[0.5, 2], betap_range2=[1, 1.5], resize_prob2=[0.3, 0.4, 0.3],
    resize_range2=[0.6, 1.2], gaussian_noise_prob2=0.5, noise_range2=[1, 12], poisson_scale_range2=[0.05, 1.0],
    gray_noise_prob2=0.4, jpeg_range2=[60, 100],
    final_sinc_prob=0.8, resize_first_prob=0.5, kernel_range=[7, 21],
    usm=True, usm_weight=0.5, usm_radius=50, usm_threshold=10, no_degradation_prob=0.01,
)  # fmt: skip
TOP_LEVEL_KEYS = {
    "scale": "scale", "second_blur_prob": "stage2.blur_prob", "final_sinc_prob": "final.sinc_prob",
    "resize_first_prob": "final.resize_first_prob", "kernel_range": "kernel_range", "usm": "usm.enabled",
    "usm_weight": "usm.weight", "usm_radius": "usm.radius", "usm_threshold": "usm.threshold",
    "no_degradation_prob": "no_degradation_prob",
}  # fmt: skip
BLUR_KEYS = {"kernel_list": "kernel_list", "kernel_prob": "kernel_prob", "sinc_prob": "sinc_prob",
             "blur_sigma": "sigma_range", "betag_range": "betag_range", "betap_range": "betap_range"}  # fmt: skip


def new_key(old: str) -> str:
    """Where an old flat key lives now: stage keys lose their `2` suffix, blur keys move under `blur`."""
    if old in TOP_LEVEL_KEYS:
        return TOP_LEVEL_KEYS[old]
    stage, key = ("stage2", old[:-1]) if old.endswith("2") else ("stage1", old)
    return f"{stage}.blur.{BLUR_KEYS[key]}" if key in BLUR_KEYS else f"{stage}.{key}"


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    """Six different 128² crops of scikit-image photos."""
    crops = []
    for name in ("astronaut", "coffee", "chelsea"):
        image = embedded_photo(name)
        crops += [random_crop(image, 128, np.random.default_rng(seed)) for seed in (0, 1)]
    return crops


def make_batch(degradation, images, seeds) -> dict[str, torch.Tensor]:
    """The collated batch SRSamples would produce: gt and the parameters drawn from default_rng(seed)."""
    samples = [{"gt": g, **degradation.sample(np.random.default_rng(s))} for g, s in zip(images, seeds)]
    return default_collate(samples)


def degrade(degradation, images, seeds) -> torch.Tensor:
    """The LQ batch of `images` with the parameters drawn from default_rng(seed)."""
    return degradation(make_batch(degradation, images, seeds))["lq"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def flat_leaves(node: dict, prefix: str = "") -> dict:
    """{'a.b.c': value} for every non-mapping value of a nested dict."""
    leaves = {}
    for key, value in node.items():
        if isinstance(value, dict):
            leaves.update(flat_leaves(value, f"{prefix}{key}."))
        else:
            leaves[prefix + key] = value
    return leaves


def test_gaussian_noise_sigma_through_the_pipeline_on_flat_gray():
    degradation = RealESRGANDegradation(**NOISE_ONLY)
    gray = [torch.full((3, 128, 128), 0.5)] * 2
    noise = degrade(degradation, gray, [0, 1]) - 0.5
    assert noise.std().item() == pytest.approx(20 / 255, rel=0.03)
    assert abs(noise.mean().item()) < 0.002
    torch.testing.assert_close(noise[:, 0], noise[:, 2])  # gray noise: the same on every channel
    assert not torch.equal(noise[0], noise[1])  # each image its own noise


def test_noise_generators_match_their_distributions():
    generator = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 256, 256), 0.5)
    color = gaussian_noise(flat, 10 / 255, gray=False, generator=generator)
    assert color.std().item() == pytest.approx(10 / 255, rel=0.02)
    assert torch.corrcoef(color[0].reshape(3, -1))[0, 1].abs() < 0.02  # independent channels
    # A flat image has one 8-bit level, so 1 photon per unit: noise = (Poisson(0.5) − 0.5)·scale, variance 0.5·scale².
    shot = poisson_noise(flat, 0.1, gray=False, generator=generator)
    assert shot.std().item() == pytest.approx(math.sqrt(0.5) * 0.1, rel=0.03)
    assert abs(shot.mean().item()) < 0.002
    gray = poisson_noise(flat, 0.1, gray=True, generator=generator)
    assert gray.shape == (1, 1, 256, 256)


@pytest.mark.parametrize("table", ["diffjpeg", "libjpeg"])
def test_jpeg_error_grows_as_quality_drops_and_tracks_libjpeg(photos, table):
    cv2 = pytest.importorskip("cv2")
    image = quantize(photos[0][None])
    errors = {}
    for quality in (30, 95):
        ours = jpeg(image, torch.tensor([float(quality)]), table)
        array = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        _, code = cv2.imencode(".jpg", array[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        reference = torch.from_numpy(cv2.imdecode(code, cv2.IMREAD_COLOR)[..., ::-1].copy()).permute(2, 0, 1) / 255
        errors[quality] = psnr(ours, image)
        assert errors[quality] == pytest.approx(psnr(reference[None], image), abs=1.5)
    assert errors[95] > errors[30] + 5
    # Per-image quality in one batch equals one image at a time.
    both = jpeg(image.repeat(2, 1, 1, 1), torch.tensor([30.0, 95.0]), table)
    torch.testing.assert_close(both[1:], jpeg(image, torch.tensor([95.0]), table))


def test_shapes_range_and_8_bit_quantisation(photos):
    degradation = RealESRGANDegradation()
    batch = make_batch(degradation, photos, range(6))
    out = degradation(batch)
    assert set(out) == {"gt", "lq"}  # the sampled parameters are consumed
    lq = out["lq"]
    assert lq.shape == (6, 3, 32, 32)  # ×4 smaller: the generator's ×4 upsampling is not the degradation's job
    assert lq.min() >= 0 and lq.max() <= 1
    torch.testing.assert_close(lq * 255, (lq * 255).round(), rtol=0, atol=1e-4)
    assert out["gt"] is batch["gt"] and "gt_usm" not in out  # no USM in set A
    assert generator_input(lq).shape == batch["gt"].shape  # the generator sees the LQ at the HR size


def test_same_image_same_degradation_whatever_the_batch(photos):
    degradation = RealESRGANDegradation()
    images, seeds = photos[:4], [10, 11, 12, 13]
    whole = degrade(degradation, images, seeds)
    halves = torch.cat([degrade(degradation, images[i : i + 2], seeds[i : i + 2]) for i in (0, 2)])
    reversed_ = degrade(degradation, images[::-1], seeds[::-1]).flip(0)
    assert torch.equal(whole, halves) and torch.equal(whole, reversed_)
    assert torch.equal(whole, degrade(degradation, images, seeds))  # same seed, same LQ
    other = degrade(degradation, images, [20, 21, 22, 23])
    for i in range(4):
        assert (other[i] - whole[i]).abs().mean() > 1e-3  # different seed, different degradation


def test_degraded_batch_differs_from_bicubic(photos):
    degradation = RealESRGANDegradation()
    batch = make_batch(degradation, photos, range(6))
    real, bicubic = degradation(batch)["lq"], BicubicDegradation()(batch)["lq"]
    assert real.shape == bicubic.shape
    assert all((real[i] - bicubic[i]).abs().mean() > 0.01 for i in range(6))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_degradation_is_the_quantised_antialiased_bicubic_downscale(photos, scale):
    gt = torch.stack(photos[:3])[..., :120, :96]  # 120×96: not square
    out = BicubicDegradation(scale)({"gt": gt, "index": torch.arange(3)})
    assert set(out) == {"gt", "lq", "index"} and out["gt"] is gt
    # Written out: F.interpolate to the exact LQ size (not by scale factor), antialiased, then 8-bit quantisation.
    size = (120 // scale, 96 // scale)
    expected = F.interpolate(gt, size=size, mode="bicubic", antialias=True, align_corners=False)
    expected = (expected.clamp(0, 1) * 255).round() / 255
    assert torch.equal(out["lq"], expected)
    with pytest.raises(ValueError, match="not divisible"):
        BicubicDegradation(scale)({"gt": gt[..., :95]})
    with pytest.raises(ConfigError, match="degradation.scale"):
        BicubicDegradation(0)


def test_clean_samples_are_the_bicubic_degradation(photos):
    degradation = RealESRGANDegradation(no_degradation_prob=1.0)
    batch = make_batch(degradation, photos[:3], range(3))
    assert torch.equal(degradation(batch)["lq"], BicubicDegradation()(batch)["lq"])
    # With USM the clean LQ is made from the sharpened target, like every other LQ.
    sharpened = RealESRGANDegradation(no_degradation_prob=1.0, usm={"enabled": True})(batch)
    assert torch.equal(sharpened["lq"], BicubicDegradation()({"gt": sharpened["gt_usm"]})["lq"])


def test_stage_probabilities_are_drawn_per_image():
    degradation = RealESRGANDegradation()
    draws = default_collate([degradation.sample(np.random.default_rng(seed)) for seed in range(400)])
    assert draws["blur1"].all()  # stage 1 always blurs (blur_prob 1)
    assert draws["blur2"].float().mean() == pytest.approx(0.8, abs=0.07)
    assert draws["final_resize_first"].float().mean() == pytest.approx(0.5, abs=0.08)
    assert not draws["no_degradation"].any()
    quality = draws["jpeg_quality2"]
    assert 30 <= quality.min() and quality.max() <= 95
    never = RealESRGANDegradation(stage1={"blur_prob": 0.0}, stage2={"blur_prob": 0.0})
    draws = default_collate([never.sample(np.random.default_rng(seed)) for seed in range(20)])
    assert not draws["blur1"].any() and not draws["blur2"].any()


def test_usm_sharpens_the_target(photos):
    degradation = RealESRGANDegradation(usm={"enabled": True})
    batch = make_batch(degradation, photos[:2], [0, 1])
    out = degradation(batch)
    assert torch.equal(out["gt"], batch["gt"])  # the plain target stays; the sharpened one is gt_usm

    def high_frequency_energy(x: torch.Tensor) -> float:
        laplacian = (
            x[..., 1:-1, 2:] + x[..., 1:-1, :-2] + x[..., 2:, 1:-1] + x[..., :-2, 1:-1] - 4 * x[..., 1:-1, 1:-1]
        )
        return float((laplacian**2).mean())

    assert high_frequency_energy(out["gt_usm"]) > 1.2 * high_frequency_energy(batch["gt"])
    assert out["gt_usm"].min() >= 0 and out["gt_usm"].max() <= 1
    flat = torch.full((1, 3, 64, 64), 0.3)
    torch.testing.assert_close(usm_sharp(flat), flat)  # nothing to sharpen


def test_bad_settings_and_batches_fail_clearly(photos):
    cases = [
        (dict(stage1={"blur": {"kernel_prob": (0.5, 0.5, 0, 0, 0, 0.5)}}), "degradation.stage1.blur.kernel_prob"),
        (dict(stage2={"resize_range": (1.2, 0.3)}), "degradation.stage2.resize_range"),
        (dict(stage1={"jpeg_range": (0, 95)}), "degradation.stage1.jpeg_range"),
        (dict(stage1={"blur": {"kernel_list": ("iso", "box"), "kernel_prob": (0.5, 0.5)}}),
         "degradation.stage1.blur.kernel_list"),
        (dict(stage2={"blur": {"sigma_range": (0, 1)}}), "degradation.stage2.blur.sigma_range"),
        (dict(stage2={"blur": {"betap_range": (1.5, 2)}}), "degradation.stage2.blur.betap_range must contain 1"),
        (dict(stage2={"blur_prob": 1.5}), "degradation.stage2.blur_prob"),
        (dict(stage2={"blur_sigma2": (0.2, 1.0)}), "degradation.stage2.blur_sigma2 is not a setting"),
        (dict(final={"sinc_prob": -0.1}), "degradation.final.sinc_prob"),
        (dict(usm={"radius": 0}), "degradation.usm.radius"),
        (dict(scale=2.5), "degradation.scale"),
        (dict(jpeg_table="transposed"),
         "degradation.jpeg_table='transposed' is not valid; choose one of 'diffjpeg', 'libjpeg'"),
        (dict(resize_by="factor"),
         "degradation.resize_by='factor' is not valid; choose one of 'size', 'scale_factor'"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            RealESRGANDegradation(**kwargs)
    with pytest.raises(ValueError, match="sample"):
        RealESRGANDegradation()({"gt": photos[0][None]})


@pytest.mark.parametrize(("name", "old"), [("realesrgan", OLD_SET_A), ("stablesr", OLD_SET_B)])
def test_configs_hold_the_old_values_in_the_nested_layout(compose, name, old):
    """stablesr.yaml is realesrgan.yaml plus the set-B overrides; composed, both equal the old flat files."""
    cfg = OmegaConf.to_container(compose([f"degradation={name}"]).degradation, resolve=True)
    expected = {new_key(key): value for key, value in old.items()}
    expected |= {"_target_": "d3sr.data.degradation.RealESRGANDegradation", "stage1.blur_prob": 1.0}
    expected |= {"jpeg_table": "diffjpeg", "resize_by": "size"}  # the parity keys, added after the flat layout
    assert flat_leaves(cfg) == expected


def test_python_defaults_are_set_a_and_config_values_reach_the_object(compose):
    def settings(d: RealESRGANDegradation) -> tuple:
        return (d.scale, d.stage1, d.stage2, d.final, d.kernel_range, d.usm, d.no_degradation_prob, d.jpeg_table,
                d.resize_by)  # fmt: skip

    assert settings(instantiate(compose(["degradation=realesrgan"]).degradation)) == settings(RealESRGANDegradation())
    stablesr = instantiate(compose(["degradation=stablesr", "degradation.stage2.blur_prob=0.3"]).degradation)
    assert stablesr.usm.enabled and stablesr.no_degradation_prob == 0.01
    assert stablesr.stage2.blur_prob == 0.3 and stablesr.stage2.blur.sigma_range == (0.2, 1.0)
    assert stablesr.stage1.blur.kernel_prob == RealESRGANDegradation().stage1.blur.kernel_prob  # inherited from set A
    assert stablesr.jpeg_table == "diffjpeg" and stablesr.resize_by == "size"
    overrides = ["degradation=realesrgan", "degradation.jpeg_table=libjpeg", "degradation.resize_by=scale_factor"]
    libjpeg = instantiate(compose(overrides).degradation)
    assert libjpeg.jpeg_table == "libjpeg" and libjpeg.resize_by == "scale_factor"


def test_configs_build_and_the_data_module_degrades_per_image(compose):
    cfg = compose(["experiment=demo", "degradation=realesrgan", "data.crop_size=128"])
    assert cfg.degradation._target_.endswith("RealESRGANDegradation")

    def first_four(batch_size: int) -> torch.Tensor:
        cfg.data.batch_size = batch_size
        datamodule = instantiate(cfg.data)
        lq = []
        for batch in datamodule.train_dataloader():
            batch = datamodule.on_after_batch_transfer(batch, 0)
            assert set(batch) == {"gt", "lq", "index"}
            assert batch["gt"].shape == (batch_size, 3, 128, 128) and batch["lq"].shape == (batch_size, 3, 32, 32)
            lq.append(batch["lq"])
            if sum(len(x) for x in lq) >= 4:
                return torch.cat(lq)[:4]

    assert torch.equal(first_four(4), first_four(2))
