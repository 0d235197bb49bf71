"""The train entry point as users run it: configs, the paper's recipe, errors, and a sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "d3sr" / "conf"

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(compose, experiment):
    cfg = compose([f"experiment={experiment}", "paths.output_dir=/tmp/x"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["trainer"]["max_steps"] == cfg.iterations * (1 + cfg.model.d_steps_per_g_step)


@pytest.mark.parametrize(
    "group", ["model/discriminator", "loss", "data", "degradation", "trainer", "logger", "callbacks"]
)
def test_every_group_option_composes(compose, group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        cfg = compose(["experiment=demo", f"{group}={option}", "paths.output_dir=/tmp/x"])
        OmegaConf.to_container(cfg, resolve=True)


def test_sdxl_disc_is_the_papers_recipe(compose):
    cfg = compose(["experiment=sdxl_disc", "paths.output_dir=/tmp/x"])
    gen, disc = cfg.model.generator, cfg.model.discriminator
    assert gen.backbone.model == cfg.paths.sd21 and gen.backbone.kind == "sd" and gen.lora_rank == gen.lora_alpha == 16
    assert disc.backbone.model == cfg.paths.sdxl and disc.backbone.kind == "sdxl" and disc.lora_rank == 16
    assert (disc.t_min, disc.t_max) == (0, 999)
    assert cfg.loss.lambda_adv == 0.005 and cfg.loss.lambda_ea_dists == 1.0 and cfg.loss.lambda_mse == 1.0
    assert cfg.model.optimizer_g.lr == cfg.model.optimizer_d.lr == 5e-5
    assert cfg.model.optimizer_g._target_ == "torch.optim.AdamW"
    assert cfg.data.batch_size == 8 and cfg.data.crop_size == 512 and cfg.iterations == 100_000
    assert cfg.trainer.max_steps == 200_000 and "bf16" in cfg.trainer.precision and cfg.model.frozen_dtype == "bf16"
    assert cfg.degradation._target_.endswith("RealESRGANDegradation")
    assert cfg.loss.perceptual.dists.pretrained_backbone is True


def test_paths_follow_environment_variables(compose, monkeypatch):
    monkeypatch.setenv("D3SR_SDXL", "/models/sdxl")
    cfg = compose(["experiment=sdxl_disc", "paths.output_dir=/tmp/x"])
    assert cfg.model.discriminator.backbone.model == "/models/sdxl"


def test_cfg_job_prints_the_resolved_recipe(run_command, tmp_path):
    result = run_command("train", "experiment=sdxl_disc", "--cfg", "job", "--resolve", cwd=tmp_path,
                         env={"D3SR_SD21": "/nowhere/sd21"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "max_steps: 200000" in result.stdout and "lambda_adv: 0.005" in result.stdout
    assert "/nowhere/sd21" in result.stdout


def test_user_config_dir_adds_local_settings_and_experiments(run_command, tmp_path):
    """`--config-dir DIR`: DIR/local/default.yaml is applied to every run; DIR/experiment/*.yaml are new options."""
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text("# @package _global_\npaths:\n  sd21: /my/models/sd21\n")
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - demo\niterations: 7\n")
    result = run_command("train", "--config-dir", str(tmp_path), "experiment=mine", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sd21: /my/models/sd21" in result.stdout and "iterations: 7" in result.stdout


def test_missing_weights_exit_2_with_one_message(run_command, tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    vgg = tmp_path / "vgg16.pth"  # present, so the first missing file is the generator's base model
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}, vgg)
    env = {"D3SR_SD21": str(tmp_path / "no-sd21"), "D3SR_CACHE": str(tmp_path / "cache"), "D3SR_VGG16": str(vgg)}
    result = run_command("train", "experiment=sdxl_disc", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path,
                         env=env)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no-sd21" in errors[0] and "Traceback" not in result.stderr
    assert "D3SR_SD21" in result.stderr


def test_missing_vgg16_for_dists_exit_2_with_one_message(run_command, tmp_path):
    result = run_command("train", "experiment=sdxl_disc", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path,
                         env={"D3SR_VGG16": str(tmp_path / "missing.pth")})  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: ImageNet VGG16 weights for DISTS not found" in result.stderr and "Traceback" not in result.stderr


def test_unknown_key_is_named(run_command, tmp_path):
    result = run_command("train", "experiment=demo", "loss.lambda_advv=1", cwd=tmp_path)
    assert result.returncode != 0 and "lambda_advv" in result.stderr


def test_multirun_sweeps_the_loss_weights(run_command, tmp_path):
    """A 2 × 2 grid of loss weights, in this process (a real `python -m d3sr.train -m` process runs in
    tests/evaluation/test_optuna_sweep.py)."""
    result = run_command(
        "train", "-m", "experiment=demo", "degradation=bicubic", "iterations=1", "checkpoint_every=1",
        "data.crop_size=64", "data.crops_per_image=1", "data.batch_size=2", "data.val_crops_per_image=1",
        "data.val_crop_size=64", "trainer.val_check_interval=1", "callbacks.image_logger=null", "logger=none",
        f"paths.log_dir={tmp_path}", "loss.lambda_adv=0.002,0.005", "loss.lambda_ea_dists=0.5,1.0", cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "demo" / "multiruns").glob("*/*/checkpoints/last.ckpt"))
    assert len(runs) == 4
    overrides = sorted((r.parents[1] / ".hydra" / "overrides.yaml").read_text() for r in runs)
    assert any("loss.lambda_adv=0.002" in o and "loss.lambda_ea_dists=1.0" in o for o in overrides)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    """`trainer=ddp` is the multi-device path; gloo on two CPU processes exercises it without GPUs."""
    result = run_cli(
        "-m", "d3sr.train", "experiment=demo", "degradation=bicubic", "trainer=ddp", "trainer.accelerator=cpu",
        "trainer.devices=2", "trainer.precision=32-true", "iterations=2", "data.crop_size=64", "data.batch_size=1",
        "callbacks.image_logger=null", f"hydra.run.dir={tmp_path}", cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["d3sr"]["iteration"] == 2 and ckpt["global_step"] == 4


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", None], ids=["empty", "truncated", "not_d3sr"])
def test_resuming_from_a_broken_or_foreign_checkpoint_is_one_error_line(run_command, tmp_path, content):
    ckpt = tmp_path / "last.ckpt"
    if content is None:
        torch.save({"state_dict": {}, "epoch": 3}, ckpt)  # a Lightning checkpoint of some other project
    else:
        ckpt.write_bytes(content)
    result = run_command("train", "experiment=demo", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}",
                         cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error:") or "\nerror:" in result.stderr
    assert str(ckpt) in result.stderr and "Traceback" not in result.stderr
