"""experiment=sdxl_disc_lowmem is the paper's recipe with less memory: same networks and global batch, other levers."""

from __future__ import annotations

from omegaconf import OmegaConf

LEVERS = {
    "task_name",
    "model.accumulate_grad_batches",
    "model.generator.gradient_checkpointing",
    "model.discriminator.gradient_checkpointing",
    "data.batch_size",
}


def _flat(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flat(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def test_lowmem_differs_from_the_recipe_only_in_memory_levers(compose, tmp_path):
    recipe, lowmem = (
        dict(_flat(OmegaConf.to_container(compose([f"experiment={name}", f"paths.output_dir={tmp_path}"]))))
        for name in ("sdxl_disc", "sdxl_disc_lowmem")
    )
    changed = {key for key in recipe.keys() | lowmem.keys() if recipe.get(key) != lowmem.get(key)}
    assert changed == LEVERS
    # The paper's global batch of 8 per optimizer step, bf16 frozen weights and checkpointing in both UNets.
    assert lowmem["data.batch_size"] * lowmem["model.accumulate_grad_batches"] == recipe["data.batch_size"] == 8
    assert lowmem["model.frozen_dtype"] == "bf16" and lowmem["trainer.precision"] == "bf16-mixed"
    assert lowmem["model.generator.gradient_checkpointing"] and lowmem["model.discriminator.gradient_checkpointing"]
