"""Several devices without naming a strategy: `trainer.devices=2` alone trains under DDP, and the ranks agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_devices_2_without_trainer_ddp_keeps_ranks_identical(tmp_path):
    # Two gloo processes on the CPU, the default trainer (Lightning picks plain DDP), two iterations, no validation.
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
               "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    weights = tmp_path / "weights"
    result = subprocess.run(
        [sys.executable, "-m", "d3sr.train", "experiment=demo", "degradation=bicubic", "trainer.accelerator=cpu",
         "trainer.devices=2", "iterations=2", "data.crop_size=64", "data.batch_size=1", "callbacks.image_logger=null",
         "++trainer.limit_val_batches=0", "logger=none",
         "+callbacks.rank_weights._target_=ddp_helpers.RankWeights", f"+callbacks.rank_weights.folder={weights}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(weights / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["strategy"] == "DDPStrategy"
    names = sorted(ranks[0]["end"])
    assert any(".lora_B." in n and n.startswith("generator.") for n in names)
    assert any(n.startswith("discriminator.") for n in names)
    # Every trainable tensor of G and D moved, and is bit-identical on both ranks (DDP averaged the gradients).
    moved = [n for n in names if not torch.equal(ranks[0]["start"][n], ranks[0]["end"][n])]
    assert len(moved) > 0.5 * len(names), f"only {len(moved)} of {len(names)} trainable tensors changed"
    differ = [n for n in names if not torch.equal(ranks[0]["end"][n], ranks[1]["end"][n])]
    assert not differ, f"{len(differ)} tensors differ across ranks, e.g. {differ[:3]}"
