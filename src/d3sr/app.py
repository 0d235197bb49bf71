"""The web demo: `python -m d3sr.app bundle=PATH [host=127.0.0.1 port=7860 key=value ...]` (pip install 'd3sr[app]').

bundle: an inference bundle folder (d3sr.export) or a training checkpoint (.ckpt). Options in conf/app.yaml.
The page takes an uploaded image and shows its ×4 result beside it (a before/after slider), the input and output
sizes and the seconds taken, and offers the result as a PNG, JPEG or WebP file; colour fix, tile size and the
download format are chosen on the page. Uploads that are not images, are animated, or have more than
`max_input_pixels` pixels get a message on the page. Requests run one at a time on the model's device, the others
wait in Gradio's queue. Only this machine can connect unless `host=` names another interface (a warning is logged).
Gradio is imported only in this module: the rest of d3sr works without it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from PIL import Image

from d3sr.commands import hydra_command
from d3sr.errors import D3SRError
from d3sr.images import IMAGE_EXTENSIONS, UNREADABLE, read_image, tensor_to_pil
from d3sr.inference import D3SRPipeline, InferenceOptions
from d3sr.inference.color_fix import COLOR_FIXES
from d3sr.options import check_choice, check_positive

log = logging.getLogger("d3sr.app")

OUTPUT_FORMATS = {"PNG": {}, "JPEG": {"quality": 95}, "WebP": {"quality": 95}}  # PIL save options per format
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WebP": ".webp"}
TILE_SIZES = (0, 256, 512, 1024)  # the page's choices (output pixels; 0: one pass), plus the configured one
LOOPBACK = ("127.0.0.1", "localhost", "::1")
KEEP_RESULTS_S = 3600  # result files (and Gradio's copies of them) older than this are deleted


@dataclass(frozen=True)
class Upscaled:
    """One request's answer: the input and its ×4 result (8-bit RGB), the text the page shows, the file offered."""

    input: Image.Image
    result: Image.Image
    info: str
    file: Path


# ------------------------------------------------------------------------------------------------------------------
# One request.


def read_upload(path: str | Path, max_input_pixels: int) -> torch.Tensor:
    """(3, h, w) in [0, 1] from an uploaded file; D3SRError with the page's message when it cannot be upscaled."""
    # Read the header first (size, frames), so a refused upload is never decoded.
    try:
        with Image.open(path) as image:
            (width, height), frames = image.size, getattr(image, "n_frames", 1)
    except Image.DecompressionBombError:
        raise D3SRError(f"the image is far larger than this demo accepts ({max_input_pixels:,} pixels)") from None
    except UNREADABLE:
        raise D3SRError("this file is not an image that can be read: upload a PNG, JPEG, WebP, BMP or TIFF") from None
    if frames > 1:
        raise D3SRError(f"the image is animated or has several pages ({frames} frames): upload a still image")
    if width * height > max_input_pixels:
        raise D3SRError(f"the image is {width}×{height} ({width * height:,} pixels); this demo accepts up to "
                        f"{max_input_pixels:,} pixels: crop or downscale it first")  # fmt: skip
    try:
        return read_image(path, alpha="white")
    except UNREADABLE as error:
        raise D3SRError(f"the image cannot be decoded: {error}") from None


def upscale(
    pipe: D3SRPipeline,
    path: str | Path,
    output_dir: Path,
    color_fix: str = "adain",
    tile_size: int = 512,
    output_format: str = "PNG",
    max_input_pixels: int = 1024 * 1024,
) -> Upscaled:
    """Super-resolve the image file `path` ×4 and save the result in `output_dir`; D3SRError on a bad upload/option."""
    check_choice("output format", output_format, OUTPUT_FORMATS)
    lq = read_upload(path, max_input_pixels)
    start = time.perf_counter()
    sr = pipe.super_resolve(lq[None], color_fix=color_fix, tile_size=int(tile_size))[0]
    seconds = time.perf_counter() - start
    result = tensor_to_pil(sr)

    # Save the file offered for download in a folder of its own; forget results older than KEEP_RESULTS_S.
    for old in output_dir.iterdir():
        if time.time() - old.stat().st_mtime > KEEP_RESULTS_S:
            shutil.rmtree(old, ignore_errors=True)
    file = Path(tempfile.mkdtemp(dir=output_dir)) / f"{Path(path).stem}_x4{SUFFIXES[output_format]}"
    result.save(file, format=output_format.upper(), **OUTPUT_FORMATS[output_format])

    (h, w), (out_h, out_w) = lq.shape[-2:], sr.shape[-2:]
    tiles = f"tile size {int(tile_size)} px" if tile_size else "no tiling"
    how = f"{pipe.device.type}, {str(pipe.dtype).removeprefix('torch.')}, colour fix {color_fix}, {tiles}"
    info = f"**{w} × {h}** → **{out_w} × {out_h}** pixels in **{seconds:.2f} s** ({how})"
    return Upscaled(tensor_to_pil(lq), result, info, file)


# ------------------------------------------------------------------------------------------------------------------
# The page and the server.


