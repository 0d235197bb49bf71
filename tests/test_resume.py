"""Exact resume on the CPU: stopped and resumed, a run ends with the very weights of an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from d3sr.train import train

REPO = Path(__file__).resolve().parents[1]

# Tiny networks, the Real-ESRGAN degradation (per-image randomness), the diffusion discriminator (t and ε drawn from
# the global RNG every step), a cosine LR schedule over `iterations`, 17 photos per epoch.
FAST = ["experiment=demo", "model/generator=tiny", "model/discriminator=tiny", "loss=mse_only", "data.crop_size=64",
        "data.crops_per_image=1", "optimized_metric=null", "logger=none", "callbacks.image_logger=null",
        "++trainer.limit_val_batches=0", "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false", "iterations=8", "checkpoint_every=2"]  # fmt: skip


def trained_state(path: str | Path) -> dict:
    """What must match between two runs: trainable weights, optimizer and scheduler states, RNG and loop state."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return {"state_dict": ckpt["state_dict"], "optimizers": ckpt["optimizer_states"],
            "schedulers": ckpt["lr_schedulers"], "rng": ckpt["rng_states"], "global_step": ckpt["global_step"],
            "loader": ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]}  # fmt: skip


def assert_same(a, b, where: str = "") -> None:
    """Bit-for-bit equality of nested checkpoint entries (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize(
    "overrides",
    [["data.batch_size=3"], ["data.batch_size=4", "data.num_workers=2"]],
    ids=["mid_epoch", "epoch_boundary_with_workers"],
)
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(compose, tmp_path, overrides):
    """4 iterations, then a new process resumes from last.ckpt to 8: equal to 8 in one go, bit for bit.

    Batch size 3: 5 batches per epoch, so the checkpoint is mid-epoch and the resumed run crosses into epoch 1.
    Batch size 4: 4 batches per epoch, so the checkpoint is at the end of epoch 0 (and loader workers prefetch).
    """
    uninterrupted = train(compose([*FAST, *overrides, f"paths.output_dir={tmp_path / 'whole'}"]))
    first = train(compose([*FAST, *overrides, "trainer.max_steps=8", f"paths.output_dir={tmp_path / 'first'}"]))
    assert first["iterations"] == 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(compose([*FAST, *overrides, f"ckpt_path={first['checkpoint']}",
                                 f"paths.output_dir={tmp_path / 'resumed'}"]))  # fmt: skip
    assert not [w for w in caught if "not resumable" in str(w.message)]
    assert resumed["iterations"] == uninterrupted["iterations"] == 8
    assert_same(trained_state(uninterrupted["checkpoint"]), trained_state(resumed["checkpoint"]))
    # A checkpoint that matters: the first 4 iterations moved the weights, and the last 4 too.
    start = torch.load(first["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    end = trained_state(resumed["checkpoint"])["state_dict"]
    assert any(not torch.equal(start[k], end[k]) for k in end if ".lora_" in k)


def wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear: {process.communicate()[1][-3000:]}")
        time.sleep(0.2)


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_exactly(compose, tmp_path):
    """kill -9 after the checkpoint of iteration 4; resuming from whatever last.ckpt holds ends as the whole run."""
    command = [sys.executable, "-m", "d3sr.train", *FAST, "data.batch_size=3", "checkpoint_every=2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    killed = subprocess.Popen([*command, f"hydra.run.dir={tmp_path / 'killed'}"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(tmp_path / "killed" / "checkpoints" / "iter000004.ckpt", killed, timeout=600)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    iteration = torch.load(last, map_location="cpu", weights_only=False)["d3sr"]["iteration"]
    # last.ckpt is written after iter000004.ckpt, atomically: the kill leaves it at 2, 4 or 6, complete either way.
    assert iteration in (2, 4, 6)
    resumed = subprocess.run([*command, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = train(compose([*FAST, "data.batch_size=3", f"paths.output_dir={tmp_path / 'whole'}"]))
    assert_same(trained_state(whole["checkpoint"]), trained_state(tmp_path / "resumed" / "checkpoints" / "last.ckpt"))
