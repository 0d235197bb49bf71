"""Images per second of the Real-ESRGAN degradation: d3sr's batched device pipeline vs a per-image NumPy/OpenCV one.

    python bench/degradation.py                                  # CPU (and CUDA when available), 512², batch 8
    python bench/degradation.py --device cuda --iters 20
    python bench/degradation.py --gallery gallery.png            # also: one HR crop and 12 degraded versions
    python bench/degradation.py --threads 1                      # one thread each, like a dataset worker
    python bench/degradation.py --jpeg-tables                    # only: JPEG luma-table orientations vs PIL's JPEG

Measured in the same run, on the same HR crops and the same config (src/d3sr/conf/degradation/<--config>.yaml):
- `sample()`: the per-image CPU draws (kernels, scales, seeds, ...) that dataset workers do;
- device pipeline: `RealESRGANDegradation.__call__` on a collated batch already on the device, synchronised (it ends
  at the ×4-smaller LQ; the generator's ×4 upsampling, `d3sr.images.generator_input`, is not timed);
- reference: the same pipeline written the way Real-ESRGAN/OSEDiff-style datasets run it, one image at a time in
  NumPy/OpenCV (cv2.filter2D, cv2.resize, NumPy noise, a real cv2.imencode/imdecode JPEG), draws included.
Prints a Markdown table and the speed ratio device / reference.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import default_collate

from d3sr.data.datasets import random_crop
from d3sr.data.degradation import (
    DEGRADATION_RESIZE_MODES,
    JPEG_LUMA_TABLES,
    RealESRGANDegradation,
    StageSettings,
    quantize,
)
from d3sr.data.degradation import jpeg as device_jpeg
from d3sr.data.kernels import sample_kernels
from d3sr.images import embedded_photo, upsample_lq

CONF = Path(__file__).resolve().parents[1] / "src" / "d3sr" / "conf" / "degradation"
CV2_MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


class ReferenceDegradation:
    """The same second-order pipeline, per image in NumPy/OpenCV on (H, W, 3) float32 RGB in [0, 1]."""

    def __init__(self, d: RealESRGANDegradation) -> None:
        self.d = d

    def noise(self, image: np.ndarray, rng: np.random.Generator, s: StageSettings) -> np.ndarray:
        gray = rng.random() < s.gray_noise_prob
        if rng.random() < s.gaussian_noise_prob:
            sigma = rng.uniform(*s.noise_range) / 255
            shape = (*image.shape[:2], 1) if gray else image.shape
            noisy = image + rng.normal(0, sigma, shape).astype(np.float32)
        else:
            scale = rng.uniform(*s.poisson_scale_range)
            base = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None] if gray else image
            base = np.clip(np.round(base * 255), 0, 255) / 255
            levels = 2 ** math.ceil(math.log2(len(np.unique(base))))
            noisy = image + ((rng.poisson(base * levels) / levels - base) * scale).astype(np.float32)
        return np.clip(noisy, 0, 1)

    @staticmethod
    def jpeg(image: np.ndarray, quality: float) -> np.ndarray:
        array = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)[..., ::-1]
        _, code = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        return cv2.imdecode(code, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255

    def resize(self, image: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        mode = DEGRADATION_RESIZE_MODES[int(rng.integers(3))]
        return cv2.resize(image, (max(1, int(size[1])), max(1, int(size[0]))), interpolation=CV2_MODES[mode])

    def scale(self, rng: np.random.Generator, s: StageSettings) -> float:
        direction = int(rng.choice(3, p=s.resize_prob))
        return (rng.uniform(1, s.resize_range[1]), rng.uniform(s.resize_range[0], 1), 1.0)[direction]

    @staticmethod
    def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)

    def __call__(self, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d, (height, width) = self.d, gt.shape[:2]
        final = (height // d.scale, width // d.scale)
        k = sample_kernels(rng, asdict(d.stage1.blur), asdict(d.stage2.blur), d.final.sinc_prob, d.kernel_range)
        x = self.blur(gt, k["kernel1"]) if rng.random() < d.stage1.blur_prob else gt
        s1 = self.scale(rng, d.stage1)
        x = self.noise(self.resize(x, (height * s1, width * s1), rng), rng, d.stage1)
        x = self.jpeg(x, rng.uniform(*d.stage1.jpeg_range))
        if rng.random() < d.stage2.blur_prob:
            x = self.blur(x, k["kernel2"])
        s2 = self.scale(rng, d.stage2)
        x = self.noise(self.resize(x, (final[0] * s2, final[1] * s2), rng), rng, d.stage2)
        quality = rng.uniform(*d.stage2.jpeg_range)
        if rng.random() < d.final.resize_first_prob:
            x = self.jpeg(self.blur(self.resize(x, final, rng), k["sinc_kernel"]), quality)
        else:
            x = self.blur(self.resize(self.jpeg(x, quality), final, rng), k["sinc_kernel"])
        return (np.clip(np.round(x * 255), 0, 255) / 255).astype(np.float32)


def load_degradation(name: str) -> RealESRGANDegradation:
    """src/d3sr/conf/degradation/<name>.yaml, composed by Hydra (stablesr.yaml extends realesrgan.yaml)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return instantiate(compose(config_name=name))


