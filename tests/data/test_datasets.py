"""HQ sources, crops, and the data module's batches (deterministic per image whatever the loader settings)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from d3sr.data import EmbeddedPhotos, ImageFiles, SRDataModule
from d3sr.data.datasets import random_crop
from d3sr.data.degradation import BicubicDegradation
from d3sr.images import downscale, read_image


def write_png(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folder(tmp_path):
    from skimage import data

    photo = data.astronaut()
    write_png(tmp_path / "hq" / "a.png", photo[:96, :80])
    write_png(tmp_path / "hq" / "sub" / "b.png", photo[100:150, 100:170])  # smaller than the crop: padded
    write_png(tmp_path / "hq" / "c.png", data.camera()[:64, :64])  # gray
    (tmp_path / "hq" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "hq" / "notes.txt").write_text("ignored: not an image extension")
    return tmp_path / "hq"


def test_folders_lists_and_limits(folder, tmp_path):
    files = ImageFiles(roots=[str(folder)])
    assert [p.name for p in files.paths] == ["a.png", "broken.png", "c.png", "b.png"]
    listing = tmp_path / "list.txt"
    listing.write_text("# HQ images\nhq/c.png\n\nhq/a.png\n")
    both = ImageFiles(roots=[str(folder)], lists=[str(listing)], limits=[1, None])
    assert [p.name for p in both.paths] == ["a.png", "c.png", "a.png"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFiles(roots=[str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="limits"):
        ImageFiles(roots=[str(folder)], limits=[1, 2])


def test_limits_by_source_name_ignore_names_that_match_nothing(folder, tmp_path, caplog):
    """lsdir_ffhq's {FFHQ: 10000}: a folder named FFHQ is limited; `roots=[DIR]` alone is not refused."""
    listing = tmp_path / "list.txt"
    listing.write_text("hq/c.png\nhq/a.png\n")
    by_name = ImageFiles(roots=[str(folder)], lists=[str(listing)], limits={"list.txt": 1})
    assert [p.name for p in by_name.paths] == ["a.png", "broken.png", "c.png", "b.png", "c.png"]
    by_path = ImageFiles(roots=[str(folder)], limits={str(folder): 2})
    assert [p.name for p in by_path.paths] == ["a.png", "broken.png"]
    with caplog.at_level("INFO"):
        unmatched = ImageFiles(roots=[str(folder)], limits={"FFHQ": 10000})
    assert len(unmatched) == 4 and "FFHQ match no source" in caplog.text


def test_unreadable_images_are_skipped_silently_in_the_dataset(folder, caplog):
    """Workers log nothing (they are separate processes, re-created each epoch): the data module reports."""
    files = ImageFiles(roots=[str(folder)])
    broken = [p.name for p in files.paths].index("broken.png")
    with caplog.at_level(logging.WARNING):
        assert files[broken] is None and files[broken] is None
    assert not caplog.records
    assert files.problem(broken).startswith("UnidentifiedImageError") and files.problem(0) is None
    from d3sr.data.datasets import SRSamples

    samples = SRSamples(files, crop_size=64, flip=False)
    sample = samples[broken]
    assert sample["gt"].shape == (3, 64, 64) and sample["image_index"] == broken + 1  # the next readable image


def broken_folder(root):
    """Nine good photos (skimage) and each kind of broken file: empty, truncated PNG and JPEG, not an image, tiny."""
    from skimage import data

    photo = data.astronaut()
    for i in range(9):
        write_png(root / f"good{i}.png", photo[i * 40 : i * 40 + 96, i * 30 : i * 30 + 96])
    (root / "empty.png").write_bytes(b"")
    write_png(root / "whole.png", photo[:96, :96])
    (root / "truncated.png").write_bytes((root / "whole.png").read_bytes()[:300])
    (root / "whole.png").unlink()
    Image.fromarray(photo[:96, :96]).save(root / "whole.jpg", quality=90)
    (root / "truncated.jpg").write_bytes((root / "whole.jpg").read_bytes()[:2000])
    (root / "whole.jpg").unlink()
    (root / "notes.png").write_text("not an image")
    write_png(root / "tiny.png", photo[:20, :20])
    return root


BROKEN = ["empty.png", "notes.png", "tiny.png", "truncated.jpg", "truncated.png"]


class Trainer:
    """What SRDataModule reads of a Lightning Trainer while it counts broken images."""

    training, current_epoch = True, 0


