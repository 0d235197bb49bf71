"""The paper's Table 4b discriminators (none, pixel CNN, random-init latent UNet, SD-style), EMA, LR schedules."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from test_module import FAST, discriminator_trainable, fit, generator_lora

from d3sr.errors import ConfigError, D3SRError
from d3sr.models import D3SRModule, PixelDiscriminator
from d3sr.train import build_trainer, train

TINY_SD = {"_target_": "d3sr.models.loading.tiny", "kind": "sd", "with_vae": False, "seed": 2}


@pytest.fixture
def cfg_for(compose, tmp_path):
    def _cfg(*overrides):
        return compose([*FAST, f"paths.output_dir={tmp_path}", *overrides])

    return _cfg


def test_no_discriminator_trains_the_generator_alone(cfg_for):
    module, trainer, moved = fit(cfg_for("model/discriminator=none", "iterations=2"))
    assert module.discriminator is None and module.d_steps_per_g_step == 0
    assert trainer.global_step == 2 and module.iteration == 2  # one optimizer step per iteration
    assert len(trainer.optimizers) == 1 and moved == generator_lora(module)
    assert float(trainer.callback_metrics["train/g/adv"]) == 0.0
    assert not any(k.startswith("train/d/") for k in trainer.callback_metrics)


def test_no_discriminator_needs_no_d_steps(cfg_for):
    with pytest.raises(Exception, match="d_steps_per_g_step must be 0"):  # noqa: B017 - Hydra wraps it
        D3SRModule.from_config(cfg_for("model/discriminator=none", "model.d_steps_per_g_step=1"))


@pytest.mark.parametrize("option", ["pixel", "demo_pixel"])
def test_pixel_discriminator_sees_images_and_trains_every_weight(cfg_for, option):
    cfg = cfg_for(f"model/discriminator={option}", "iterations=1")
    module, trainer, moved = fit(cfg)
    assert isinstance(module.discriminator, PixelDiscriminator)
    assert trainer.global_step == 2 and moved == generator_lora(module) | discriminator_trainable(module)
    # Randomly initialised, so every weight trains (spectral norm keeps its weights as `parametrizations.*.original`).
    assert discriminator_trainable(module) == {
        n for n, _ in module.discriminator.named_parameters(prefix="discriminator")
    }
    assert all(torch.isfinite(trainer.callback_metrics[k]) for k in ("train/d/real", "train/d/fake", "train/g/adv"))


def test_pixel_discriminator_is_the_70px_patchgan():
    network = PixelDiscriminator()
    assert sum(p.numel() for p in network.parameters()) == 2_764_737  # pix2pix n_layers=3 (64-128-256-512), + SN
    assert network(torch.zeros(1, 3, 512, 512)).shape == (1, 1, 62, 62)
    # Receptive field: a change at one pixel reaches a 70×70 window of the input around each logit, no further.
    image = torch.zeros(1, 3, 140, 140, requires_grad=True)
    network(image)[0, 0, 0, 0].backward()
    rows, cols = image.grad.abs().sum((0, 1)).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 <= 70 and cols.max() - cols.min() + 1 <= 70


@pytest.mark.parametrize("option", ["scratch", "demo_scratch"])
def test_random_init_latent_discriminator_trains_fully_without_lora(cfg_for, option):
    # demo_scratch takes the demo backbone's latents (12 channels): with the demo generator.
    generator = ["model/generator=demo"] if option == "demo_scratch" else []
    cfg = cfg_for(*generator, f"model/discriminator={option}", "iterations=1")
    if option == "scratch":  # the full-size SD 2.1 shape, swapped for the tiny SD preset as test_configs does
        with open_dict(cfg):
            cfg.model.discriminator.backbone = OmegaConf.create(TINY_SD)
    module, _, moved = fit(cfg)
    names = discriminator_trainable(module)
    assert names == {n for n, _ in module.discriminator.named_parameters(prefix="discriminator")}
    assert not any(".lora_" in n for n in names)
    assert {n for n in moved if n.startswith("discriminator.")} == names  # the D loss reaches every weight


def test_demo_sd_discriminator_is_the_pretrained_sd_style_unet_with_lora(cfg_for):
    # The demo discriminators take the demo backbone's latents (12 channels): with the demo generator.
    module, _, moved = fit(cfg_for("model/generator=demo", "model/discriminator=demo_sd", "iterations=1"))
    assert not module.discriminator.uses_text_time and module.discriminator.downsampling == 2
    assert moved == generator_lora(module) | discriminator_trainable(module)
    assert all(".lora_" in n for n in moved if n.startswith("discriminator.unet."))


def test_finetune_mode_is_checked():
    from d3sr.models import DiffusionDiscriminator
    from d3sr.models.loading import tiny

    with pytest.raises(ConfigError, match="finetune"):
        DiffusionDiscriminator(tiny("sd", with_vae=False), finetune="partial")


def test_table4b_rows_exist_at_both_scales(compose):
    from pathlib import Path

    options = {p.stem for p in (Path(__file__).parents[2] / "src/d3sr/conf/model/discriminator").glob("*.yaml")}
    for experiment in ("demo", "sdxl_disc"):
        rows = compose([f"experiment={experiment}"]).ablation_discriminators.split(",")
        assert set(rows) <= options and rows[0] == "none", experiment
    assert len(compose(["experiment=sdxl_disc"]).ablation_discriminators.split(",")) == 6


# ----------------------------------------------------------------------------------------------------------------
# EMA of the generator's trainable weights.


class RecordWeights(L.Callback):
    """The generator's trainable weights at the start and after every iteration."""

    def __init__(self) -> None:
        self.history: list[dict[str, torch.Tensor]] = []

    def _record(self, module) -> None:
        self.history.append({f"generator.{n}": p.detach().clone() for n, p in module.generator.named_parameters()
                             if p.requires_grad})  # fmt: skip

    def on_train_start(self, trainer, module) -> None:
        self._record(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._record(module)


def test_ema_is_the_closed_form_average_and_is_exported(cfg_for, tmp_path):
    from d3sr.models.saved_generator import export_bundle, generator_from_bundle, generator_from_checkpoint

    decay = 0.5
    cfg = cfg_for("callbacks=default", "callbacks.image_logger=null", f"callbacks.ema.decay={decay}", "iterations=3")
    record = RecordWeights()
    L.seed_everything(cfg.seed)
    module, trainer = D3SRModule.from_config(cfg), build_trainer(cfg)
    trainer.callbacks.append(record)
    trainer.fit(module, datamodule=instantiate(cfg.data))
    # shadow_0 = w_0; shadow_k = decay·shadow_{k−1} + (1 − decay)·w_k after each of the 3 updates.
    expected = dict(record.history[0])
    for weights in record.history[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in expected}
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["ema"]["updates"] == 3 and set(checkpoint["ema"]["state_dict"]) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(checkpoint["ema"]["state_dict"][key], value, msg=key)
    assert any(not torch.equal(expected[k], record.history[-1][k]) for k in expected)  # the average is not the last

    # export use_ema=true carries the averaged weights; the default carries the last ones.
    bundle = export_bundle(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "bundle", use_ema=True)
    exported, info = generator_from_bundle(bundle)
    assert info["source"] and info["generator"]
    last, _ = generator_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    key = next(k for k in expected if ".lora_B" in k)
    name = key.removeprefix("generator.")
    torch.testing.assert_close(dict(exported.named_parameters())[name], expected[key])
    assert not torch.equal(dict(last.named_parameters())[name], expected[key])


def test_export_use_ema_without_ema_is_one_clear_error(cfg_for, tmp_path):
    from d3sr.models.saved_generator import export_bundle

    result = train(cfg_for("callbacks=default", "callbacks.image_logger=null", "iterations=1"))
    with pytest.raises(D3SRError, match="holds no EMA weights"):
        export_bundle(result["checkpoint"], tmp_path / "bundle", use_ema=True)


def test_ema_decay_is_checked():
    from d3sr.callbacks import EMA

    with pytest.raises(ConfigError, match="callbacks.ema.decay"):
        EMA(decay=1.0)


# ----------------------------------------------------------------------------------------------------------------
# Learning-rate schedule.


def test_cosine_schedule_steps_once_per_iteration(cfg_for):
    lr, iterations = 1e-3, 4
    scheduler = "{_target_:torch.optim.lr_scheduler.CosineAnnealingLR,_partial_:true,T_max:8}"
    module, trainer, _ = fit(cfg_for(f"model.lr_scheduler={scheduler}", f"iterations={iterations}",
                                     f"model.optimizer_g.lr={lr}", f"model.optimizer_d.lr={lr}"))  # fmt: skip
    expected = lr * (1 + math.cos(math.pi * iterations / 8)) / 2
    for optimizer in trainer.optimizers:
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert module.iteration == iterations


# ----------------------------------------------------------------------------------------------------------------
# Table 4a: every loss row takes a training step.


@pytest.mark.parametrize("option", ["mse_only", "lpips", "ea_lpips", "dists", "paper"])
def test_every_table4a_loss_takes_a_training_step(cfg_for, option):
    module, trainer, moved = fit(cfg_for(f"loss={option}", "iterations=1"))
    assert moved == generator_lora(module) | discriminator_trainable(module)
    perceptual = float(trainer.callback_metrics["train/g/ea_dists"])
    assert (perceptual == 0.0) == (option == "mse_only"), perceptual


# ----------------------------------------------------------------------------------------------------------------
# The keys for choices the paper leaves open, and the degradation-parity options, each take a training step.


@pytest.mark.parametrize(
    "overrides",
    [["model.generator.posterior=sample"], ["loss.mse_range=unit"], ["loss.perceptual_fp32=false"],
     ["degradation=realesrgan", "degradation.jpeg_table=libjpeg"],
     ["degradation=realesrgan", "degradation.resize_by=scale_factor"],
     ["degradation=realesrgan", "degradation.usm.enabled=true"]],
    ids=lambda o: o[-1],
)  # fmt: skip
def test_every_fidelity_and_parity_option_takes_a_training_step(cfg_for, overrides):
    module, trainer, moved = fit(cfg_for(*overrides, "iterations=1"))
    assert moved == generator_lora(module) | discriminator_trainable(module)
    assert all(torch.isfinite(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/"))


def test_usm_sharpened_target_for_the_losses_plain_gt_for_the_discriminator(cfg_for, monkeypatch):
    """Real-ESRGAN's gan_gt_usm=False: MSE/perceptual aim at usm_sharp(gt); the D's real latent is E(gt)."""
    from d3sr.data.degradation import usm_sharp
    from d3sr.images import from_model_range

    cfg = cfg_for("degradation=realesrgan", "degradation.usm.enabled=true", "iterations=1")
    L.seed_everything(cfg.seed)
    module, trainer = D3SRModule.from_config(cfg), build_trainer(cfg)
    seen: dict[str, list[torch.Tensor]] = {"target": [], "encoded": []}
    reconstruction, encode = module.loss.reconstruction, module.generator.encode
    monkeypatch.setattr(
        module.loss, "reconstruction", lambda sr, gt: seen["target"].append(gt) or reconstruction(sr, gt)
    )
    monkeypatch.setattr(module.generator, "encode", lambda x: seen["encoded"].append(x) or encode(x))
    trainer.fit(module, datamodule=instantiate(cfg.data))
    target, real = seen["target"][0], seen["encoded"][-1]  # encode calls: z_L inside G, then E(x_H) for D
    usm = cfg.degradation.usm
    sharpened = usm_sharp(from_model_range(real), usm.weight, usm.radius, usm.threshold)
    torch.testing.assert_close(from_model_range(target), sharpened, atol=1e-5, rtol=0)
    assert (target - real).abs().max() > 1e-3  # the two targets differ
