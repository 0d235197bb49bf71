"""`python -m d3sr.held_out`: the held-out table of `make demo`, from the clean and the Real-ESRGAN-degraded LQ, on the
embedded and the extra held-out photos; the colour error / sharpness columns and the demo bounds."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from d3sr import held_out
from d3sr.data.degradation import RealESRGANDegradation, degrade_image, image_rng
from d3sr.errors import D3SRError
from d3sr.evaluation.held_out_scores import (
    BOUNDS_LINE,
    METHODS,
    HeldOutRow,
    bounds_cell,
    held_out_rows,
    held_out_table,
    missed_bounds,
    versus_bicubic,
)
from d3sr.images import (
    EMBEDDED_HELD_OUT,
    EMBEDDED_TRAIN,
    EXTRA_HELD_OUT,
    EXTRA_HELD_OUT_SIZE,
    EXTRA_OF_DISTRIBUTION,
    extra_photo_path,
    held_out_photo,
    read_image,
    upsample_lq,
)

REPO = Path(__file__).resolve().parents[2]


def test_held_out_tables_score_the_same_photos_from_both_lqs(demo_checkpoint, run_command, tmp_path):
    """One photo (`--photos`): the tables, the JSON and the bounds are the same code for each photo."""
    result = run_command("held_out", str(demo_checkpoint), "--tile-size", "0", "--photos", "chelsea", "--json",
                         str(tmp_path / "held_out.json"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "×4 from clean bicubic LQ" in result.stdout
        and "×4 from Real-ESRGAN-degraded LQ (set A, seed 0)" in result.stdout
    )
    tables = json.loads((tmp_path / "held_out.json").read_text())["tables"]
    assert {kind: [row["photo"] for row in rows] for kind, rows in tables.items()} == {
        "clean": ["chelsea"], "realesrgan": ["chelsea"]}  # fmt: skip
    for clean, degraded in zip(tables["clean"], tables["realesrgan"]):
        # Bicubic from the clean LQ: the figure of BENCHMARKS.md (31.68 dB), deterministic.
        assert abs(clean["scores"]["bicubic"][0] - 31.68) < 0.01, clean
        # The Real-ESRGAN LQ (blur, noise, JPEG) is the harder input for every method.
        assert all(degraded["scores"][m][0] < clean["scores"][m][0] for m in ("bicubic", "vae_only")), degraded
        # The colour error and sharpness of every method, and d3sr against the demo bounds, are written too.
        assert set(clean["color_error"]) == set(clean["sharpness"]) == {"bicubic", "vae_only", "d3sr"}
        assert set(clean["versus_bicubic"]) == {"psnr_gain_db", "color_ratio", "sharpness_gain"}
    # The default set is the embedded one; each table has its colour error / sharpness companion and the bounds.
    assert "Extra held-out photos" not in result.stdout
    assert result.stdout.count("| held-out photo | bicubic | VAE only | d3sr | colour d3sr ÷ bicubic |") == 2
    assert result.stdout.count("demo bounds: PSNR-Y ≥ bicubic − 0.5 dB") == 2


def test_photos_outside_the_chosen_set_are_one_error_line(run_command, tmp_path):
    result = run_command("held_out", str(tmp_path / "unused.ckpt"), "--photos", "kodak_hats")
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: --photos kodak_hats: none of them is in --set embedded"), result.stderr  # fmt: skip


def test_the_held_out_lq_uses_the_trainings_degradation_parameters(compose):
    """Set A has one owner, conf/degradation/realesrgan.yaml: the held-out LQ (`python -m d3sr.held_out`) is made with
    exactly the parameters training composes, so the same photo and seed give the same LQ both ways."""
    training = instantiate(compose(["experiment=demo", "degradation=realesrgan"]).degradation)
    assert vars(training) == vars(RealESRGANDegradation())  # what held_out.realesrgan_lq builds
    hr = held_out_photo("chelsea")[None, :, :64, :64]
    for seed in (0, 1, 2):
        lq = held_out.realesrgan_lq(seed)("chelsea", hr)
        assert torch.equal(lq, degrade_image(training, hr[0], image_rng(seed, "chelsea.png"), "cpu")[None])


# ------------------------------------------------------------------------------------------------------------------
# The extra held-out set (photos shipped with other installed packages), the colour error / sharpness columns and
# the demo bounds.


class BicubicPipeline:
    """Stands in for D3SRPipeline in held_out_rows: identity VAE, d3sr = bicubic ×4 (the exact bicubic figures)."""

    device = torch.device("cpu")
    generator = SimpleNamespace(encode=lambda image: image, decode=lambda latents: latents)

    def super_resolve(self, lq: torch.Tensor) -> torch.Tensor:
        return upsample_lq(lq)


@pytest.fixture(scope="module")
def bicubic_rows() -> dict[str, HeldOutRow]:
    """held_out_rows of both sets, clean LQ, with every method bicubic; SSIM-Y (float64 convolutions, ~2 s a call on
    2 busy cores, tested in tests/test_psnr_ssim.py) stubbed to 0.5 to keep this fast."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("d3sr.evaluation.held_out_scores.ssim_y", lambda sr, gt: torch.full(sr.shape[:1], 0.5))
        rows = held_out_rows(BicubicPipeline(), [*EMBEDDED_HELD_OUT, *EXTRA_HELD_OUT])
    return {row.photo: row for row in rows}


