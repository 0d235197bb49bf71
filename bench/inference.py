"""Inference speed and peak memory of the full-size D³SR generator (SD 2.1-base UNet + VAE), with random weights.

    python bench/inference.py --device cuda                 # fp32 and bf16, 512² timing, 512²/1024²/2048² memory
    python bench/inference.py --device cpu                  # CPU defaults: fp32, fewer sizes (a few minutes)
    python bench/inference.py --device cpu --quick          # smallest run: one repeat, smaller outputs

Builds the UNet and VAE from the published configs (src/d3sr/models/architectures.py) on the meta device, fills them
with random weights (no download), adds the generator's LoRA and fuses it as D3SRPipeline.from_pretrained does, and
times D3SRPipeline.super_resolve (bicubic ×4, pad, encode, one UNet call, decode, AdaIN colour fix) after warm-up,
with CUDA synchronisation. Peak memory: torch.cuda.max_memory_allocated on GPU (weights included, and the part
above the weights); on CPU the peak resident set size above the RSS before the call, sampled every 2 ms.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

from d3sr.inference import D3SRPipeline, InferenceOptions
from d3sr.inference.tiling import tile_count
from d3sr.models.generator import OneStepGenerator
from d3sr.models.loading import Backbone, meta
from d3sr.models.saved_generator import fuse_lora


def random_generator(device: str) -> OneStepGenerator:
    """Full-size SD 2.1-base generator with random float32 weights on `device`, LoRA fused."""
    shapes = meta("sd21", with_vae=True)
    rng = torch.Generator(device=device).manual_seed(0)
    for module in (shapes.unet, shapes.vae):
        module.to_empty(device=device)
        with torch.no_grad():
            for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
                if tensor.ndim <= 1:
                    tensor.fill_(1.0 if name.endswith("weight") else 0.0)  # norms: identity; biases: zero
                else:
                    tensor.normal_(0, tensor[0].numel() ** -0.5, generator=rng)
    embeds = {"prompt_embeds": torch.randn(shapes.embeds["prompt_embeds"].shape)}
    backbone = Backbone(shapes.unet, shapes.alphas_cumprod, embeds, shapes.vae, {"benchmark": "sd21"})
    generator = OneStepGenerator(backbone)
    fuse_lora(generator.unet)
    return generator.to(device)


class PeakRSS:
    """Peak resident set size above the starting RSS while the block runs (sampled by a thread)."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self.process, self.interval = psutil.Process(), interval

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def above_start(self) -> int:
        return self.peak - self.start


def measure(pipe: D3SRPipeline, output: int, tile: int, overlap: int, repeats: int, warmup: int) -> dict:
    """Seconds per image (median of `repeats`) and peak memory for an output×output result."""
    device = pipe.device
    lq = torch.rand(1, 3, output // 4, output // 4, device=device)
    options = {"tile_size": tile, "tile_overlap": overlap, "color_fix": "adain"}
    cuda = device.type == "cuda"

    def run() -> None:
        pipe.super_resolve(lq, **options)
        if cuda:
            torch.cuda.synchronize(device)

    # Warm-up (kernel selection, allocator): full size on CUDA, a small image on CPU where every run is slow.
    small = torch.rand(1, 3, 16, 16, device=device)
    for _ in range(warmup):
        if cuda:
            run()
        else:
            pipe.super_resolve(small, **options)
    times = []
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device)
        memory = {"peak": peak, "above": peak - before}
    else:
        with PeakRSS() as rss:
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
        memory = {"peak": rss.peak, "above": rss.above_start}
    return {"seconds": statistics.median(times), **memory}


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtypes", nargs="+", choices=["fp32", "bf16", "fp16"], help="default: fp32 bf16 (CUDA), fp32 (CPU)"
    )
    parser.add_argument("--output", type=int, default=None, help="timed output side (default 512; 256 with --quick)")
    parser.add_argument("--sizes", type=int, nargs="+", help="output sides for the tiled memory table")
    parser.add_argument("--tile", type=int, default=None, help="tile.size for tiled runs (default 512; CPU 256)")
    parser.add_argument("--overlap", type=int, default=None, help="tile.overlap (default tile/4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row (default 5 CUDA, 1 CPU)")
    parser.add_argument("--quick", action="store_true", help="smallest useful run (CPU smoke test)")
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    dtypes = args.dtypes or (["fp32", "bf16"] if cuda else ["fp32"])
    output = args.output or (256 if args.quick else 512)
    tile = args.tile or (128 if args.quick else 512 if cuda else 256)
    overlap = args.overlap if args.overlap is not None else tile // 4
    sizes = args.sizes or ([256, 512] if args.quick else [512, 1024, 2048] if cuda else [512, 1024])
    repeats = args.repeats or (5 if cuda and not args.quick else 1)
    warmup = 2 if cuda else 1
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    generator = random_generator(str(device))
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    memory_kind = "torch.cuda.max_memory_allocated" if cuda else "peak RSS"
    print(f"\nD³SR generator, full-size SD 2.1-base UNet + VAE (random weights), {name}, torch {torch.__version__}")
    print(f"tiled = tile.size {tile}, tile.overlap {overlap}; median of {repeats} run(s) after {warmup} warm-up")

    # Speed and memory for one output size: each dtype, untiled and tiled.
    rows = []
    for dtype_name in dtypes:
        pipe = D3SRPipeline(generator, InferenceOptions(tile_size=0, tile_overlap=0)).to(device, dtype_name)
        for label, (t, o) in (("untiled", (0, 0)), ("tiled", (tile, overlap))):
            result = measure(pipe, output, t, o, repeats, warmup)
            tiles = tile_count(output, output, t, o)
            rows.append((dtype_name, label, tiles, result))
            print(f"  {dtype_name} {label}: {result['seconds']:.2f} s", flush=True)
    print(f"\n| {output}² output | tiles/stage | s/image | peak memory (GiB) | above weights/start (GiB) |")
    print("|---|---|---|---|---|")
    for dtype_name, label, tiles, r in rows:
        print(f"| {dtype_name} {label} | {tiles} | {r['seconds']:.2f} | {gib(r['peak'])} | {gib(r['above'])} |")

    # Peak memory as images grow, tiling on: should stay nearly flat.
    pipe = D3SRPipeline(generator, InferenceOptions(tile_size=tile, tile_overlap=overlap)).to(device, dtypes[-1])
    print(f"\nPeak memory with tiling on ({dtypes[-1]}, tile.size {tile}, overlap {overlap}, {memory_kind}):\n")
    print("| output | tiles/stage | s/image | peak memory (GiB) | above weights/start (GiB) |")
    print("|---|---|---|---|---|")
    for size in sizes:
        r = measure(pipe, size, tile, overlap, 1, 1 if cuda else 0)
        tiles = tile_count(size, size, tile, overlap)
        print(f"| {size}² | {tiles} | {r['seconds']:.2f} | {gib(r['peak'])} | {gib(r['above'])} |", flush=True)


if __name__ == "__main__":
    main()
