"""Tiling: the blend is exact for local operations, tiles cover the image, and tiled SR stays close to untiled.

Measured on the tiny random model of tests/inference/conftest.py (images in [0, 1], no colour fix): astronaut
×4-downscaled to 128² → 512² output with tile.size=256, tile.overlap=64: max |tiled − untiled| = 1.0, mean 0.077;
a 64² crop → 256² with tiles of 128, overlap 64: max 1.0, mean 0.099. The difference comes from GroupNorm and
attention (VAE and UNet) seeing one tile instead of the whole image, which random tiny weights amplify. So the checks
on the model bound the mean difference and the seams and check that larger tiles come closer, and exactness is
checked on local operations. bench/tiling.py prints the same comparison per tile setting and per stage.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from d3sr.inference.tiling import check_tiling, gaussian_weights, run_generator, tile_count, tile_starts, tiled


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
    decode_only = run_generator(trained.generator, image, 64, 32, tiled_stages=("decode",))
    assert not torch.equal(decode_only, whole)
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
    assert difference.mean() < 0.12, difference.mean()  # measured 0.099

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
    assert differences[192] < differences[128], differences  # measured 0.084 vs 0.099


@pytest.mark.parametrize(("size", "overlap", "match"), [(100, 0, "multiple"), (64, 64, "smaller"), (64, 4, "overlap")])
def test_bad_tile_options_name_the_option(size, overlap, match):
    with pytest.raises(ValueError, match=match):
        check_tiling(size, overlap)
