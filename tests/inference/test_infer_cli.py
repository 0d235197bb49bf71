"""`python -m d3sr.infer`: input kinds, atomic PNG outputs, untouched inputs, unreadable files and exit codes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from d3sr.errors import run_reporting_errors
from d3sr.infer import infer, read_input


def run_cli(compose, *overrides: str) -> int:
    """d3sr.infer's entry point (conf/infer.yaml + overrides, user errors → status 2) in this process."""
    cfg = compose(list(overrides), config_name="infer")
    try:
        return run_reporting_errors(infer, cfg)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def inputs(tmp_path):
    """A folder with an RGB JPEG, a gray PNG, an RGBA PNG, 16-bit PNG and TIFF, an EXIF-rotated JPEG."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
    Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8)).save(folder / "gray.png")
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0] = (0, 0, 0, 0)  # a fully transparent black pixel
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    deep = (rng.random((5, 6)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    Image.fromarray(deep).save(folder / "deep16_tiff.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(rng.integers(0, 256, (4, 10, 3), dtype=np.uint8)).save(folder / "rotated.jpg", exif=exif.tobytes())
    (folder / "notes.txt").write_text("not an image, not an input")
    return folder


def test_readers_handle_gray_alpha_16_bit_and_exif(inputs):
    gray, _ = read_input(inputs / "gray.png")
    assert gray.shape == (3, 5, 7) and torch.equal(gray[0], gray[1])
    white, none = read_input(inputs / "rgba.png")
    assert none is None and torch.equal(white[:, 0, 0], torch.ones(3))  # transparent → white
    rgb, alpha = read_input(inputs / "rgba.png", alpha="keep")
    assert alpha.shape == (1, 4, 6) and alpha[0, 0, 0] == 0 and torch.equal(rgb[:, 0, 0], torch.zeros(3))
    deep, _ = read_input(inputs / "deep16.png")
    expected = torch.from_numpy(np.asarray(Image.open(inputs / "deep16.png")).astype(np.float32) / 65535)
    torch.testing.assert_close(deep[0], expected)
    torch.testing.assert_close(read_input(inputs / "deep16_tiff.tif")[0], deep)
    assert read_input(inputs / "rotated.jpg")[0].shape == (3, 10, 4)  # stored 4×10, displayed 10×4


def test_folder_is_upscaled_to_pngs_and_left_untouched(trained, inputs, tmp_path, compose, capsys):
    before = digest(inputs)
    out = tmp_path / "out"
    code = run_cli(compose, f"bundle={trained.bundle}", f"input={inputs}", f"output={out}", "inference.device=cpu",
                   "alpha=keep")  # fmt: skip
    assert code == 0
    assert digest(inputs) == before
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {"rgb.png": (36, 24), "gray.png": (28, 20), "rgba.png": (24, 16), "deep16.png": (24, 20),
                     "deep16_tiff.png": (24, 20), "rotated.png": (16, 40)}  # fmt: skip
    assert Image.open(out / "rgba.png").mode == "RGBA" and Image.open(out / "rgb.png").mode == "RGB"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    summary = capsys.readouterr().out
    assert f"→ {out}" in summary and "s/image" in summary


def test_collisions_and_the_input_folder_are_refused(trained, inputs, tmp_path, compose, capsys):
    # deep16.png and deep16.tif would both become deep16.png.
    (inputs / "deep16_tiff.tif").rename(inputs / "deep16.tif")
    assert run_cli(compose, f"bundle={trained.bundle}", f"input={inputs}", f"output={tmp_path / 'o'}") == 2
    assert "would both be written" in capsys.readouterr().err
    (inputs / "deep16.tif").unlink()
    before = digest(inputs)
    assert run_cli(compose, f"bundle={trained.bundle}", f"input={inputs}", f"output={inputs}") == 2
    assert "input folder" in capsys.readouterr().err
    single = inputs / "gray.png"
    assert run_cli(compose, f"bundle={trained.bundle}", f"input={single}", f"output={inputs}") == 2
    assert "overwrite an input" in capsys.readouterr().err
    assert digest(inputs) == before


def test_an_output_that_cannot_be_a_folder_is_refused_before_the_model_loads(inputs, tmp_path, compose, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    missing_bundle = tmp_path / "no-bundle"  # loading it would fail: the output check must come first
    for output, message in [(blocker, "is a file, not a folder"), (blocker / "sub", f"{blocker} is a file")]:
        assert run_cli(compose, f"bundle={missing_bundle}", f"input={inputs}", f"output={output}") == 2
        error = capsys.readouterr().err
        assert message in error and "no-bundle" not in error, error
    assert blocker.read_text() == "not a folder"


def test_unreadable_files_are_skipped_with_status_1(trained, tmp_path, compose, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (4, 4), "blue").save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    code = run_cli(compose, f"bundle={trained.bundle}", f"input={folder}", f"output={tmp_path / 'out'}")
    captured = capsys.readouterr()
    assert code == 1 and "broken.png" in captured.err and "1 unreadable file skipped" in captured.out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.png"]


def test_one_unreadable_file_is_an_error_with_status_2(trained, tmp_path, run_command):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    result = run_command("infer", f"bundle={trained.bundle}", f"input={bad}", f"output={tmp_path / 'o'}",
                         "inference.device=cpu", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot read") and "Traceback" not in result.stderr
    # The model was loaded: the command said, in one line, what precision and memory format 'auto' chose.
    resolved = [line for line in result.stdout.splitlines() if "inference: precision auto -> " in line]
    assert len(resolved) == 1 and ", channels_last auto -> " in resolved[0], result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jpg"]  # nothing written, no Hydra run folder


def test_embedded_photos_come_back_at_their_size(trained, tmp_path, compose):
    out = tmp_path / "demo"
    code = run_cli(compose, f"bundle={trained.checkpoint}", "input=embedded", f"output={out}", "inference.tile_size=0",
                   "inference.color_fix=wavelet")  # fmt: skip
    assert code == 0
    assert Image.open(out / "chelsea.png").size == (448, 300)  # 451×300 cropped to multiples of 4
    assert len(list(out.iterdir())) == 4  # the three held-out photos and astronaut


def test_large_images_show_their_tiles_progress(trained, tmp_path, compose, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(image)
    # 48×64 output in tiles of 32: 2×2 VAE cores through every layer, 2×3 UNet tiles.
    code = run_cli(compose, f"bundle={trained.bundle}", f"input={image}", f"output={tmp_path / 'out'}",
                   "inference.device=cpu", "inference.tile_size=32", "inference.tile_overlap=16")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and (tmp_path / "out" / "photo.png").exists()
    # One bar per tiled stage, with its total: tiles × layers for the synchronised VAE, tiles for the UNet (the bars
    # are cleared when done, and fast bars show only their start).
    assert "VAE encode:" in err and "UNet:" in err and "0/6 " in err and "VAE decode:" in err


def test_tile_progress_keeps_one_bar_per_stage():
    from d3sr.infer import TileProgress

    progress = TileProgress()
    progress("encode", 0, 40)
    progress("encode", 20, 40)
    assert progress.bar.total == 40 and progress.bar.n == 20
    progress("denoise", 0, 6)
    progress("denoise", 4, 6)
    assert progress.stage == "denoise" and progress.bar.total == 6 and progress.bar.n == 4
    progress.close()
    assert progress.bar is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inference.tile_batch_size=0", "inference.tile_batch_size"),
        ("inference.vae_tiling=exact", "inference.vae_tiling"),
        ("inference.compile=maybe", "inference.compile"),
        ("inference.color_fix=hist", "inference.color_fix"),
        ("inference.tile_size=100", "inference.tile_size"),
        ("inference.precision=fp8", "inference.precision"),
        ("inference.channels_last=maybe", "inference.channels_last"),
        ("inference.device=tpu", "inference.device"),
        ("alpha=black", "alpha"),
    ],
)
def test_bad_options_name_the_option(trained, tmp_path, compose, capsys, override, message):
    code = run_cli(compose, f"bundle={trained.bundle}", "input=embedded", f"output={tmp_path}", override)
    assert code == 2 and message in capsys.readouterr().err


def test_animated_gifs_in_a_folder_are_upscaled_from_their_first_frame_with_a_note(trained, tmp_path, compose, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    frames = [Image.new("RGB", (6, 5), colour) for colour in ((250, 10, 10), (10, 250, 10), (10, 10, 250))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.new("RGB", (4, 4), (120, 120, 120)).save(folder / "still.gif")
    before = digest(folder)
    code = run_cli(compose, f"bundle={trained.bundle}", f"input={folder}", f"output={tmp_path / 'out'}",
                   "inference.device=cpu", "inference.color_fix=adain")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["anim.png", "still.png"]
    assert f"note: {folder / 'anim.gif'} is animated (3 frames): upscaling its first frame" in err
    assert "still.gif is animated" not in err
    sr = np.asarray(Image.open(tmp_path / "out" / "anim.png"), dtype=np.float32)
    assert sr.shape == (20, 24, 3)
    red, green, blue = sr.reshape(-1, 3).mean(0)
    assert red > green + 100 and red > blue + 100  # the first (red) frame, colour-fixed towards it
    assert digest(folder) == before  # inputs untouched