def hr_crops(count: int, size: int) -> list[torch.Tensor]:
    """`count` different size² crops of the scikit-image photos."""
    names = ("astronaut", "coffee", "chelsea", "rocket")
    photos = [embedded_photo(n) for n in names]
    return [random_crop(photos[i % len(photos)], size, np.random.default_rng(i)) for i in range(count)]


def timed(fn, iters: int, warmup: int, device: str) -> float:
    """Mean seconds per call after `warmup` calls."""
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def benchmark(args: argparse.Namespace) -> None:
    degradation = load_degradation(args.config)
    crops = hr_crops(args.batch, args.size)
    rows = []

    # CPU side: the per-image draws of a dataset worker.
    counter = iter(range(10**9))
    seconds = timed(lambda: [degradation.sample(np.random.default_rng(next(counter))) for _ in crops], args.iters,
                    1, "cpu")  # fmt: skip
    rows.append(("`sample()` (per-image draws, dataset worker)", "cpu", 1, args.batch / seconds))

    batch = default_collate([{"gt": g, **degradation.sample(np.random.default_rng(i))} for i, g in enumerate(crops)])
    devices = [args.device] if args.device else ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    device_speed = {}
    for device in devices:
        on_device = {key: value.to(device) for key, value in batch.items()}
        seconds = timed(lambda on_device=on_device: degradation(on_device), args.iters, args.warmup, device)
        device_speed[device] = args.batch / seconds
        rows.append(("d3sr device pipeline (batched)", device, args.batch, device_speed[device]))

    reference = ReferenceDegradation(degradation)
    arrays = [np.ascontiguousarray(g.permute(1, 2, 0).numpy()) for g in crops]
    counter = iter(range(10**9))
    seconds = timed(lambda: [reference(a, np.random.default_rng(next(counter))) for a in arrays], args.iters, 1, "cpu")
    reference_speed = args.batch / seconds
    rows.append(("reference: NumPy/OpenCV per image", "cpu", 1, reference_speed))

    threads = torch.get_num_threads()
    print(f"\nReal-ESRGAN degradation ({args.config}), {args.size}² HR → {args.size // 4}² LQ, "
          f"batch {args.batch}, {args.iters} timed iterations; torch {torch.__version__}, {threads} CPU threads, "
          f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads)")  # fmt: skip
    if torch.cuda.is_available():
        print(f"CUDA device: {torch.cuda.get_device_name()}")
    print("\n| pipeline | device | images per call | images/s | ms/image |\n|---|---|---|---|---|")
    for name, device, per_call, speed in rows:
        print(f"| {name} | {device} | {per_call} | {speed:.1f} | {1000 / speed:.1f} |")
    print()
    for device, speed in device_speed.items():
        print(f"ratio device pipeline ({device}) / reference (cpu): {speed / reference_speed:.2f}×")