def test_the_extra_set_loads_from_its_packages_as_colour_photos_of_at_least_256_px():
    assert len(EXTRA_HELD_OUT) >= 4 and not set(EXTRA_HELD_OUT) & {*EMBEDDED_HELD_OUT, *EMBEDDED_TRAIN}
    for name, (distribution, relative) in EXTRA_HELD_OUT.items():
        # Resolved inside the installed distribution (no absolute path), from one of the extras CI installs.
        assert extra_photo_path(name) == Path(metadata.distribution(distribution).locate_file(relative))
        assert EXTRA_OF_DISTRIBUTION[distribution] in {"metrics", "app", "sweeps", "dev"}
        photo = held_out_photo(name)
        height, width = photo.shape[-2:]
        assert photo.shape[0] == 3 and 256 <= min(height, width) and max(height, width) <= EXTRA_HELD_OUT_SIZE, name
        assert height % 8 == 0 and width % 8 == 0, (name, height, width)
        # In colour: the mean spread between the channels (0 for gray; measured ≥ 0.094, kodak_houses).
        chroma = (photo.max(0).values - photo.min(0).values).mean()
        assert chroma > 0.05, (name, float(chroma))
    # Large photos are center-cropped: grace_hopper is 512×600 (w×h), cropped 44 rows top and bottom.
    full = read_image(extra_photo_path("grace_hopper"))
    torch.testing.assert_close(held_out_photo("grace_hopper"), full[:, 44:556, :512])


def test_a_missing_package_or_file_is_named(monkeypatch):
    monkeypatch.setitem(EXTRA_HELD_OUT, "absent", ("d3sr-no-such-package", "photo.jpg"))
    with pytest.raises(D3SRError, match="'d3sr-no-such-package', which is not installed"):
        held_out_photo("absent")
    monkeypatch.setitem(EXTRA_HELD_OUT, "absent", ("matplotlib", "matplotlib/mpl-data/sample_data/no_such.jpg"))
    with pytest.raises(D3SRError, match=r"not in the installed package 'matplotlib' .*no_such\.jpg"):
        held_out_photo("absent")


# Bicubic ×4 from the clean LQ, measured (deterministic): (colour error, sharpness). The embedded photos' mean
# sharpness, 0.310, is the independent reference measurement's ≈ 0.30 (the plain gradient-energy ratio gives
# 0.17 / 0.09 / 0.04 there).
BICUBIC = {
    "chelsea": (0.146, 0.413), "coffee": (0.232, 0.306), "rocket": (0.260, 0.210),
    "grace_hopper": (0.241, 0.443), "cheetah": (0.119, 0.196), "eiffel_tower": (0.408, 0.280),
    "kodak_hats": (0.153, 0.358), "kodak_houses": (0.234, 0.276),
}  # fmt: skip


def test_bicubic_colour_error_and_sharpness_on_both_sets(bicubic_rows):
    assert set(bicubic_rows) == set(BICUBIC)
    for name, (colour, sharp) in BICUBIC.items():
        row = bicubic_rows[name]
        assert abs(row.color_error["bicubic"] - colour) < 0.005, (name, row.color_error)
        assert abs(row.sharpness["bicubic"] - sharp) < 0.005, (name, row.sharpness)
    # Chelsea (measured 0.413) in the range of a ×4 bicubic: far below the HR's 1, above a blur's.
    assert 0.38 < bicubic_rows["chelsea"].sharpness["bicubic"] < 0.45
    mean = sum(bicubic_rows[name].sharpness["bicubic"] for name in EMBEDDED_HELD_OUT) / len(EMBEDDED_HELD_OUT)
    assert 0.27 < mean < 0.34, mean  # measured 0.310; the reference measurement ≈ 0.30
    # No 4-pixel block grid in a bicubic upsample: measured 0.93-1.29 (cheetah), where the demo's SR shows 3.3-5.1.
    assert all(0.9 < row.grid["bicubic"] < 1.35 for row in bicubic_rows.values()), {
        name: row.grid for name, row in bicubic_rows.items()}  # fmt: skip
    # The PSNR column is unchanged (the figures of BENCHMARKS.md).
    assert abs(bicubic_rows["chelsea"].scores["bicubic"][0] - 31.68) < 0.01


