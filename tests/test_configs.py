"""Every option of every config group composes and builds its object (with tiny networks where weights are needed).

Options that load published weights (SD 2.1, SDXL, SD 1.5) are built with their backbone node swapped for the tiny
preset of the same kind, so every other key is checked against the real constructor; the backbone node itself is
checked to fail with the one-line missing-weights error when nothing is cached.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from d3sr.errors import D3SRError, user_error
from d3sr.inference import InferenceOptions

CONF = Path(__file__).resolve().parents[1] / "src" / "d3sr" / "conf"
BASE = ["experiment=demo", "paths.output_dir=/tmp/d3sr-configs"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def tiny_backbone(node) -> dict:
    """The tiny preset of the same kind as a backbone node (random weights, no files)."""
    kind = node.get("kind", "sdxl" if node.get("name") == "sdxl" else "sd")
    return {"_target_": "d3sr.models.loading.tiny", "kind": kind, "with_vae": node.get("with_vae", False)}


def test_config_groups_are_all_covered():
    groups = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*") if p.is_dir()} - {"local"}
    covered = {"model", "model/generator", "model/discriminator", "model/backbone", "loss", "data", "degradation",
               "trainer", "logger", "callbacks", "inference", "hydra", "paths", "experiment",
               "hparams_search"}  # fmt: skip
    assert groups <= covered, f"config groups without a test: {sorted(groups - covered)}"


@pytest.mark.parametrize("part", ["generator", "discriminator"])
def test_every_network_option_builds(compose, part):
    for option in options(f"model/{part}"):
        cfg = compose([*BASE, f"model/{part}={option}"])
        if cfg.model[part] is None:  # model/discriminator=none: no network, and no D step
            assert (part, option, cfg.model.d_steps_per_g_step) == ("discriminator", "none", 0)
            continue
        node = OmegaConf.to_container(cfg.model[part], resolve=True)
        # Full-size backbones (published weights, or full-size random ones) are swapped for the tiny preset.
        if "backbone" in node and node["backbone"]["_target_"].endswith((".pretrained", ".random_weights")):
            node["backbone"] = tiny_backbone(cfg.model[part].backbone)
        network = instantiate(node)
        assert any(p.requires_grad for p in network.parameters()), option


def test_pretrained_backbone_without_weights_is_one_clear_error(compose, tmp_path):
    cfg = compose([*BASE, "model/generator=sd21", f"paths.sd21={tmp_path / 'no-sd21'}", f"paths.cache_dir={tmp_path}"])
    with pytest.raises(Exception) as raised:  # noqa: B017 - Hydra wraps it; user_error finds it as the CLIs do
        instantiate(cfg.model.generator.backbone)
    cause = user_error(raised.value)
    assert isinstance(cause, D3SRError) and "Could not load the Stable Diffusion weights" in str(cause)


def test_every_loss_option_builds(compose):
    for option in options("loss"):
        cfg = compose([*BASE, f"loss={option}"])
        loss = instantiate(cfg.loss)
        assert loss.lambda_mse > 0, option


def test_every_degradation_and_data_option_builds(compose, tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (96, 80), (10, 20, 30)).save(folder / "a.png")
    for option in options("degradation"):
        cfg = compose([*BASE, f"degradation={option}"])
        assert hasattr(instantiate(cfg.degradation), "sample"), option
    for option in options("data"):
        overrides = [f"data.train.roots=[{folder}]"] if option != "embedded" else []  # one folder, as users do
        cfg = compose([*BASE, f"data={option}", *overrides, "data.batch_size=1", "data.crop_size=64"])
        datamodule = instantiate(cfg.data)
        assert len(datamodule.train_set) >= 1, option


def test_every_trainer_logger_and_callback_option_builds(compose):
    for option in options("trainer"):
        cfg = compose([*BASE, f"trainer={option}"])
        if cfg.trainer.accelerator == "gpu":
            assert cfg.trainer.precision == "bf16-mixed"  # needs a GPU to build; composing is what can be checked here
            continue
        instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    for group in ("logger", "callbacks"):
        for option in options(group):
            cfg = compose([*BASE, f"{group}={option}"])
            for name, node in (cfg.get(group) or {}).items():
                if node is not None and "_target_" in node:
                    assert instantiate(node) is not None, f"{group}={option}: {name}"


def test_every_sweep_composes(compose):
    for option in options("hparams_search"):
        cfg = compose([*BASE, f"hparams_search={option}"], return_hydra_config=True)
        assert cfg.hydra.sweeper.params, option


def test_inference_defaults_have_one_owner(compose):
    """conf/inference/default.yaml owns the defaults: every option has one there, InferenceOptions and Tiling read
    them, and the node Hydra composes gives the same options as the dataclass's defaults."""
    from d3sr.inference.defaults import DEFAULTS
    from d3sr.inference.tiling import Tiling

    assert set(DEFAULTS) == {f.name for f in dataclasses.fields(InferenceOptions)}
    assert InferenceOptions.from_config(compose(config_name="infer").inference) == InferenceOptions()
    shared = {f.name for f in dataclasses.fields(Tiling)} & set(DEFAULTS) - {"channels_last"}  # Tiling's is resolved
    assert {key: getattr(Tiling(), key) for key in shared} == {key: DEFAULTS[key] for key in shared}
    assert Tiling().tile_size == InferenceOptions().tile_size == 512


def test_one_lora_target_list(compose):
    from d3sr.models.lora import LORA_TARGETS

    cfg = compose(BASE)
    assert tuple(cfg.lora_targets) == LORA_TARGETS  # the Python default and the configs' one list agree
    assert cfg.model.generator.lora_targets == cfg.model.discriminator.lora_targets == cfg.lora_targets
