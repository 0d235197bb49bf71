"""The evaluation command: reports written, protocol stated, errors clear (exit 2), paper row, bundle path."""

from __future__ import annotations

import csv
import json

import pytest
from eval_helpers import write_pairs
from PIL import Image

from d3sr.errors import run_reporting_errors
from d3sr.evaluate import evaluate

pytest.importorskip("pyiqa")


@pytest.fixture
def run(compose, tmp_path):
    """run(overrides) -> (exit status, stdout) of the evaluation CLI in-process (Hydra composes conf/evaluate.yaml)."""

    def _run(overrides, capsys=None):
        cfg = compose(["progress=false", *overrides], config_name="evaluate")
        return run_reporting_errors(evaluate, cfg)

    return _run


def test_writes_csv_json_markdown_with_protocol_and_paper_row(run, pairs, tmp_path, with_random_hub, capsys):
    sr, hr = pairs
    out = tmp_path / "out"
    status = run([f"sr={sr}", f"hr={hr}", f"output={out}", "metrics=[psnr,ssim,lpips,dists]", "name=RealSR",
                  "compare=paper"])  # fmt: skip
    assert status == 0
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["image"] for r in rows] == ["astronaut", "chelsea", "coffee"]
    assert {"psnr", "ssim", "lpips", "dists", "width", "height"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["means"]) == {"psnr", "ssim", "lpips", "dists"}
    assert summary["means"]["psnr"] == pytest.approx(sum(float(r["psnr"]) for r in rows) / 3)
    assert summary["protocol"]["test_set"] == "RealSR" and summary["protocol"]["crop_border"] == 0
    assert summary["paper"] == {"psnr": 24.11, "ssim": 0.7152, "lpips": 0.2961, "dists": 0.1782}
    md = (out / "results.md").read_text()
    for text in (
        "whole images",
        "Y of YCbCr",
        "crop border: 0 px",
        "pyiqa 0.1.16",
        "LPIPS v0.1, AlexNet",
        "| ours (sr) |",
    ):
        assert text in md
    assert "| D³SR, paper Table 1 (RealSR" in md and "| 24.11 | 0.7152 | 0.2961 | 0.1782 |" in md
    assert md in capsys.readouterr().out
    assert sorted(p.name for p in sr.iterdir()) == ["astronaut.png", "chelsea.png", "coffee.png"]  # inputs untouched


