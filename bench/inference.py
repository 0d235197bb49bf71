"""Inference speed and peak memory of the D³SR generator, per stage, untiled and tiled, against plain diffusers.

    python bench/inference.py --device cuda --baseline      # full size: fp32 + bf16, 512² stages, 512²–2048² memory
    python bench/inference.py --device cpu --quick --baseline   # CPU: 256² output, tiles of 128/32 (minutes)
    python bench/inference.py --device cpu --backbone --baseline --output 512 --tile 256   # the tiny backbone
    python bench/inference.py --device cuda --compile       # adds torch.compile rows (compile time reported apart)
    python bench/inference.py --device cpu --channels-last  # adds channels-last rows
    python bench/inference.py --device cpu --output 512 --tile 256 --no-before --no-memory   # untiled vs tiled only
    python bench/inference.py --device cpu --precision-gap --dtypes fp32 bf16 --output 64   # bf16 vs fp32 PSNR only

The generator: by default the full-size SD 2.1-base UNet + SD VAE from the published configs
(src/d3sr/models/architectures.py) with random weights (no download), LoRA added and fused as
D3SRPipeline.from_pretrained does; --backbone: the pretrained tiny backbone shipped in d3sr/assets. Each stage
(VAE encode, the UNet call, VAE decode) is timed on its own, best of --repeats runs (interleaved with the other
variants; the first run of each warms up), with CUDA synchronisation; on the CPU the process CPU seconds are printed
too, as wall time is unreliable on a shared machine. Variants: `baseline` (--baseline) is the same components
called directly with diffusers, eager and untiled (vae.encode → latent_dist.mode → unet → x0 → vae.decode);
`untiled` is ours with tile_size 0; `tiled, before` the tiling before issue 14 (vae_tiling=blend, one tile per
forward); `tiled` the defaults (vae_tiling=groupnorm_sync, tile_batch_size=auto). "area" is the pixels the tiles
cover over the image's (UNet tiles overlap; the synchronised VAE's tiles do not, their 1–2 px halos not counted).

Share of the machine's peak: for each precision the run first times a 2048² × 2048² matmul in that dtype (best of 5,
GFLOP/s), then counts each variant's FLOPs once per stage (torch.utils.flop_counter.FlopCounterMode on a run that
also serves as its warm-up: convolutions, matmuls and attention, 2 FLOPs a multiply-add) and prints GFLOP/s of each
variant's best wall time as a share of that peak. The UNet and VAE run in the dtype; the tiled variants' FLOPs
include the overlap and halos they compute.

Peak memory as the image grows, tiling on (defaults): torch.cuda.max_memory_allocated on CUDA (total, and above
the allocation before the call: activations); on the CPU the peak resident set size above the RSS before the call,
sampled every 2 ms, which includes the whole-image maps the tiled VAE keeps in host memory (on CUDA, with
vae_offload, those are host memory and not counted). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from d3sr.images import embedded_lq, generator_input
from d3sr.inference import D3SRPipeline, InferenceOptions
from d3sr.inference.tiling import Tiling, core_count, decode_stage, denoise_stage, encode_stage, tile_count
from d3sr.models.generator import OneStepGenerator
from d3sr.models.loading import Backbone, meta
from d3sr.models.saved_generator import fuse_lora

STAGE_NAMES = ("encode", "UNet", "decode")


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


def backbone_generator(device: str) -> OneStepGenerator:
    """The pretrained tiny backbone (d3sr/assets/tiny_backbone) as a generator, LoRA at zero, T_L of the demo."""
    from d3sr.models.loading import pretrained_tiny

    return OneStepGenerator(pretrained_tiny("sd"), timestep=199).eval().to(device)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (/proc/cpuinfo) and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        model = platform.processor() or "CPU"
    return f"{model} ({torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()})"


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a size² × size² matmul in `dtype` on `device` (2·size³ FLOPs), best of `repeats` after a warm-up.

    A warm-up call slower than 2 s is taken as the one measurement: the dtype is emulated there (bf16 on a CPU
    without bf16 units: minutes for 2048², where a warm-up no longer matters).
    """
    generator = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(size, size, device=device, generator=generator).to(dtype) for _ in range(2))
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            if times[0] > 2:
                break
    return 2 * size**3 / min(times[1:] or times) / 1e9