def run_epochs(module: SRDataModule, epochs: int) -> int:
    module.trainer, loader, batches = Trainer(), module.train_dataloader(), 0
    for epoch in range(epochs):
        module.trainer.current_epoch = epoch
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            module.on_after_batch_transfer(module.on_before_batch_transfer(batch, 0), 0)
            batches += 1
    module.teardown("fit")
    return batches


def test_broken_images_are_listed_once_per_epoch_whatever_the_workers(tmp_path, caplog):
    folder = broken_folder(tmp_path / "hq")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    module = SRDataModule(ImageFiles(roots=[str(folder)]), BicubicDegradation(), crop_size=64, crops_per_image=3,
                          batch_size=2, num_workers=2, min_image_size=64, max_broken_fraction=0.5)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="d3sr"):
        assert run_epochs(module, epochs=3) == 3 * 21  # 14 images × 3 crops, batches of 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all(w.startswith(f"Epoch {e} skipped 5 broken") for e, w in enumerate(warnings))
    for name in BROKEN:
        assert str(folder / name) in warnings[0]
    assert "empty file" in warnings[0] and "truncated" in warnings[0] and "20×20, smaller than" in warnings[0]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the inputs are read, never changed


def test_more_broken_images_than_the_allowed_fraction_stop_the_run(tmp_path):
    from d3sr.errors import D3SRError

    folder = broken_folder(tmp_path / "hq")
    module = SRDataModule(ImageFiles(roots=[str(folder)]), BicubicDegradation(), crop_size=64, batch_size=2,
                          num_workers=0, min_image_size=64, max_broken_fraction=0.3)  # fmt: skip
    with pytest.raises(D3SRError, match=r"5 of the 14 training images are broken \(35.7%, more than data.max_bro"):
        run_epochs(module, epochs=1)
    with pytest.raises(ValueError, match="data.max_broken_fraction must be in"):
        SRDataModule(ImageFiles(roots=[str(folder)]), BicubicDegradation(), crop_size=64, batch_size=2,
                     max_broken_fraction=1.5)  # fmt: skip
    with pytest.raises(ValueError, match="data.min_image_size must be >= 1"):
        SRDataModule(ImageFiles(roots=[str(folder)]), BicubicDegradation(), crop_size=64, batch_size=2,
                     min_image_size=0)  # fmt: skip


def test_a_folder_with_no_usable_image_stops_at_start_up_naming_it(tmp_path):
    from d3sr.errors import D3SRError

    folder = broken_folder(tmp_path / "hq")
    for good in [*folder.glob("good*.png"), folder / "tiny.png"]:
        good.unlink()
    with pytest.raises(D3SRError, match=f"no usable image in {folder}: none of its 4 image files can be read"):
        ImageFiles(roots=[str(folder)])
    write_png(folder / "small.png", np.zeros((40, 40, 3), np.uint8))  # readable, but smaller than min_image_size
    files = ImageFiles(roots=[str(folder)])
    with pytest.raises(D3SRError, match=r"none of the 5 training images is usable \(the first: empty file\)"):
        SRDataModule(files, BicubicDegradation(), crop_size=64, batch_size=1, min_image_size=64)


def test_gray_16_bit_and_exif_rotated_images_become_rgb_in_range(tmp_path):
    gray16 = (np.linspace(0, 65535, 24 * 16).reshape(24, 16)).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert image.shape == (3, 24, 16) and image.max() == 1.0 and image.min() == 0.0
    rotated = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    rotated.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "r.jpg").shape == (3, 20, 10)


def test_random_crop_pads_small_images_and_is_seeded():
    image = torch.rand(3, 40, 70)
    crop = random_crop(image, 64, np.random.default_rng(0))
    assert crop.shape == (3, 64, 64)
    assert torch.equal(crop, random_crop(image, 64, np.random.default_rng(0)))
    centre = random_crop(torch.rand(3, 100, 100), 64, None)
    assert centre.shape == (3, 64, 64)
    assert random_crop(torch.rand(3, 3, 3), 16, None).shape == (3, 16, 16)  # tiny: replicate padding


