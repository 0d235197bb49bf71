"""Tiling: the blend is exact for local operations, tiles cover the image, batches and progress, tiled ≈ untiled.

Measured on the tiny random model of tests/inference/conftest.py (images in [0, 1], no colour fix): a 64² crop of
astronaut → 256² output with tiles of 128, overlap 64: mean |tiled − untiled| = 0.089 (0.099 with
vae_tiling=blend); tiles of 192: 0.051 (0.084 blend). With the default vae_tiling=groupnorm_sync the VAE stages are
exact to rounding (test_tiled_vae.py); what remains comes from the UNet's GroupNorm and attention seeing one tile,
which random tiny weights amplify. So the checks on the model bound the mean difference and the seams and check that
larger tiles come closer, and exactness is checked on local operations. bench/tiling.py prints the comparison per
tile setting and per stage.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from d3sr.inference.tiling import (
    check_tiling,
    gaussian_weights,
    run_generator,
    tile_batch,
    tile_count,
    tile_starts,
    tiled,
)


@pytest.mark.parametrize(("length", "tile", "overlap"), [(100, 32, 8), (64, 64, 16), (65, 64, 16), (7, 64, 8)])
def test_tiles_cover_the_side_with_the_overlap_and_end_flush(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(0 < b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_gaussian_weights_peak_in_the_centre_and_stay_positive():
    w = gaussian_weights(16, 24, torch.device("cpu"))
    assert w.shape == (1, 1, 16, 24) and w.min() > 0 and w.max() <= 1
    assert w[0, 0, 8, 12] > w[0, 0, 0, 12] and torch.allclose(w, w.flip(-1)) and torch.allclose(w, w.flip(-2))


@pytest.mark.parametrize(
    ("fn", "tile", "overlap"),
    [(lambda t: t * 2 + 1, 64, 16),  # pointwise, scale 1
     (lambda t: F.avg_pool2d(t, 8), 64, 16),  # 8×8 blocks → one value, scale 1/8 (like the VAE encoder)
     (lambda t: F.interpolate(t, scale_factor=8, mode="nearest"), 8, 2)],  # scale 8 (like the decoder)
)  # fmt: skip
def test_blend_is_exact_for_local_operations(fn, tile, overlap):
    x = torch.randn(2, 3, 200, 136)
    torch.testing.assert_close(tiled(fn, x, tile, overlap), fn(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("static", [False, True])
def test_batched_tiles_give_the_tile_by_tile_result(static):
    x = torch.randn(2, 3, 100, 76)
    calls = []

    def fn(t):
        calls.append(t.shape[0])
        return F.avg_pool2d(torch.tanh(t), 2)  # not exact under the blend: the batches must match tile by tile

    one = tiled(fn, x, 32, 8, batch_size=1)
    calls.clear()
    batched = tiled(fn, x, 32, 8, batch_size=4, static=static)
    torch.testing.assert_close(batched, one, rtol=0, atol=1e-6)
    assert tile_count(100, 76, 32, 8) == 12 and calls == [8, 8, 8]  # 4×3 tiles of 2 images, 4 tiles per call
    calls.clear()
    tiled(fn, x[..., :68, :], 32, 8, batch_size=4, static=static)  # 3×3 tiles: 4 + 4 + 1
    assert calls == ([8, 8, 8] if static else [8, 8, 2])


def test_auto_batch_fills_one_512_tile():
    assert [tile_batch("auto", size) for size in (512, 384, 256, 128, 0)] == [1, 1, 4, 16, 1]
    assert tile_batch(3, 128) == 3


def test_progress_reports_each_tiled_stage_with_its_tile_count(trained):
    image = torch.rand(1, 3, 128, 96) * 2 - 1  # latent 16×12
    calls = []
    run_generator(trained.generator, image, 64, 32, tile_batch_size=4, progress=lambda *c: calls.append(c))
    # The UNet: latent tiles of 8, overlap 4: 3×2 = 6 tiles, 4 per call.
    assert [c for c in calls if c[0] == "denoise"] == [("denoise", 0, 6), ("denoise", 4, 6), ("denoise", 6, 6)]
    # The synchronised VAE: 2×2 cores of 8 latent pixels, through every layer pass.
    from d3sr.inference.tiled_vae import count_passes

    vae = trained.generator.vae
    for stage, net in (("encode", vae.encoder), ("decode", vae.decoder)):
        total = count_passes(net) * 4
        reported = [c for c in calls if c[0] == stage]
        assert reported[0] == (stage, 0, total) and reported[-1] == (stage, total, total)
    assert [c[0] for c in calls] == sorted((c[0] for c in calls), key=["encode", "denoise", "decode"].index)


def test_one_tile_is_exactly_the_untiled_generator(trained):
    image = torch.rand(1, 3, 96, 64) * 2 - 1
    with torch.no_grad():
        expected, _ = trained.generator(image)
    assert torch.equal(run_generator(trained.generator, image, tile_size=0), expected)
    assert torch.equal(run_generator(trained.generator, image, tile_size=96, tile_overlap=32), expected)


def test_tiled_stages_choose_what_is_tiled(trained):
    image = torch.rand(1, 3, 128, 96) * 2 - 1
    whole = run_generator(trained.generator, image)
    assert torch.equal(run_generator(trained.generator, image, 64, 32, tiled_stages=()), whole)
    unet_only = run_generator(trained.generator, image, 64, 32, tiled_stages=("denoise",))
    assert not torch.equal(unet_only, whole)
    with pytest.raises(ValueError, match="tiled_stages"):
        run_generator(trained.generator, image, 64, 32, tiled_stages=("unet",))


def test_tiled_output_stays_close_to_untiled_without_seams(pipe):
    from d3sr.images import embedded_lq

    lq = embedded_lq("astronaut")[None, :, :64, :64]  # 256² output: 3×3 tiles of 128 with 64 overlap
    whole = pipe.super_resolve(lq, tile_size=0, color_fix="none")
    tiles = pipe.super_resolve(lq, tile_size=128, tile_overlap=64, color_fix="none")
    assert tile_count(256, 256, 128, 64) == 9
    assert whole.shape == tiles.shape == (1, 3, 256, 256)
    difference = (whole - tiles).abs()
    assert difference.mean() < 0.11, difference.mean()  # measured 0.089 (blend VAE: 0.099)

    # Seams: the tiled image changes no more across tile borders than the untiled image does there.
    def jump(image, columns):
        return (image[..., :, columns] - image[..., :, [c - 1 for c in columns]]).abs().mean()

    borders = [64, 128, 192]  # tile starts
    assert jump(tiles, borders) < 2 * jump(whole, borders) + 0.02


def test_larger_tiles_bring_the_tiled_output_closer(pipe):
    from d3sr.images import embedded_lq

    lq = embedded_lq("astronaut")[None, :, :64, :64]  # 256² output
    whole = pipe.super_resolve(lq, tile_size=0, color_fix="none")
    differences = {
        tile: (pipe.super_resolve(lq, tile_size=tile, tile_overlap=64, color_fix="none") - whole).abs().mean().item()
        for tile in (128, 192)  # 3×3 and 2×2 tiles
    }
    assert differences[192] < differences[128], differences  # measured 0.051 vs 0.089


@pytest.mark.parametrize(("size", "overlap", "match"), [(100, 0, "multiple"), (64, 64, "smaller"), (64, 4, "overlap")])
def test_bad_tile_options_name_the_option(size, overlap, match):
    with pytest.raises(ValueError, match=match):
        check_tiling(size, overlap)
