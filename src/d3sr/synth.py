"""Test-set synthesis: `python -m d3sr.synth input=HQ_DIR output=OUT_DIR seed=0 degradation=realesrgan`.

Writes one LQ PNG per HQ image (same relative path and stem, `.png`) and `manifest.json` (seed, degradation name and
parameters, d3sr version, files written and skipped). Whole images of any size are degraded one at a time; each is
first cropped to a multiple of the scale (the bottom/right remainder rows and columns are dropped) so the LQ is
exactly ×scale smaller. Each image's randomness comes from `default_rng([seed, crc32(relative name)])`, so its LQ
does not depend on the other files in the folder, and two runs write byte-identical files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

import d3sr
from d3sr.atomic_files import check_output_folder, write_atomically
from d3sr.commands import hydra_command
from d3sr.data.degradation import degrade_image, image_rng
from d3sr.errors import D3SRError
from d3sr.images import EMBEDDED_HELD_OUT, EMBEDDED_TRAIN, IMAGE_EXTENSIONS, embedded_photo, read_image, to_uint8

log = logging.getLogger("d3sr.synth")

EMBEDDED = "embedded"


def list_inputs(source: str, output: Path) -> list[tuple[str, Callable[[], torch.Tensor]]]:
    """(relative name, loader) per HQ image: files under `source` (sorted, not in `output`) or the embedded set."""
    if source == EMBEDDED:
        return [
            (f"{name}.png", lambda name=name: embedded_photo(name)) for name in (*EMBEDDED_TRAIN, *EMBEDDED_HELD_OUT)
        ]
    root = Path(source).expanduser().resolve()
    if not root.is_dir():
        raise D3SRError(f"input={source} is not a folder (give a folder of HQ images, or input=embedded)")
    if output == root:
        raise D3SRError(f"output={output} is the input folder; choose another folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and output not in p.parents)
    if not paths:
        raise D3SRError(f"input={source} holds no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
    return [(p.relative_to(root).as_posix(), lambda p=p: read_image(p)) for p in paths]


def output_name(relative: str) -> str:
    """The LQ file's relative path: the input's relative path with a `.png` suffix."""
    return Path(relative).with_suffix(".png").as_posix()


@torch.no_grad()
def synthesize(cfg: DictConfig) -> dict:
    """Degrade every input image as configured; returns the manifest (also written to output/manifest.json)."""
    output = Path(cfg.output).expanduser().resolve()
    check_output_folder(output, bool(cfg.overwrite))
    inputs = list_inputs(str(cfg.input), output)
    names = [output_name(relative) for relative, _ in inputs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise D3SRError(f"several inputs would be written to the same file: {', '.join(clashes)} (rename them)")
    degradation = instantiate(cfg.degradation)

    written, skipped = [], []
    for (relative, load), name in tqdm(zip(inputs, names), total=len(inputs), desc="synth", unit="image"):
        try:
            image = load()
            lq = degrade_image(degradation, image, image_rng(int(cfg.seed), relative), cfg.device)
        except (OSError, ValueError, SyntaxError) as error:
            log.warning("Skipping %s: %s", relative, error)
            skipped.append({"input": relative, "error": str(error)})
            continue
        array = to_uint8(lq)
        write_atomically(output / name, lambda path, array=array: Image.fromarray(array).save(path, format="PNG"))
        height, width = lq.shape[-2] * degradation.scale, lq.shape[-1] * degradation.scale
        written.append({"input": relative, "output": name, "hq_crop": [height, width], "lq_size": list(lq.shape[-2:])})
    if not written:
        raise D3SRError(f"none of the {len(inputs)} input images could be read; nothing written")

    hydra_choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    manifest = {
        "d3sr_version": d3sr.__version__,
        "input": str(cfg.input),
        "seed": int(cfg.seed),
        "device": str(cfg.device),
        "degradation": {
            "name": hydra_choices.get("degradation", cfg.degradation._target_.rsplit(".", 1)[-1]),
            "parameters": OmegaConf.to_container(cfg.degradation, resolve=True),
        },
        "crop": f"each HQ image is cropped to a multiple of {degradation.scale} (bottom/right remainder dropped)",
        "files": written,
        "skipped": skipped,
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    write_atomically(output / "manifest.json", lambda path: path.write_text(text, encoding="utf-8"))
    log.info("Wrote %d LQ images to %s (%d skipped)", len(written), output, len(skipped))
    return manifest


main = hydra_command("synth", synthesize)

if __name__ == "__main__":
    main()