def count_flops(fn: Callable[[], None]) -> int:
    """FLOPs of one call of fn (FlopCounterMode: convolutions, matmuls and attention; 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


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


# ------------------------------------------------------------------------------------------------------------------
# The three stages, ours and plain diffusers'.

Stages = Callable[[torch.Tensor], list[Callable[[], None]]]


def our_stages(generator: OneStepGenerator, tiling: Tiling) -> Stages:
    """The pipeline's stages (tiling.encode_stage, denoise_stage, decode_stage) as three chained calls."""

    def stages(image: torch.Tensor) -> list[Callable[[], None]]:
        state = {}

        def encode():
            state["z_lq"] = encode_stage(generator, image, tiling)

        def denoise():
            state["z_sr"] = denoise_stage(generator, state["z_lq"], tiling)

        def decode():
            decode_stage(generator, state["z_sr"], tiling)

        return [encode, denoise, decode]

    return stages


def baseline_stages(generator: OneStepGenerator) -> Stages:
    """The same components called directly with diffusers: VAE encode (mode), one UNet call, x0, VAE decode."""
    vae, unet = generator.vae, generator.unet
    alpha_bar, timestep = generator.alphas_cumprod[generator.timestep], generator.timestep
    scaling = vae.config.scaling_factor

    def stages(image: torch.Tensor) -> list[Callable[[], None]]:
        state = {}

        def encode():
            state["z"] = vae.encode(image.to(vae.dtype)).latent_dist.mode() * scaling

        def denoise():
            z = state["z"]
            t = torch.full((z.shape[0],), timestep, device=z.device, dtype=torch.long)
            context = generator.prompt_embeds.expand(z.shape[0], -1, -1).to(unet.dtype)
            eps = unet(z.to(unet.dtype), t, encoder_hidden_states=context).sample
            state["z0"] = (z.float() - (1 - alpha_bar).sqrt() * eps.float()) / alpha_bar.sqrt()

        def decode():
            vae.decode(state["z0"].to(vae.dtype) / scaling).sample.clamp(-1, 1)

        return [encode, denoise, decode]

    return stages


@torch.inference_mode()
def stage_flops(stages: Stages, image: torch.Tensor) -> list[int]:
    """FLOPs of each stage for one run (which warms the variant up too)."""
    return [count_flops(stage) for stage in stages(image)]


@torch.inference_mode()
def time_stages(stages: Stages, image: torch.Tensor) -> list[tuple[float, float]]:
    """(wall s, process CPU s) of each stage for one run."""
    cuda = image.device.type == "cuda"
    times = []
    for stage in stages(image):
        if cuda:
            torch.cuda.synchronize(image.device)
        wall, cpu = time.perf_counter(), time.process_time()
        stage()
        if cuda:
            torch.cuda.synchronize(image.device)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def area_ratios(size: int, tile: int, overlap: int, vae_tiling: str) -> list[float]:
    """Pixels covered by the tiles over the image's, per stage (encode, UNet, decode) for a size² output."""
    if not 0 < tile < size:
        return [1.0, 1.0, 1.0]
    unet = tile_count(size, size, tile, overlap) * tile**2 / size**2
    vae = core_count(size, size, tile) * tile**2 / size**2 if vae_tiling == "groupnorm_sync" else unet
    return [vae, unet, vae]


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def best_times(variants: dict, image: torch.Tensor, repeats: int, label: str,
               flops: dict[str, list[int]]) -> dict[str, list[list[float]]]:  # fmt: skip
    """Best (wall, CPU) seconds per stage of each variant over interleaved repeats, after one run per variant that
    counts its FLOPs per stage into `flops` (and warms it up)."""
    best = {name: [[float("inf")] * 2 for _ in range(3)] for name in variants}
    for name, (stages, _) in variants.items():
        flops[name] = stage_flops(stages, image)
        print(f"  FLOPs {label} {name}: {sum(flops[name]) / 1e9:.1f} G (warm-up run)", flush=True)
    for repeat in range(repeats):
        for name, (stages, _) in variants.items():
            for k, (wall, cpu) in enumerate(time_stages(stages, image)):
                best[name][k] = [min(best[name][k][0], wall), min(best[name][k][1], cpu)]
            print(f"  run {repeat + 1}/{repeats} {label} {name}: {sum(w for w, _ in best[name]):.2f} s", flush=True)
    return best


