"""Images: the one place that reads and writes image files, converts tensors, and prepares the generator's input.

Value ranges: tensors of images are float32 (3, H, W) or (B, 3, H, W) in [0, 1] everywhere outside the generator;
the VAE works in [-1, 1] (`to_model_range` / `from_model_range`). The generator's input contract, shared by
training, validation, inference and evaluation: the LQ image (h, w) is upsampled ×4 with bicubic interpolation
(`upsample_lq`), padded to a multiple of 8 for the ×8 VAE (`pad_to_multiple`), and mapped to [-1, 1]
(`generator_input` does all three). `downscale` is the inverse direction used to make clean LQ images
(crop to a multiple of 4, antialiased bicubic ÷4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from d3sr.atomic_files import write_atomically
from d3sr.errors import D3SRError

SCALE = 4  # D³SR is a ×4 model
LATENT_FACTOR = 8  # pixels per latent pixel of the SD VAE
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # what a broken image file raises

# Photos shipped inside scikit-image (no download): the embedded data set. The held-out photos are never seen by
# any training stage (the tiny backbone's pretraining or the demo's fine-tuning): they are validation and demo images.
EMBEDDED_HELD_OUT = ("chelsea", "coffee", "rocket")
EMBEDDED_TRAIN = ("astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left",
                  "motorcycle_right", "colorwheel", "camera", "brick", "grass", "gravel", "moon", "coins", "cell",
                  "clock", "page", "text")  # fmt: skip

# A second held-out set, for testing only (never trained on): real colour photographs that ship inside other
# installed distributions, {name: (distribution, path relative to its install folder)}. All come with
# `pip install -e ".[metrics,app,sweeps,dev]"` (what `make install` and CI run): matplotlib is in the `dev` extra,
# gradio in `app`, pyiqa in `metrics` (its wheel carries five TID2013 reference photos, from the Kodak set).
# `held_out_photo` center-crops them to at most EXTRA_HELD_OUT_SIZE² (multiples of 8).
EXTRA_HELD_OUT = {
    "grace_hopper": ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),  # 512×600 portrait
    "cheetah": ("gradio", "gradio/media_assets/images/cheetah.jpg"),  # 502×343, panned (blurred) background
    "eiffel_tower": ("gradio", "gradio/media_assets/images/tower.jpg"),  # 377×600, lit ironwork at dusk
    "kodak_hats": ("pyiqa", "ResultsCalibra/ref_dir/I03.bmp"),  # 512×384 lossless, saturated colours
    "kodak_houses": ("pyiqa", "ResultsCalibra/ref_dir/I08.bmp"),  # 512×384 lossless, fine detail
}
EXTRA_HELD_OUT_SIZE = 512
EXTRA_OF_DISTRIBUTION = {"matplotlib": "dev", "gradio": "app", "pyiqa": "metrics"}  # pyproject's optional extras


# ------------------------------------------------------------------------------------------------------------------
# Tensors and arrays.


def to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] from a PIL image or an array (gray → RGB, alpha dropped, 16-bit scaled)."""
    array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    scale = 65535.0 if array.dtype == np.uint16 else 255.0 if array.dtype == np.uint8 else 1.0
    array = array.astype(np.float32) / scale
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.shape[-1] == 4:
        array = array[..., :3]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).clamp_(0, 1)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] from a PIL image: gray → RGB, 16-bit scaled, alpha dropped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return to_tensor(np.asarray(image).astype(np.uint16))
    return to_tensor(image.convert("RGB"))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, C) uint8 (rounded), the inverse of to_tensor for 8-bit images."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """8-bit RGB (or RGBA for 4 channels) PIL image from (3 | 4, H, W) in [0, 1]."""
    array = to_uint8(image)
    return Image.fromarray(array, "RGBA" if array.shape[-1] == 4 else "RGB")


# ------------------------------------------------------------------------------------------------------------------
# Files.


def read_image(path: str | Path, alpha: str = "drop") -> torch.Tensor:
    """Decode an image file to (3, H, W) in [0, 1], EXIF orientation applied, gray → RGB, 16-bit scaled.

    alpha: what happens to a transparent image's alpha channel: 'drop' (training images), 'white' (composite on
    white, as inference does). Raises one of UNREADABLE when the file cannot be decoded.
    """
    rgb, opacity = read_image_with_alpha(path)
    if opacity is None or alpha == "drop":
        return rgb
    return rgb * opacity + (1 - opacity)


def read_image_with_alpha(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rgb (3, H, W), alpha (1, H, W) or None) in [0, 1], EXIF orientation applied; alpha None when opaque."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        image.load()
        transparent = image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
            image.mode == "P" and "transparency" in image.info
        )
        if not transparent:
            return pil_to_tensor(image), None
        array = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    rgba = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    return rgba[:3], rgba[3:]


def list_image_files(folder: str | Path, recursive: bool = False,
                     extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:  # fmt: skip
    """Image files (by extension, case-insensitive) in `folder`, sorted."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in extensions)


def frame_count(path: str | Path) -> int:
    """Frames (or pages) in an image file: more than 1 for an animated GIF/WebP/PNG or a multi-page TIFF.

    read_image reads the first one. Raises one of UNREADABLE when the file cannot be opened.
    """
    with Image.open(path) as image:
        return getattr(image, "n_frames", 1)