def test_the_table_shows_colour_error_sharpness_and_the_bounds(bicubic_rows):
    rows = [bicubic_rows[name] for name in EMBEDDED_HELD_OUT]
    table = held_out_table(rows)
    assert "| held-out photo | size | bicubic | VAE only | d3sr | d3sr − bicubic | d3sr − VAE only |" in table
    assert "Colour error (CIELAB a*b*, 1/8 scale; lower is better) / sharpness (RMS luma gradient ÷ HR's" in table
    header = (
        "| held-out photo | bicubic | VAE only | d3sr | colour d3sr ÷ bicubic | sharpness d3sr − bicubic "
        "| 4-px grid d3sr | bounds |"
    )
    assert header in table and BOUNDS_LINE in table
    # d3sr = bicubic here: PSNR and colour within their bounds, the sharpness gain 0 < 0.10.
    assert (
        "| chelsea | 0.146 / 0.413 | 0.146 / 0.413 | 0.146 / 0.413 | 1.000× | +0.000 | 0.93 | missed (sharpness) |"
        in table
    )
    assert table.count("missed (sharpness)") == 4  # three photos and the mean row
    assert table.splitlines()[5].startswith("| **mean** |  | 29.63 / ")


def test_the_bounds_name_what_d3sr_misses():
    def row(psnr: float, colour: float, sharp: float) -> HeldOutRow:
        scores = {"bicubic": (30.0, 0.8), "vae_only": (29.0, 0.7), "d3sr": (psnr, 0.8)}
        return HeldOutRow("photo", (8, 8), scores, {"bicubic": 1.0, "vae_only": 1.0, "d3sr": colour},
                          {"bicubic": 0.3, "vae_only": 0.3, "d3sr": sharp}, dict.fromkeys(METHODS, 1.0))  # fmt: skip

    assert missed_bounds(row(29.6, 1.19, 0.41)) == [] and bounds_cell(row(29.6, 1.19, 0.41)) == "met"
    assert missed_bounds(row(29.4, 1.19, 0.41)) == ["PSNR"]
    assert missed_bounds(row(29.6, 1.21, 0.41)) == ["colour"]
    assert bounds_cell(row(29.4, 1.3, 0.39)) == "missed (PSNR, colour, sharpness)"
    assert versus_bicubic(row(29.6, 1.5, 0.35)) == pytest.approx(
        {"psnr_gain_db": -0.4, "color_ratio": 1.5, "sharpness_gain": 0.05})  # fmt: skip


def test_the_extra_set_has_its_own_table_and_json(demo_checkpoint, tmp_path, monkeypatch, capsys):
    # One extra photo (the smallest) keeps the real pipeline cheap; --set extra runs only that set.
    title = held_out.PHOTO_SETS["extra"][0]
    monkeypatch.setitem(held_out.PHOTO_SETS, "extra", (title, ("cheetah",)))
    argv = [str(demo_checkpoint), "--set", "extra", "--lq", "clean", "--tile-size", "0", "--device", "cpu",
            "--json", str(tmp_path / "held_out.json")]  # fmt: skip
    assert held_out.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Extra held-out photos (from gradio, matplotlib, pyiqa), ×4 from clean bicubic LQ" in printed
    assert "Held-out photos, " not in printed and "| cheetah | 496×336 |" in printed
    result = json.loads((tmp_path / "held_out.json").read_text())
    assert result["tables"] == {} and result["rows"] == []
    (row,) = result["extra_tables"]["clean"]
    assert set(row) == {
        "photo",
        "size",
        "scores",
        "color_error",
        "sharpness",
        "grid",
        "versus_bicubic",
        "missed_bounds",
    }
    assert abs(row["color_error"]["bicubic"] - BICUBIC["cheetah"][0]) < 0.005
    assert abs(row["sharpness"]["bicubic"] - BICUBIC["cheetah"][1]) < 0.005
    # The real generator's outputs are scored: its VAE changes the image, so its numbers differ from bicubic's.
    assert row["color_error"]["vae_only"] != row["color_error"]["bicubic"]
    assert row["versus_bicubic"]["sharpness_gain"] == pytest.approx(
        row["sharpness"]["d3sr"] - row["sharpness"]["bicubic"])  # fmt: skip
