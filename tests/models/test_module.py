"""D3SRModule through the real configs: which parameters each step moves, checkpoints, resume, accumulation."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from d3sr.models import D3SRModule
from d3sr.train import build_trainer, train

FAST = ["experiment=demo", "model/generator=tiny", "model/discriminator=tiny", "degradation=bicubic",
       "data.crop_size=64", "data.crops_per_image=1", "data.batch_size=2",
        "logger=none", "callbacks=none", "++trainer.limit_val_batches=0", "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false"]  # fmt: skip


@pytest.fixture
def fast_cfg(compose, tmp_path):
    def _cfg(*overrides):
        return compose([*FAST, f"paths.output_dir={tmp_path}", *overrides])

    return _cfg


def snapshot(module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}


def fit(cfg, callbacks=()):
    L.seed_everything(cfg.seed)
    module = D3SRModule.from_config(cfg)
    trainer = build_trainer(cfg)
    trainer.callbacks.extend(callbacks)
    before = snapshot(module)
    trainer.fit(module, datamodule=instantiate(cfg.data))
    return module, trainer, changed(before, module)


def generator_lora(module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad and n.startswith("generator.")}


def discriminator_trainable(module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad and n.startswith("discriminator.")}


def test_generator_step_moves_only_the_generator_lora(fast_cfg):
    module, _, moved = fit(fast_cfg("iterations=1", "model.optimizer_d.lr=0", "model.optimizer_d.weight_decay=0"))
    assert moved == generator_lora(module)
    assert all(".lora_" in name for name in moved)


def test_discriminator_step_moves_only_the_discriminator_lora_and_head(fast_cfg):
    module, _, moved = fit(fast_cfg("iterations=1", "model.optimizer_g.lr=0", "model.optimizer_g.weight_decay=0"))
    assert moved == discriminator_trainable(module)
    assert {n.split(".")[1] for n in moved} == {"unet", "head"}
    assert all(".lora_" in n for n in moved if n.startswith("discriminator.unet."))


def test_one_iteration_is_a_g_and_a_d_step_and_logs_every_term(fast_cfg):
    module, trainer, moved = fit(fast_cfg("iterations=2", "model.d_steps_per_g_step=2"))
    assert trainer.global_step == 2 * 3 and module.iteration == 2
    assert moved == generator_lora(module) | discriminator_trainable(module)
    logged = set(trainer.callback_metrics)
    assert {"train/g/loss", "train/g/mse", "train/g/ea_dists", "train/g/adv", "train/d/real", "train/d/fake",
            "train/d/acc_real", "train/d/acc_fake", "train/d/score_real", "train/d/score_fake"} <= logged  # fmt: skip
    assert all(torch.isfinite(trainer.callback_metrics[k]) for k in logged)


class RecordAfterBatch(L.Callback):
    def __init__(self) -> None:
        self.moved_after: list[bool] = []

    def on_train_start(self, trainer, module) -> None:
        self.start = {n: p.detach().clone() for n, p in module.generator.named_parameters() if p.requires_grad}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        now = {n: p.detach() for n, p in module.generator.named_parameters() if p.requires_grad}
        self.moved_after.append(any(not torch.equal(self.start[n], now[n]) for n in now))


def test_gradient_accumulation_steps_after_the_last_micro_batch(fast_cfg):
    record = RecordAfterBatch()
    module, trainer, _ = fit(fast_cfg("iterations=2", "model.accumulate_grad_batches=2"), [record])
    assert record.moved_after == [False, True, True, True]
    assert module.iteration == 2 and trainer.global_step == 4


def test_checkpoint_holds_only_the_trainable_set_and_resume_continues(compose, tmp_path):
    first = compose([*FAST, "callbacks=default", "callbacks.image_logger=null", "iterations=2", "checkpoint_every=1",
                     f"paths.output_dir={tmp_path / 'a'}"])  # fmt: skip
    result = train(first)
    files = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert files == ["iter000001.ckpt", "iter000002.ckpt", "last.ckpt"] and result["iterations"] == 2
    ckpt = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)
    keys = set(ckpt["state_dict"])
    module = D3SRModule.from_config(first)
    assert keys == set(module.checkpoint_keys)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert keys == trainable | {"generator.prompt_embeds", "discriminator.prompt_embeds",
                                "discriminator.pooled_prompt_embeds"}  # fmt: skip
    assert not any(".vae." in k or k.endswith("base_layer.weight") for k in keys)
    assert len(ckpt["optimizer_states"]) == 2 and ckpt["global_step"] == 4
    assert ckpt["d3sr"]["iteration"] == 2 and ckpt["d3sr"]["config"]["model"]["generator"]["timestep"] == 399
    assert (tmp_path / "a" / "checkpoints" / "last.ckpt").stat().st_size < 20e6

    class RecordStart(L.Callback):
        def on_train_start(self, trainer, module) -> None:
            self.step = trainer.global_step
            self.state = {k: v.detach().clone() for k, v in module.state_dict().items() if k in keys}

    record = RecordStart()
    resumed = compose(
        [*FAST, "iterations=3", f"ckpt_path={result['checkpoint']}", f"paths.output_dir={tmp_path / 'b'}"]
    )
    L.seed_everything(0)
    module = D3SRModule.from_config(resumed)
    trainer = build_trainer(resumed)
    trainer.callbacks.append(record)
    trainer.fit(module, datamodule=instantiate(resumed.data), ckpt_path=resumed.ckpt_path)
    assert record.step == 4 and trainer.global_step == 6 and module.iteration == 3
    for key, value in ckpt["state_dict"].items():
        torch.testing.assert_close(record.state[key], value, msg=key)

    # The module comes back from the checkpoint alone (config stored in it), with the trained weights.
    rebuilt = D3SRModule.from_checkpoint(result["checkpoint"])
    assert rebuilt.config == ckpt["d3sr"]["config"]
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_checkpoint_from_another_model_is_refused(compose, tmp_path):
    from d3sr.errors import D3SRError

    cfg = compose([*FAST, "callbacks=default", "callbacks.image_logger=null", "iterations=1",
                   f"paths.output_dir={tmp_path}"])  # fmt: skip
    ckpt = train(cfg)["checkpoint"]
    other = compose([*FAST, "iterations=2", "model.generator.lora_rank=4", f"ckpt_path={ckpt}",
                     f"paths.output_dir={tmp_path / 'b'}"])  # fmt: skip
    with pytest.raises(D3SRError, match="LoRA rank"):
        train(other)


@pytest.mark.parametrize(
    "override, key",
    [("model.d_steps_per_g_step=0", "d_steps_per_g_step"), ("model.grad_clip=-1", "grad_clip"),
     ("model.accumulate_grad_batches=0", "accumulate_grad_batches")],
)  # fmt: skip
def test_bad_values_name_their_key(fast_cfg, override, key):
    with pytest.raises(Exception, match=key):
        D3SRModule.from_config(fast_cfg(override))


def test_bf16_frozen_weights_need_bf16_precision(fast_cfg):
    with pytest.raises(ValueError, match="bf16-mixed"):
        fit(fast_cfg("iterations=1", "model.frozen_dtype=bf16"))


def test_bf16_frozen_weights_keep_lora_in_fp32(fast_cfg):
    module, _, moved = fit(fast_cfg("iterations=1", "model.frozen_dtype=bf16", "trainer.precision=bf16-mixed"))
    assert module.generator.vae.decoder.conv_out.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in module.parameters() if p.requires_grad)
    assert moved == generator_lora(module) | discriminator_trainable(module)


def test_optimized_metric_that_the_run_does_not_compute_fails_at_start_up(fast_cfg, capsys):
    from d3sr.errors import ConfigError

    with pytest.raises(ConfigError, match="optimized_metric=val/dists is not computed.*val/psnr_y"):
        train(fast_cfg("loss=mse_only", "optimized_metric=val/dists", "iterations=1"))
    module = D3SRModule.from_config(fast_cfg())
    assert module.validation_metrics == [
        "val/psnr_y",
        "val/ssim_y",
        "val/color_error",
        "val/sharpness",
        "val/grid",
        "val/dists",
    ]