def test_identical_folders(run, tmp_path, with_random_hub):
    sr, hr = write_pairs(tmp_path / "same", sigma=0)
    out = tmp_path / "out"
    assert run([f"sr={sr}", f"hr={hr}", f"output={out}", "metrics=[psnr,ssim,dists]"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["means"]["psnr"] == "inf"  # JSON has no infinity: written as the string "inf"
    assert summary["means"]["ssim"] == pytest.approx(1.0)
    assert summary["means"]["dists"] == pytest.approx(0.0, abs=1e-5)
    assert "| inf |" in (out / "results.md").read_text()


def test_missing_pair_is_a_clear_error_with_exit_2(pairs, tmp_path, run_command):
    sr, hr = pairs
    (sr / "coffee.png").unlink()
    result = run_command("evaluate", f"sr={sr}", f"hr={hr}", "metrics=[psnr]", f"output={tmp_path / 'o'}",
                         env={"HF_HUB_OFFLINE": "1"}, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error: 1 HR image(s)" in result.stderr and "coffee.png" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # Hydra wrote nothing (no outputs/, .hydra, logs)


def test_images_smaller_than_the_ssim_window_are_one_clear_error(run, tmp_path, capsys):
    for folder in ("sr", "hr"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (8, 8), (90, 120, 30)).save(tmp_path / folder / "tiny.png")
    overrides = [f"sr={tmp_path / 'sr'}", f"hr={tmp_path / 'hr'}", "metrics=[psnr,ssim]", f"output={tmp_path / 'o'}"]
    with pytest.raises(SystemExit) as exited:
        run(overrides)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: cannot score") and "tiny.png (8×8 px" in error and "SSIM: 11 px" in error


def test_size_mismatch_errors_or_crops(run, pairs, tmp_path, capsys):
    sr, hr = pairs
    Image.open(sr / "chelsea.png").crop((0, 0, 76, 60)).save(sr / "chelsea.png")
    with pytest.raises(SystemExit) as exit_info:
        run([f"sr={sr}", f"hr={hr}", "metrics=[psnr]", f"output={tmp_path / 'o'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "chelsea.png is 76×60 but HR" in err and "is 80×64" in err and "align=crop" in err
    out = tmp_path / "cropped"
    assert run([f"sr={sr}", f"hr={hr}", "metrics=[psnr]", f"output={out}", "align=crop"]) == 0
    md = (out / "results.md").read_text()
    assert "cropped to the common top-left region" in md and "chelsea: SR 76×60, HR 80×64" in md
    rows = {r["image"]: r for r in csv.DictReader((out / "per_image.csv").open())}
    assert rows["chelsea"]["aligned"] == "cropped" and rows["chelsea"]["width"] == "76"


def test_extra_files_are_noted(run, pairs, tmp_path):
    sr, hr = pairs
    Image.new("RGB", (80, 64)).save(sr / "unpaired.png")
    (hr / "README.txt").write_text("test set")
    out = tmp_path / "o"
    assert run([f"sr={sr}", f"hr={hr}", "metrics=[psnr]", f"output={out}"]) == 0
    notes = json.loads((out / "summary.json").read_text())["notes"]
    assert any("unpaired.png" in n for n in notes) and any("README.txt" in n for n in notes)
    assert json.loads((out / "summary.json").read_text())["protocol"]["images_evaluated"] == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["output={sr}/reports"], "input folders are never written"),
        (["compare=paper", "name=Urban100"], "compare=paper needs name="),
        (["color=lab"], "color='lab' is not valid"),
        (["align=middle"], "align='middle' is not valid"),
        (["crop_border=-1"], "crop_border must be >= 0"),
        (["metrics=[psnr,sharpness]"], "unknown metric 'sharpness'"),
        (["hr=null"], "need hr="),
    ],
)
def test_user_errors_exit_2(run, pairs, capsys, overrides, message):
    sr, hr = pairs
    overrides = [o.format(sr=sr) for o in overrides]
    with pytest.raises(SystemExit) as exit_info:
        run([f"sr={sr}", f"hr={hr}", "metrics=[psnr]", *overrides])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


class BicubicPipeline:
    """Stands in for D3SRPipeline: ×4 bicubic upscaling, same call convention ((B, 3, h, w) in [0, 1] in and out)."""

    loaded_with = None

    def __init__(self, options):
        self.options = options

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None, options=None):
        cls.loaded_with = (path, device, dtype, options)
        return cls(options)

    def super_resolve(self, lq):
        import torch.nn.functional as F

        return F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)


def test_bundle_runs_inference_then_evaluates(run, tmp_path, monkeypatch, capsys):
    # The plumbing (LR folder → pipeline → output/sr → metrics) with a stand-in pipeline.
    import torch

    from d3sr.inference import InferenceOptions
    from d3sr.options import auto_channels_last

    monkeypatch.setattr("d3sr.evaluate.D3SRPipeline", BicubicPipeline)
    _, hr = write_pairs(tmp_path / "set", sigma=0)
    lq = tmp_path / "lq"
    lq.mkdir()
    for path in hr.iterdir():
        Image.open(path).resize((20, 16), Image.BICUBIC).save(lq / path.name)
    out = tmp_path / "out"
    assert run([f"bundle={tmp_path / 'bundle'}", f"lq={lq}", f"hr={hr}", f"output={out}", "metrics=[psnr,ssim]",
                "inference.device=cpu", "inference.tile_size=0", "inference.color_fix=none"]) == 0  # fmt: skip
    # The shared inference node reaches the pipeline as one InferenceOptions; evaluation runs it in fp32.
    path, _, _, options = BicubicPipeline.loaded_with
    assert path == str(tmp_path / "bundle")
    assert options == InferenceOptions(tile_size=0, tile_overlap=128, color_fix="none", device="cpu", precision="fp32")
    assert sorted(p.name for p in (out / "sr").iterdir()) == ["astronaut.png", "chelsea.png", "coffee.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert 15 < summary["means"]["psnr"] < 40 and summary["bundle"] == str(tmp_path / "bundle")
    channels_last = auto_channels_last(torch.device("cpu")).value  # inference.channels_last=auto, resolved
    assert summary["inference"] == {"tile_size": 0, "tile_overlap": 128, "color_fix": "none", "dtype": "float32",
                                    "channels_last": channels_last}  # fmt: skip

    # Inference options are checked once, before anything runs, naming the key (exit status 2).
    BicubicPipeline.loaded_with = None
    for bad in ("inference.tile_size=100", "inference.color_fix=sharpen", "inference.device=tpu"):
        with pytest.raises(SystemExit) as exit_info:
            run([f"bundle={tmp_path / 'bundle'}", f"lq={lq}", f"hr={hr}", f"output={tmp_path / 'o2'}", bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and bad.split("=")[0] in err
    assert not (tmp_path / "o2").exists() and BicubicPipeline.loaded_with is None


def test_bundle_reads_lq_images_as_infer_does(run, tmp_path, monkeypatch):
    # 16-bit gray and transparent LQ images: scaled to [0, 1] and composited on white, not clipped or dropped.
    import numpy as np

    monkeypatch.setattr("d3sr.evaluate.D3SRPipeline", BicubicPipeline)
    lq, hr = tmp_path / "lq", tmp_path / "hr"
    lq.mkdir()
    hr.mkdir()
    Image.fromarray(np.full((16, 20), 128 * 257, dtype=np.uint16)).save(lq / "deep.png")  # 16-bit mid-gray
    Image.new("RGBA", (20, 16), (0, 0, 0, 0)).save(lq / "clear.png")  # fully transparent → white
    for name in ("deep", "clear"):
        Image.new("RGB", (80, 64), (128, 128, 128)).save(hr / f"{name}.png")
    out = tmp_path / "out"
    assert run([f"bundle={tmp_path / 'bundle'}", f"lq={lq}", f"hr={hr}", f"output={out}", "metrics=[psnr]",
                "inference.device=cpu"]) == 0  # fmt: skip
    assert np.unique(np.asarray(Image.open(out / "sr" / "deep.png"))).tolist() == [128]
    assert np.unique(np.asarray(Image.open(out / "sr" / "clear.png"))).tolist() == [255]


def test_bundle_end_to_end_with_a_tiny_checkpoint(run, compose, tmp_path, monkeypatch):
    # The real D3SRPipeline on a checkpoint of the tiny generator, written by the training module's own hook.
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from d3sr.models.d3sr_module import D3SRModule

    cfg = compose(["model/generator=tiny", "model/discriminator=tiny", "loss=mse_only", "degradation=bicubic"])
    module = instantiate(cfg.model, loss=instantiate(cfg.loss))
    module.run_config = {"model": {"generator": OmegaConf.to_container(cfg.model.generator, resolve=True)}}
    monkeypatch.setattr(D3SRModule, "iteration", property(lambda self: 0))  # no Trainer attached
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "tiny.ckpt")

    _, hr = write_pairs(tmp_path / "set", sigma=0, names=("astronaut", "coffee"))
    lq = tmp_path / "lq"
    lq.mkdir()
    for path in hr.iterdir():
        Image.open(path).resize((20, 16), Image.BICUBIC).save(lq / path.name)
    out = tmp_path / "out"
    assert run([f"bundle={tmp_path / 'tiny.ckpt'}", f"lq={lq}", f"hr={hr}", f"output={out}", "metrics=[psnr,ssim]",
                "inference.device=cpu"]) == 0  # fmt: skip
    assert [Image.open(p).size for p in sorted((out / "sr").iterdir())] == [(80, 64), (80, 64)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["images_evaluated"] == 2 and "ours (tiny.ckpt)" in (out / "results.md").read_text()