def write_png(image: torch.Tensor, path: str | Path) -> Path:
    """Save (3 or 4, H, W) in [0, 1] as an 8-bit PNG, atomically (a reader never sees half a file)."""
    pil = tensor_to_pil(image)
    return write_atomically(path, lambda temporary: pil.save(temporary, format="PNG"))


def embedded_photo(name: str) -> torch.Tensor:
    """A photo shipped inside scikit-image, as (3, H, W) in [0, 1] (gray photos as RGB)."""
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return to_tensor(left if name == "motorcycle_left" else right)
    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise ValueError(f"{name!r} is not an image in skimage.data")
    return to_tensor(loader())


def extra_photo_path(name: str) -> Path:
    """The file of an EXTRA_HELD_OUT photo inside its distribution; D3SRError naming the distribution if missing."""
    from importlib import metadata

    if name not in EXTRA_HELD_OUT:
        raise ValueError(f"{name!r} is not an extra held-out photo; choose from {sorted(EXTRA_HELD_OUT)}")
    distribution, relative = EXTRA_HELD_OUT[name]
    try:
        path = Path(metadata.distribution(distribution).locate_file(relative))
    except metadata.PackageNotFoundError as error:
        extra = EXTRA_OF_DISTRIBUTION.get(distribution, "metrics,app,sweeps,dev")
        raise D3SRError(f"the held-out photo {name!r} ships with the package {distribution!r}, which is not "
                        f'installed (pip install -e ".[{extra}]")') from error  # fmt: skip
    if not path.is_file():
        version = metadata.version(distribution)
        raise D3SRError(f"the held-out photo {name!r} is not in the installed package {distribution!r} "
                        f"{version}: no file {relative}")  # fmt: skip
    return path


def held_out_photo(name: str) -> torch.Tensor:
    """A held-out photo of either set, (3, H, W) in [0, 1]: EXTRA_HELD_OUT center-cropped to at most
    EXTRA_HELD_OUT_SIZE² with sides multiples of 8; any other name (EMBEDDED_HELD_OUT) as `embedded_photo` gives it."""
    if name not in EXTRA_HELD_OUT:
        return embedded_photo(name)
    photo = read_image(extra_photo_path(name))
    height, width = photo.shape[-2:]
    crop_h, crop_w = (min(side, EXTRA_HELD_OUT_SIZE) // LATENT_FACTOR * LATENT_FACTOR for side in (height, width))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return photo[:, top : top + crop_h, left : left + crop_w]


def embedded_lq(name: str) -> torch.Tensor:
    """An embedded photo made ×4 smaller with `downscale`: (3, h, w)."""
    return downscale(embedded_photo(name)[None])[0]


# ------------------------------------------------------------------------------------------------------------------
# The generator's input contract.


def to_model_range(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] → [-1, 1] (the VAE's range)."""
    return image * 2 - 1


def from_model_range(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1] in float32, clamped."""
    return ((image.float() + 1) / 2).clamp(0, 1)


def upsample_lq(lq: torch.Tensor, scale: int = SCALE) -> torch.Tensor:
    """Bicubic ×scale upsampling of (B, C, h, w) in [0, 1], clamped to [0, 1]: the LQ at the output size."""
    return F.interpolate(lq.float(), scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


def crop_to_multiple(image: torch.Tensor, multiple: int = LATENT_FACTOR) -> torch.Tensor:
    """Crop (..., H, W) at the bottom and right to multiples of `multiple`."""
    height, width = image.shape[-2:]
    return image[..., : height - height % multiple, : width - width % multiple]


def pad_to_multiple(image: torch.Tensor, multiple: int = LATENT_FACTOR) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom and right to multiples of `multiple`.

    Reflection where the image is larger than the padding (reflect needs pad < size), replication otherwise
    (e.g. the 4×4 upsample of a 1×1 input). Crop the result back with [..., :H, :W].
    """
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return image
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


def generator_input(lq: torch.Tensor) -> torch.Tensor:
    """What the generator sees for an LQ batch (B, 3, h, w) in [0, 1]: ×4 bicubic, padded to ×8, in [-1, 1].

    Training, validation and inference all call this; crop the generator's output back to (4h, 4w).
    """
    if lq.ndim != 4 or lq.shape[1] != 3:
        raise ValueError(f"lq must be (B, 3, h, w), got {tuple(lq.shape)}")
    return to_model_range(pad_to_multiple(upsample_lq(lq)))


def downscale(hr: torch.Tensor, scale: int = SCALE) -> torch.Tensor:
    """Clean LQ of (B, C, H, W) in [0, 1]: crop to multiples of `scale` (bottom/right), antialiased bicubic ÷scale."""
    height, width = hr.shape[-2:]
    hr = crop_to_multiple(hr, scale)
    if hr.shape[-1] == 0 or hr.shape[-2] == 0:
        raise ValueError(f"an image of {height}×{width} is smaller than the scale {scale}")
    lq = F.interpolate(hr.float(), scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    return lq.clamp(0, 1)