def stage_table(generator: OneStepGenerator, device: torch.device, dtype_name: str, output: int, tile: int,
                overlap: int, repeats: int, baseline: bool, compile: bool, channels_last: bool = False,
                before: bool = True) -> None:  # fmt: skip
    """Per-stage seconds of each variant for one output size, the ratios, and the share of the matmul peak."""
    options = InferenceOptions(tile_size=0, tile_overlap=0, channels_last=False)  # the --channels-last rows turn it on
    pipe = D3SRPipeline(generator, options).to(device, dtype_name)
    peak = matmul_peak(device, pipe.dtype)
    print(f"  matmul peak ({dtype_name}, 2048² × 2048², best of 5): {peak:.1f} GFLOP/s", flush=True)
    image = generator_input(torch.rand(1, 3, output // 4, output // 4, device=device))
    tiled = {"tile_size": tile, "tile_overlap": overlap}
    variants: dict[str, tuple[Stages, list[float]]] = {}
    flops: dict[str, list[int]] = {}
    if baseline:
        variants["baseline (diffusers, eager)"] = (baseline_stages(generator), [1.0] * 3)
    variants["untiled"] = (our_stages(generator, Tiling(tile_size=0)), [1.0] * 3)
    if before:
        blend = Tiling(**tiled, vae_tiling="blend", tile_batch_size=1)
        variants["tiled, before (blend, 1 tile/forward)"] = (our_stages(generator, blend),
                                                             area_ratios(output, tile, overlap, "blend"))  # fmt: skip
    variants["tiled (defaults)"] = (our_stages(generator, Tiling(**tiled)),
                                    area_ratios(output, tile, overlap, "groupnorm_sync"))  # fmt: skip
    best = best_times(variants, image, repeats, dtype_name, flops)
    if channels_last:
        # In place: the models stay channels-last, so these rows (and the compiled ones) come after the others.
        pipe.super_resolve(torch.rand(1, 3, 8, 8, device=device), channels_last=True, tile_size=0)
        untiled = Tiling(tile_size=0, channels_last=True)
        converted = {"untiled + channels_last": (our_stages(generator, untiled), [1.0] * 3),
                     "tiled + channels_last": (our_stages(generator, Tiling(**tiled, channels_last=True)),
                                               area_ratios(output, tile, overlap, "groupnorm_sync"))}  # fmt: skip
        best.update(best_times(converted, image, repeats, dtype_name, flops))
        variants.update(converted)
    if compile:
        # In place: every later call of these models is compiled, so the compiled rows come last. Their FLOPs are
        # the eager variants' (the same computation; FlopCounterMode does not see inside compiled graphs).
        start = time.perf_counter()
        pipe.super_resolve(torch.rand(1, 3, output // 4, output // 4, device=device), compile=True, tile_size=0)
        pipe.super_resolve(torch.rand(1, 3, output // 4, output // 4, device=device), compile=True, **tiled)
        print(f"  torch.compile warm-up (untiled + tiled): {time.perf_counter() - start:.0f} s", flush=True)
        compiled = {"untiled + compile": (our_stages(generator, Tiling(tile_size=0, compile=True)), [1.0] * 3),
                    "tiled + compile": (our_stages(generator, Tiling(**tiled, compile=True)),
                                        area_ratios(output, tile, overlap, "groupnorm_sync"))}  # fmt: skip
        best.update(best_times(compiled, image, repeats, dtype_name, {}))
        flops.update({"untiled + compile": flops["untiled"], "tiled + compile": flops["tiled (defaults)"]})
        variants.update(compiled)

    cpu = device.type == "cpu"
    column = "wall s (CPU s)" if cpu else "s"
    print(f"\n{dtype_name}, {output}² output, tiles {tile}/{overlap}: seconds per stage, best of {repeats}\n")
    print(f"| variant | encode {column} | UNet {column} | decode {column} | total {column} |")
    print("|---|---|---|---|---|")
    for name, times in best.items():
        total = [sum(t[0] for t in times), sum(t[1] for t in times)]
        cells = [f"{w:.2f} ({c:.2f})" if cpu else f"{w:.3f}" for w, c in [*times, total]]
        print(f"| {name} | {' | '.join(cells)} |")

    # What each variant computes, and how close to the matmul peak it runs (on its best wall seconds).
    print(f"\nShare of the {dtype_name} matmul peak ({peak:.1f} GFLOP/s): GFLOP, and GFLOP/s of the best wall time "
          "as a share of the peak\n")  # fmt: skip
    print("| variant | encode | UNet | decode | total |")
    print("|---|---|---|---|---|")
    for name, times in best.items():
        counts = [*flops[name], sum(flops[name])]
        walls = [*(t[0] for t in times), sum(t[0] for t in times)]
        cells = [f"{n / 1e9:.1f} G, {n / w / 1e9 / peak:.0%}" for n, w in zip(counts, walls)]
        print(f"| {name} | {' | '.join(cells)} |")

    # Ratios on the measure that the machine makes reliable (CPU seconds on a CPU).
    k = 1 if cpu else 0
    untiled = [t[k] for t in best["untiled"]]
    print(f"\nRatios ({'process CPU seconds' if cpu else 'seconds'}): tiled / untiled against the area the tiles "
          "cover (goal: time ratio ≤ 1.3 × area ratio)\n")  # fmt: skip
    print("| variant | encode: time / area | UNet: time / area | decode: time / area | total: time / area |")
    print("|---|---|---|---|---|")
    for name, (_, areas) in variants.items():
        if name.startswith("tiled"):
            times = [t[k] for t in best[name]]
            cells = [f"{t / u:.2f} / {a:.2f}" for t, u, a in zip(times, untiled, areas)]
            area_total = sum(u * a for u, a in zip(untiled, areas)) / sum(untiled)
            cells.append(f"{sum(times) / sum(untiled):.2f} / {area_total:.2f}")
            print(f"| {name} | {' | '.join(cells)} |")
    if baseline:
        base = [t[k] for t in best["baseline (diffusers, eager)"]]
        print("\nOurs / the plain diffusers baseline (untiled; tiled against the baseline × area ratio)\n")
        print("| variant | encode | UNet | decode | total |")
        print("|---|---|---|---|---|")
        for name, (_, areas) in variants.items():
            if name.startswith("baseline"):
                continue
            times = [t[k] for t in best[name]]
            cells = [f"{t / (b * a):.2f}" for t, b, a in zip(times, base, areas)]
            cells.append(f"{sum(times) / sum(b * a for b, a in zip(base, areas)):.2f}")
            print(f"| {name} | {' | '.join(cells)} |")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def precision_gap(generator: OneStepGenerator, device: torch.device, dtypes: list[str], output: int) -> None:
    """PSNR of each dtype's output against float32's: one untiled super-resolution of astronaut's top-left corner
    (scikit-image, ×4-downscaled; output × output), colour fix on (the defaults), the same generator in each dtype."""
    lq = embedded_lq("astronaut")[None, :, : output // 4, : output // 4].to(device)
    options = InferenceOptions(tile_size=0)
    outputs = {}
    for name in ["fp32", *(d for d in dtypes if d != "fp32")]:
        pipe = D3SRPipeline(copy.deepcopy(generator), options).to(device, name)
        start = time.perf_counter()
        outputs[name] = pipe.super_resolve(lq)
        print(f"  {name}: {time.perf_counter() - start:.1f} s", flush=True)
        del pipe
    print(f"\nOutput PSNR against fp32 ({output}² output, astronaut, untiled, colour fix adain)\n")
    print("| precision | PSNR vs fp32 (dB) | max abs difference (of [0, 1]) |")
    print("|---|---|---|")
    for name, out in outputs.items():
        if name != "fp32":
            gap = (out - outputs["fp32"]).abs().max().item()
            print(f"| {name} | {psnr(out, outputs['fp32']):.1f} | {gap:.4f} |")


def measure_memory(pipe: D3SRPipeline, output: int, options: dict) -> dict:
    """Seconds and peak memory of one super_resolve of an output² result."""
    device = pipe.device
    lq = torch.rand(1, 3, output // 4, output // 4, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        pipe.super_resolve(lq, **options)
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device)
        return {"seconds": seconds, "peak": peak, "above": peak - before}
    with PeakRSS() as rss:
        start = time.perf_counter()
        pipe.super_resolve(lq, **options)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak": rss.peak, "above": rss.above_start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", action="store_true", help="the pretrained tiny backbone instead of full size")
    parser.add_argument(
        "--dtypes", nargs="+", choices=["fp32", "bf16", "fp16"], help="default: fp32 bf16 (CUDA), fp32 (CPU)"
    )
    parser.add_argument("--output", type=int, default=None, help="timed output side (default 512; 256 with --quick)")
    parser.add_argument("--sizes", type=int, nargs="+", help="output sides for the tiled memory table")
    parser.add_argument("--tile", type=int, default=None, help="tile_size for tiled runs (default 512; CPU 256)")
    parser.add_argument("--overlap", type=int, default=None, help="tile_overlap (default tile/4)")
    parser.add_argument("--tile-batch-size", default="auto", help="tile_batch_size for the memory table")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per variant (default 5 CUDA, 2 CPU)")
    parser.add_argument("--baseline", action="store_true", help="also time plain diffusers calls of the same models")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on a CPU)")
    parser.add_argument("--channels-last", action="store_true", help="also time inference.channels_last=true")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--no-before", action="store_true", help="skip the 'tiled, before' (blend) rows")
    parser.add_argument("--precision-gap", action="store_true",
                        help="only the PSNR of each of --dtypes against fp32 at --output (no timing)")  # fmt: skip
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
    repeats = args.repeats or (5 if cuda and not args.quick else 2)
    batch = args.tile_batch_size if args.tile_batch_size == "auto" else int(args.tile_batch_size)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    generator = backbone_generator(str(device)) if args.backbone else random_generator(str(device))
    model = "pretrained tiny backbone" if args.backbone else "full-size SD 2.1-base UNet + VAE (random weights)"
    print(f"\nD³SR generator, {model}, {device_name(device)}, torch {torch.__version__}")
    if args.precision_gap:
        precision_gap(generator, device, dtypes, output)
        return
    for dtype_name in dtypes:
        stage_table(generator, device, dtype_name, output, tile, overlap, repeats, args.baseline, args.compile,
                    args.channels_last, before=not args.no_before)  # fmt: skip
    if args.no_memory:
        return

    # Peak memory as images grow, tiling on: should stay nearly flat.
    memory_kind = "torch.cuda.max_memory_allocated" if cuda else "peak RSS"
    pipe = D3SRPipeline(generator, InferenceOptions(tile_size=tile, tile_overlap=overlap)).to(device, dtypes[-1])
    options = {"tile_batch_size": batch, "color_fix": "adain"}
    print(f"\nPeak memory with tiling on ({dtypes[-1]}, tile_size {tile}, tile_overlap {overlap}, tile_batch_size "
          f"{batch}, {memory_kind}):\n")  # fmt: skip
    print("| output | VAE tiles / UNet tiles | s/image | peak memory (GiB) | above weights/start (GiB) | peak / 1st |")
    print("|---|---|---|---|---|---|")
    if cuda:
        measure_memory(pipe, sizes[0], options)  # warm-up (kernel selection, allocator)
    first = None
    for size in sizes:
        r = measure_memory(pipe, size, options)
        first = first or r["peak"]
        tiles = f"{core_count(size, size, tile)} / {tile_count(size, size, tile, overlap)}"
        print(f"| {size}² | {tiles} | {r['seconds']:.2f} | {gib(r['peak'])} | {gib(r['above'])} | "
              f"{r['peak'] / first:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