def batches(num_workers: int, batch_size: int, epochs: int = 1) -> dict[tuple[int, int], torch.Tensor]:
    module = SRDataModule(EmbeddedPhotos(["astronaut", "coffee", "rocket"]), BicubicDegradation(), crop_size=64,
                          crops_per_image=2, batch_size=batch_size, num_workers=num_workers, seed=3)  # fmt: skip
    loader = module.train_dataloader()
    out = {}
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            batch = module.on_after_batch_transfer(batch, 0)
            for i, index in enumerate(batch["index"].tolist()):
                out[(epoch, index)] = torch.cat([batch["gt"][i].flatten(), batch["lq"][i].flatten()])
    return out


def test_each_crop_depends_on_seed_epoch_and_index_only():
    reference = batches(num_workers=0, batch_size=2, epochs=2)
    assert len(reference) == 2 * 6
    assert not torch.equal(reference[(0, 0)], reference[(1, 0)])  # new crops each epoch
    for other in (batches(num_workers=2, batch_size=3, epochs=2), batches(num_workers=0, batch_size=1, epochs=2)):
        assert other.keys() == reference.keys()
        for key in reference:
            assert torch.equal(other[key], reference[key]), key


def test_batches_hold_gt_and_lq_in_range():
    module = SRDataModule(EmbeddedPhotos(["chelsea"]), BicubicDegradation(), val=EmbeddedPhotos(["coffee"]),
                          crop_size=64, crops_per_image=2, batch_size=2, num_workers=0)  # fmt: skip
    batch = module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)
    assert batch["gt"].shape == (2, 3, 64, 64) and batch["lq"].shape == (2, 3, 16, 16)  # the small LQ
    assert 0 <= batch["lq"].min() and batch["lq"].max() <= 1
    # The LQ is the ×4-downscaled crop (8-bit), so it is the degraded GT of the same sample, not another image.
    torch.testing.assert_close(batch["lq"], downscale(batch["gt"]), rtol=0, atol=0.5 / 255 + 1e-6)
    val = [module.on_after_batch_transfer(b, 0)["gt"] for b in module.val_dataloader()]
    again = [module.on_after_batch_transfer(b, 0)["gt"] for b in module.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(val, again))  # fixed validation crops
    with pytest.raises(ValueError, match="data.batch_size"):
        SRDataModule(EmbeddedPhotos(["chelsea"]), BicubicDegradation(), crop_size=64, batch_size=4)
    with pytest.raises(ValueError, match="data.crop_size"):
        SRDataModule(EmbeddedPhotos(["chelsea"]), BicubicDegradation(), crop_size=60, batch_size=1)


def test_embedded_photos_are_rgb_and_unknown_names_are_refused():
    photos = EmbeddedPhotos(["astronaut", "motorcycle_left", "camera"])
    assert all(photos[i].shape[0] == 3 for i in range(len(photos)))
    with pytest.raises(ValueError, match="skimage.data"):
        EmbeddedPhotos(["no_such_photo"])[0]


def test_training_on_a_folder_with_broken_images_lists_them_once_per_epoch(compose, tmp_path, caplog):
    """Through Lightning, 2 loader workers: 14 images, 7 batches per epoch, 10 iterations: 2 epochs, 2 warnings."""
    from d3sr.train import train

    folder = broken_folder(tmp_path / "hq")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    cfg = compose(["experiment=demo", "model/generator=tiny", "model/discriminator=tiny", "degradation=bicubic",
                   "loss=mse_only", "data=lsdir_ffhq", f"data.train.roots=[{folder}]", "data.crop_size=64",
                   "data.crops_per_image=1", "data.batch_size=2", "data.num_workers=2", "data.min_image_size=64",
                   "data.max_broken_fraction=0.4", "optimized_metric=null", "logger=none", "callbacks=none",
                   "++trainer.limit_val_batches=0", "++trainer.enable_progress_bar=false", "iterations=10",
                   f"paths.output_dir={tmp_path / 'run'}"])  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="d3sr"):
        assert train(cfg)["iterations"] == 10
    warnings = [r.getMessage() for r in caplog.records if r.name == "d3sr.data.datasets"]
    assert len(warnings) == 2  # not one per visit (each broken image is met again every epoch, in every worker)
    assert warnings[0].startswith("Epoch 0 skipped 5 broken training image(s) of 14 (stops above 40%): ")
    assert warnings[1].startswith("Epoch 1 skipped ")  # the partial last epoch (3 batches), reported at teardown
    assert all(str(folder / name) in warnings[0] for name in BROKEN)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == before