def jpeg_tables(qualities: tuple[int, ...] = (30, 50, 75, 95)) -> None:
    """PSNR of d3sr's JPEG (each luma-table orientation) against PIL's real JPEG of the same photo and quality."""
    import io

    from PIL import Image
    from skimage import data

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(-10 * torch.log10(((a - b) ** 2).mean()))

    names = ("astronaut", "coffee", "chelsea", "rocket")
    scores = {(table, q): [] for table in (*JPEG_LUMA_TABLES, "PIL vs original") for q in qualities}
    for name in names:
        array = getattr(data, name)()
        array = np.ascontiguousarray(array[: array.shape[0] // 16 * 16, : array.shape[1] // 16 * 16, :3])
        image = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
        for q in qualities:
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="JPEG", quality=q)  # libjpeg, 4:2:0
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            real = torch.from_numpy(decoded.copy()).permute(2, 0, 1)[None].float() / 255
            for table in JPEG_LUMA_TABLES:
                ours = quantize(device_jpeg(image, torch.tensor([float(q)]), table))
                scores[table, q].append(psnr(ours, real))
            scores["PIL vs original", q].append(psnr(real, image))
    print(f"\nPSNR (dB) of d3sr's JPEG vs PIL's decoded JPEG, mean over {', '.join(names)} (crops to ×16)")
    print("| luma table | " + " | ".join(f"q={q}" for q in qualities) + " |\n|---|" + "---|" * len(qualities))
    for table in (*JPEG_LUMA_TABLES, "PIL vs original"):
        print(f"| {table} | " + " | ".join(f"{np.mean(scores[table, q]):.1f}" for q in qualities) + " |")


def gallery(path: str, config: str, size: int = 256) -> None:
    """One HR crop (the astronaut's face) and 12 degraded versions, each LQ ×4 bicubic as the generator sees it."""
    from PIL import Image, ImageDraw

    degradation = load_degradation(config)
    hr = embedded_photo("astronaut")[:, 0:size, 128 : 128 + size].contiguous()
    samples = [{"gt": hr, **degradation.sample(np.random.default_rng(seed))} for seed in range(12)]
    lq = upsample_lq(degradation(default_collate(samples))["lq"], degradation.scale)
    tiles = [("HR", hr), *((f"seed {i}", lq[i]) for i in range(12))]
    columns, pad = 7, 4
    rows = math.ceil(len(tiles) / columns)
    canvas = Image.new("RGB", (columns * (size + pad) + pad, rows * (size + pad) + pad), "white")
    for n, (label, tile) in enumerate(tiles):
        array = (tile.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        image = Image.fromarray(array)
        ImageDraw.Draw(image).text((6, 4), label, fill="white", stroke_width=2, stroke_fill="black")
        canvas.paste(image, (pad + (n % columns) * (size + pad), pad + (n // columns) * (size + pad)))
    canvas.save(path)
    print(f"gallery: {path} (HR + 12 degraded, {config})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda when available)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=512, help="HR crop size (a multiple of 4)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (after one warm-up)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and OpenCV (default: theirs)")
    parser.add_argument("--config", default="realesrgan", help="src/d3sr/conf/degradation/<name>.yaml")
    parser.add_argument("--gallery", default=None, help="also write a PNG grid of degraded examples here")
    parser.add_argument("--jpeg-tables", action="store_true", help="only compare the JPEG luma-table orientations")
    args = parser.parse_args()
    if args.jpeg_tables:
        jpeg_tables()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    torch.set_grad_enabled(False)
    benchmark(args)
    if args.gallery:
        gallery(args.gallery, args.config)


if __name__ == "__main__":
    main()
