"""Evaluation entry point: `python -m d3sr.evaluate sr=DIR hr=DIR name=RealSR [compare=paper] ...` (Hydra).

Scores SR images with the paper's metric suite and writes per_image.csv, summary.json and results.md (a table whose
header states the protocol) to `output`. With `bundle=... lq=...` it first super-resolves lq/ into output/sr/.
`check_weights=true` lists the metrics' weight files; `complexity=true` prints the Table 3 columns. See
conf/evaluate.yaml for every option.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from d3sr.cli import run_reporting_errors
from d3sr.config import D3SRError, check_choice, check_positive

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


def super_resolve_folder(
    bundle: str, lq_dir: Path, out_dir: Path, device: str, dtype: str, progress: bool, **options
) -> Path:
    """Run D3SRPipeline from `bundle` on every image of `lq_dir`; save PNGs named by stem in `out_dir`.

    options: tile_size, tile_overlap, color_fix of D3SRPipeline.super_resolve.
    """
    from tqdm import tqdm

    from d3sr.evaluation.metrics import list_images, resolve_device
    from d3sr.infer import UNREADABLE, read_input, write_png
    from d3sr.models.loading import parse_dtype

    try:
        from d3sr.inference.pipeline import D3SRPipeline
    except ImportError as error:
        raise D3SRError(f"bundle= needs d3sr.inference.pipeline, which could not be imported: {error}") from error
    images, _ = list_images(lq_dir)
    pipe = D3SRPipeline.from_pretrained(bundle, device=str(resolve_device(device)), dtype=parse_dtype(dtype))
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, path in tqdm(images.items(), desc="super-resolving", disable=not progress):
        # The same reading as d3sr.infer: EXIF orientation, 16-bit scaled, transparency composited on white.
        try:
            lq, _ = read_input(path)
        except UNREADABLE as error:
            raise D3SRError(f"cannot read the LQ image {path}: {error}") from error
        write_png(pipe.super_resolve(lq[None], **options)[0], out_dir / f"{stem}.png")
    return out_dir


def evaluate(cfg: DictConfig) -> int:
    """Run what cfg asks for; returns the exit status (0, or 1 when check_weights finds missing files)."""
    from d3sr.evaluation.metrics import metric_names

    try:
        metrics = metric_names(list(cfg.metrics))
    except ValueError as error:
        raise D3SRError(f"metrics: {error}") from error
    if cfg.get("check_weights"):
        from d3sr.evaluation.weights import check_weights

        report = check_weights(metrics)
        print(report.format())
        return 0 if report.ok else 1
    if cfg.get("complexity"):
        from d3sr.evaluation.complexity import complexity_report

        print(complexity_report(int(cfg.complexity_size)))
        return 0
    return evaluate_run(cfg, metrics)


def evaluate_run(cfg: DictConfig, metrics: list[str]) -> int:
    """Evaluate cfg.sr (or the bundle's output on cfg.lq) against cfg.hr and write the reports."""
    from d3sr.evaluation import paper
    from d3sr.evaluation.metrics import evaluate_folders
    from d3sr.evaluation.report import write_reports

    try:
        for key, choices in (("color", ("y", "rgb")), ("align", ("error", "crop")), ("images", ("whole", "crops"))):
            check_choice(key, cfg[key], choices)
        check_positive("crop_border", int(cfg.crop_border), allow_zero=True)
        if cfg.get("bundle"):
            from d3sr.inference.color_fix import COLOR_FIXES
            from d3sr.inference.tiling import check_tiling

            check_choice("color_fix", cfg.color_fix, COLOR_FIXES)
            check_tiling(int(cfg.tile.size), int(cfg.tile.overlap))
    except ValueError as error:
        raise D3SRError(str(error)) from error
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

    inference = None
    if bundle:
        inference = {"tile_size": int(cfg.tile.size), "tile_overlap": int(cfg.tile.overlap),
                     "color_fix": cfg.color_fix}  # fmt: skip
        settings = ", ".join(f"{key}={value}" for key, value in inference.items())
        log.info("Super-resolving %s with %s (%s)", lq_dir, bundle, settings)
        sr_dir = super_resolve_folder(
            str(bundle), lq_dir, output / "sr", cfg.device, cfg.dtype, cfg.progress, **inference
        )
    evaluation = evaluate_folders(
        sr_dir, hr_dir, metrics, crop_border=int(cfg.crop_border), color=cfg.color, align=cfg.align,
        device=cfg.device, test_set=name, images=cfg.images, progress=bool(cfg.progress),
    )  # fmt: skip
    label = f"ours ({Path(str(bundle)).name})" if bundle else f"ours ({sr_dir.name})"
    paper_label = ""
    if paper_row is not None:
        paper_label = f"D³SR, paper Table 1 ({paper.paper_test_set(name)}, {paper.TABLE1_PROTOCOL})"
        if cfg.images != "whole":
            evaluation.notes.append("the paper's numbers are on whole images; these folders hold crops")
    extra = {"sr": str(sr_dir), "hr": str(hr_dir) if hr_dir else None, "bundle": str(bundle) if bundle else None,
             "inference": inference and {**inference, "dtype": cfg.dtype}}  # fmt: skip
    paths = write_reports(evaluation, output, label, paper_row, paper_label, extra)
    print(paths["markdown"].read_text(encoding="utf-8"))
    log.info("Reports: %s", ", ".join(str(p) for p in paths.values()))
    return 0


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; exit status 0 (done), 1 (check_weights: files missing) or 2 (user error)."""
    status = run_reporting_errors(evaluate, cfg)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