def import_gradio() -> Any:
    """The gradio module; D3SRError naming the extra when it is not installed. Gradio's usage reports are off."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise D3SRError("the web demo needs Gradio: pip install 'd3sr[app]'") from None
    return gradio


def build_demo(pipe: D3SRPipeline, output_dir: Path, max_input_pixels: int, output_format: str = "PNG") -> Any:
    """The gr.Blocks page: upload and options on the left; before/after, sizes and time, download on the right."""
    gr = import_gradio()
    slider = hasattr(gr, "ImageSlider")  # Gradio >= 5.x; older ones show the two images side by side
    nothing = (None,) if slider else (None, None)

    def on_upscale(path, color_fix, tile_size, fmt):
        if not path:
            return *nothing, "Upload an image first.", None
        try:
            done = upscale(pipe, path, output_dir, color_fix, tile_size, fmt, max_input_pixels)
        except D3SRError as error:
            return *nothing, f"**Cannot upscale this upload:** {error}", None
        before = done.input.resize(done.result.size, Image.Resampling.NEAREST)  # the input's pixels, enlarged ×4
        images = [(before, done.result)] if slider else [before, done.result]
        return *images, done.info, str(done.file)

    tile_sizes = [("off (one pass)" if size == 0 else f"{size} px", size)
                  for size in sorted({*TILE_SIZES, pipe.options.tile_size})]  # fmt: skip
    with gr.Blocks(title="d3sr ×4 super-resolution", delete_cache=(KEEP_RESULTS_S, KEEP_RESULTS_S)) as demo:
        model = Path(str(pipe.info.get("source", "?"))).name  # not the server's folders
        gr.Markdown(f"## d3sr: ×4 super-resolution (D³SR, one diffusion step)\nModel: `{model}`")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", file_types=list(IMAGE_EXTENSIONS), type="filepath")
                color_fix = gr.Radio(list(COLOR_FIXES), value=pipe.options.color_fix, label="Colour fix")
                tile_size = gr.Dropdown(tile_sizes, value=pipe.options.tile_size, label="Tile size (output pixels)")
                fmt = gr.Radio(list(OUTPUT_FORMATS), value=output_format, label="Download format")
                button = gr.Button("Upscale ×4", variant="primary")
            with gr.Column(scale=2):
                if slider:
                    shown = [gr.ImageSlider(label="Before (input, enlarged ×4) / after (×4 result)", type="pil")]
                else:
                    shown = [gr.Image(label="Input, enlarged ×4", type="pil"), gr.Image(label="×4 result", type="pil")]
                info = gr.Markdown("Upload an image and press **Upscale ×4**.")
                download = gr.DownloadButton("Download the result")
        button.click(on_upscale, [upload, color_fix, tile_size, fmt], [*shown, info, download])
    return demo


def launch(
    demo: Any, host: str, port: int, queue_size: int = 16, max_file_size: str | None = None, block: bool = True
) -> None:
    """Serve `demo` on host:port, one request at a time (the others queue); block=False returns once it serves."""
    if host not in LOOPBACK:
        log.warning("WARNING: serving on %s: anyone who can reach this machine on port %d can use the demo and "
                    "the model's device; there is no login", host, port)  # fmt: skip
    # One request at a time on the model's device; the others wait in the queue (at most queue_size).
    demo.queue(default_concurrency_limit=1, max_size=queue_size)
    try:
        demo.launch(server_name=host, server_port=port, max_file_size=max_file_size, prevent_thread_lock=not block)
    except OSError as error:
        raise D3SRError(f"cannot serve on {host}:{port}: {error}") from None


def run(cfg: DictConfig) -> None:
    """Load the model, then serve the page until interrupted (user errors are raised before Gradio starts)."""
    if not cfg.get("bundle"):
        raise D3SRError("usage: python -m d3sr.app bundle=BUNDLE_DIR|CKPT [host=127.0.0.1] [port=7860]")
    if not Path(cfg.bundle).expanduser().exists():
        raise D3SRError(f"bundle={cfg.bundle} does not exist: give an inference bundle folder or a checkpoint (.ckpt)")
    options = InferenceOptions.from_config(cfg.inference)
    device, dtype = options.torch_device(), options.torch_dtype()
    check_choice("output_format", cfg.output_format, OUTPUT_FORMATS)
    check_positive("max_input_pixels", cfg.max_input_pixels)
    check_positive("queue_size", cfg.queue_size)
    import_gradio()  # before the model loads: a missing extra is said at once
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's start-up requests to itself, one line each

    pipe = D3SRPipeline.from_pretrained(
        cfg.bundle, device=device, dtype=dtype, base_model=cfg.get("base_model"), fuse=cfg.fuse_lora, options=options
    )
    log.info("Loaded %s on %s", cfg.bundle, device)
    log.info(options.resolved(device))
    with tempfile.TemporaryDirectory(prefix="d3sr-app-") as results:
        demo = build_demo(pipe, Path(results), int(cfg.max_input_pixels), cfg.output_format)
        launch(demo, str(cfg.host), int(cfg.port), int(cfg.queue_size), cfg.max_file_size)


main = hydra_command("app", run)

if __name__ == "__main__":
    main()
