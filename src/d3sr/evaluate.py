"""Evaluation entry point: `python -m d3sr.evaluate sr=DIR hr=DIR name=RealSR [compare=paper] ...` (Hydra).

Scores SR images with the paper's metric suite and writes per_image.csv, summary.json and results.md (a table whose
header states the protocol) to `output`. With `bundle=... lq=...` it first super-resolves lq/ into output/sr/ with
the `inference.*` options. See conf/evaluate.yaml for every option; the metrics' weight files are listed by
`python -m d3sr.check_weights`, the generator's complexity by `python -m d3sr.complexity`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from d3sr.commands import hydra_command
from d3sr.errors import D3SRError
from d3sr.evaluation import paper
from d3sr.evaluation.folders import check_protocol, evaluate_folders, list_images
from d3sr.evaluation.report import write_reports
from d3sr.evaluation.suite import metric_names
from d3sr.images import UNREADABLE, read_image, write_png
from d3sr.inference import D3SRPipeline, InferenceOptions

log = logging.getLogger("d3sr.evaluate")


def _folder(cfg: DictConfig, key: str) -> Path | None:
    value = cfg.get(key)
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise D3SRError(f"{key}={value} is not a folder")
    return path


def _check_output(output: Path, inputs: dict[str, Path | None]) -> None:
    """Refuse an output folder that is, or lies inside, one of the input folders (they are never written)."""
    resolved = output.resolve()
    for key, folder in inputs.items():
        if folder is not None and resolved.is_relative_to(folder.resolve()):
            raise D3SRError(
                f"output={output} is inside {key}={folder}; input folders are never written, choose another"
            )


def super_resolve_folder(pipe: D3SRPipeline, lq_dir: Path, out_dir: Path, progress: bool = True) -> Path:
    """Super-resolve every image of `lq_dir` with `pipe`; save PNGs named by stem in `out_dir`."""
    images, _ = list_images(lq_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, path in tqdm(images.items(), desc="super-resolving", disable=not progress):
        # Read as d3sr.infer does (EXIF orientation, 16-bit scaled, transparency on white), super-resolve, save.
        try:
            lq = read_image(path, alpha="white")
        except UNREADABLE as error:
            raise D3SRError(f"cannot read the LQ image {path}: {error}") from error
        write_png(pipe.super_resolve(lq[None])[0], out_dir / f"{stem}.png")
    return out_dir


def evaluate(cfg: DictConfig) -> int:
    """Evaluate cfg.sr (or the bundle's output on cfg.lq) against cfg.hr and write the reports; returns 0."""
    # Check every value before anything runs.
    metrics = metric_names(list(cfg.metrics))
    check_protocol(cfg.color, int(cfg.crop_border), cfg.align, cfg.images)
    options = InferenceOptions.from_config(cfg.inference)
    device = options.torch_device()  # the pipeline's and the metrics' device
    compare = cfg.get("compare")
    if compare not in (None, "paper"):
        raise D3SRError(f"compare={compare!r} is not valid; choose null or 'paper'")
    sr_dir, hr_dir, lq_dir = _folder(cfg, "sr"), _folder(cfg, "hr"), _folder(cfg, "lq")
    bundle = cfg.get("bundle")
    if bundle and sr_dir is not None:
        raise D3SRError("give either sr=DIR (evaluate existing images) or bundle=PATH lq=DIR (super-resolve first)")
    if bundle and lq_dir is None:
        raise D3SRError("bundle= needs lq=<folder of low-resolution images>")
    if not bundle and sr_dir is None:
        raise D3SRError("sr=<folder of SR images> is required (or bundle=PATH lq=DIR to super-resolve first)")
    name = cfg.get("name")
    default_name = name or (sr_dir.name if sr_dir is not None else Path(str(bundle)).stem)
    output = Path(str(cfg.output)).expanduser() if cfg.get("output") else Path("outputs/evaluate") / default_name
    _check_output(output, {"sr": sr_dir, "hr": hr_dir, "lq": lq_dir})
    paper_row = None
    if compare == "paper":
        paper_row = paper.paper_row(name)
        if paper_row is None:
            raise D3SRError(
                f"compare=paper needs name= one of the paper's Table 1 test sets ({', '.join(paper.TABLE1)}), "
                f"got name={name!r}"
            )

    # Super-resolve the LQ folder first when a bundle is given.
    inference = None
    if bundle:
        pipe = D3SRPipeline.from_pretrained(str(bundle), options=options)
        dtype = str(options.torch_dtype()).removeprefix("torch.")
        inference = {"tile_size": options.tile_size, "tile_overlap": options.tile_overlap,
                     "color_fix": options.color_fix, "dtype": dtype,
                     "channels_last": options.tiling(device)["channels_last"]}  # fmt: skip
        settings = ", ".join(f"{key}={value}" for key, value in inference.items())
        log.info("Super-resolving %s with %s on %s (%s)", lq_dir, bundle, device, settings)
        log.info(options.resolved(device))
        sr_dir = super_resolve_folder(pipe, lq_dir, output / "sr", bool(cfg.progress))

    # Score, then write the reports.
    evaluation = evaluate_folders(
        sr_dir, hr_dir, metrics, crop_border=int(cfg.crop_border), color=cfg.color, align=cfg.align,
        device=device, test_set=name, images=cfg.images, progress=bool(cfg.progress),
    )  # fmt: skip
    label = f"ours ({Path(str(bundle)).name})" if bundle else f"ours ({sr_dir.name})"
    paper_label = ""
    if paper_row is not None:
        paper_label = f"D³SR, paper Table 1 ({paper.paper_test_set(name)}, {paper.TABLE1_PROTOCOL})"
        if cfg.images != "whole":
            evaluation.notes.append("the paper's numbers are on whole images; these folders hold crops")
    extra = {"sr": str(sr_dir), "hr": str(hr_dir) if hr_dir else None, "bundle": str(bundle) if bundle else None,
             "inference": inference}  # fmt: skip
    paths = write_reports(evaluation, output, label, paper_row, paper_label, extra)
    print(paths["markdown"].read_text(encoding="utf-8"))
    log.info("Reports: %s", ", ".join(str(p) for p in paths.values()))
    return 0


main = hydra_command("evaluate", evaluate)

if __name__ == "__main__":
    main()
