"""D3SRPipeline: bundles and checkpoints reproduce the trained generator; any input size comes back exactly ×4."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from d3sr.errors import D3SRError
from d3sr.images import pad_to_multiple
from d3sr.images import upsample_lq as upsample
from d3sr.inference import D3SRPipeline


def reference(generator, lq: torch.Tensor) -> torch.Tensor:
    """What the training module's generator gives for lq in [0, 1] (bicubic ×4 at a multiple of 8), in [0, 1]."""
    with torch.no_grad():
        sr, _ = generator(upsample(lq) * 2 - 1)
    return (sr + 1) / 2


@pytest.fixture(scope="module")
def lq() -> torch.Tensor:
    return torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("source", ["checkpoint", "bundle"])
def test_round_trip_reproduces_the_trained_generator(trained, lq, source):
    pipe = D3SRPipeline.from_pretrained(getattr(trained, source), device="cpu", dtype=torch.float32, fuse=False,
                                        color_fix="none")  # fmt: skip
    # Float rounding of two call paths: measured at most 1.03e-5 with one thread (as under make test's workers).
    torch.testing.assert_close(pipe(lq), reference(trained.generator, lq), rtol=0, atol=2e-5)


def test_fused_and_merged_bundles_match_the_lora_bundle(trained, lq):
    # float32: fusing is exact to float32 rounding; under `precision: auto` a CPU with bf16 units would run bf16,
    # whose rounding differs between fused and unfused weights (measured 0.07 on an AVX512-BF16 CPU).
    options = {"device": "cpu", "dtype": "fp32", "color_fix": "none"}
    lora = D3SRPipeline.from_pretrained(trained.bundle, fuse=False, **options)(lq)
    fused = D3SRPipeline.from_pretrained(trained.bundle, fuse=True, **options)(lq)
    merged = D3SRPipeline.from_pretrained(trained.merged, **options)(lq)
    torch.testing.assert_close(fused, lora, rtol=0, atol=1e-4)
    torch.testing.assert_close(merged, fused, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (2, 2), (1, 5), (9, 3)])
def test_any_size_comes_back_exactly_x4(pipe, size):
    height, width = size
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    out = pipe(image)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (4 * width, 4 * height)


def test_inputs_and_outputs_keep_their_kind(pipe):
    single = torch.rand(3, 10, 14)
    out = pipe(single)
    assert out.shape == (3, 40, 56) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(pipe(single[None])[0], out)
    images = [Image.new("RGB", (5, 7), "red"), Image.new("L", (3, 4), 128)]
    outs = pipe(images)
    assert [o.size for o in outs] == [(20, 28), (12, 16)]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe(single * 255)
    broken = single.clone()
    broken[0, 2, 3], broken[1, 0, 0] = float("nan"), float("inf")
    for call in (pipe, lambda x: pipe.super_resolve(x[None])):
        with pytest.raises(ValueError, match="2 NaN or infinite value"):
            call(broken)
    with pytest.raises(TypeError):
        pipe("image.png")


def test_padding_reflects_and_falls_back_to_replication_for_tiny_images():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    padded = pad_to_multiple(x, 8)
    assert padded.shape == (1, 1, 8, 8) and torch.equal(padded[..., :3, :4], x)
    # 5 rows of padding on 3 rows cannot reflect: the border is replicated.
    assert torch.equal(padded[..., 3:, :4], x[..., 2:3, :].expand(1, 1, 5, 4))
    torch.testing.assert_close(pad_to_multiple(torch.ones(1, 3, 4, 12) * 0.3), torch.full((1, 3, 8, 16), 0.3))
    reflect = pad_to_multiple(torch.arange(10.0).view(1, 1, 1, 10).expand(1, 1, 10, 10), 8)
    assert reflect[0, 0, 0, 10:].tolist() == [8, 7, 6, 5, 4, 3]  # reflection about the last column


def test_speed_options_keep_the_result(trained):
    lq = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    pipe = D3SRPipeline.from_pretrained(trained.bundle, device="cpu", color_fix="none", tile_size=32, tile_overlap=16)
    reference = pipe(lq, tile_batch_size=1)
    torch.testing.assert_close(pipe(lq, tile_batch_size=4), reference, rtol=0, atol=2e-5)  # measured 1.01e-5
    torch.testing.assert_close(pipe(lq, channels_last=True), reference, rtol=0, atol=1e-4)
    assert pipe.generator.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_compile_gives_the_eager_result(trained):
    """torch.compile on the CPU: about 6 minutes to compile even the tiny model on 2 shared cores, then fast."""
    pipe = D3SRPipeline.from_pretrained(trained.bundle, device="cpu", color_fix="none", tile_size=0)
    lq = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    eager = pipe(lq)
    compiled = pipe(lq, compile=True)
    assert pipe.generator.unet._compiled_call_impl is not None  # compiled in place
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-4)


def test_bf16_runs_and_stays_in_range(trained):
    pipe = D3SRPipeline.from_pretrained(trained.bundle, device="cpu", dtype=torch.bfloat16)
    out = pipe(torch.rand(1, 3, 8, 8))
    assert pipe.dtype == torch.bfloat16 and pipe.generator.alphas_cumprod.dtype == torch.float32
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


def test_missing_base_weights_raise_the_loading_error(trained, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(trained.bundle, bundle)
    info = json.loads((bundle / "d3sr_bundle.json").read_text())
    info["generator"]["backbone"] = {"_target_": "d3sr.models.loading.pretrained", "model": str(tmp_path / "no-sd21"),
                                     "kind": "sd", "local_files_only": True}  # fmt: skip
    (bundle / "d3sr_bundle.json").write_text(json.dumps(info))
    with pytest.raises(D3SRError, match="Could not load the Stable Diffusion weights") as error:
        D3SRPipeline.from_pretrained(bundle, device="cpu")
    assert "text_encoder" not in str(error.value)  # the stored embedding is used: no text encoder needed


def test_not_a_bundle_or_checkpoint(tmp_path):
    with pytest.raises(D3SRError, match="neither"):
        D3SRPipeline.from_pretrained(tmp_path / "missing")
    with pytest.raises(D3SRError, match="not a d3sr inference bundle"):
        D3SRPipeline.from_pretrained(tmp_path)
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(D3SRError, match="cannot read"):
        D3SRPipeline.from_pretrained(tmp_path / "x.ckpt")
