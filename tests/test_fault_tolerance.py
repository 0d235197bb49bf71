"""Training that survives faults: NaN/inf losses, pre-emption signals, checkpoint writes that fail."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

import d3sr.train
from d3sr.errors import D3SRError
from d3sr.losses.objective import D3SRLoss
from d3sr.train import train

REPO = Path(__file__).resolve().parents[1]

FAST = ["experiment=demo", "model/generator=tiny", "model/discriminator=tiny", "degradation=bicubic", "loss=mse_only",
        "data.crop_size=64", "data.crops_per_image=1", "data.batch_size=2", "optimized_metric=null", "logger=none",
        "callbacks.image_logger=null", "++trainer.limit_val_batches=0", "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false", "checkpoint_every=1"]  # fmt: skip


@pytest.fixture
def fast_cfg(compose, tmp_path):
    def _cfg(*overrides):
        return compose([*FAST, f"paths.output_dir={tmp_path}", *overrides])

    return _cfg


class Record(L.Callback):
    """The trainable weights of each network and the G optimizer's first moments after every batch."""

    def __init__(self) -> None:
        self.g: list[dict[str, torch.Tensor]] = []
        self.d: list[dict[str, torch.Tensor]] = []
        self.adam_g: list[list[torch.Tensor]] = []
        self.skipped: list[float] = []

    @staticmethod
    def _trainable(network) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in network.named_parameters() if p.requires_grad}

    def _record(self, trainer, module) -> None:
        self.g.append(self._trainable(module.generator))
        self.d.append(self._trainable(module.discriminator))
        state = trainer.optimizers[0].state
        self.adam_g.append([state[p]["exp_avg"].clone() for p in module.generator.parameters() if p in state])

    def on_train_start(self, trainer, module) -> None:
        self._record(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._record(trainer, module)
        self.skipped.append(float(trainer.callback_metrics["train/skipped_steps"]))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def with_callback(monkeypatch, callback: L.Callback) -> None:
    """Make d3sr.train.train's trainer carry `callback` too."""
    build = d3sr.train.build_trainer

    def build_with(cfg):
        trainer = build(cfg)
        trainer.callbacks.append(callback)
        return trainer

    monkeypatch.setattr(d3sr.train, "build_trainer", build_with)


def nan_on_calls(monkeypatch, owner, name: str, calls: set[int] | None) -> None:
    """owner.name returns NaN (in its first output) on the given 1-based calls (None: always)."""
    original, count = getattr(owner, name), [0]

    def patched(*args, **kwargs):
        count[0] += 1
        out = original(*args, **kwargs)
        if calls is not None and count[0] not in calls:
            return out
        if isinstance(out, tuple):
            return (out[0] * float("nan"), *out[1:])
        return out * float("nan")

    monkeypatch.setattr(owner, name, patched)


# ----------------------------------------------------------------------------------------------------------------
# Non-finite losses.


def test_a_nan_generator_loss_skips_the_generator_step_only(fast_cfg, monkeypatch):
    nan_on_calls(monkeypatch, D3SRLoss, "total", {2})  # iteration 2's G loss
    record = Record()
    with_callback(monkeypatch, record)
    result = train(fast_cfg("iterations=3"))
    assert result["iterations"] == 3  # the skipped step still counts: the schedule and checkpoints go on
    assert not same(record.g[0], record.g[1]) and not same(record.g[2], record.g[3])
    assert same(record.g[1], record.g[2])  # no G update at iteration 2 ...
    assert all(torch.equal(a, b) for a, b in zip(record.adam_g[1], record.adam_g[2]))  # ... nor optimizer state
    assert not same(record.d[1], record.d[2])  # the D step on the (finite) fake went on
    assert record.skipped == [0.0, 1.0, 1.0]


def test_a_nan_discriminator_loss_skips_the_discriminator_step_only(fast_cfg, monkeypatch):
    import d3sr.models.d3sr_module as module_file

    nan_on_calls(monkeypatch, module_file, "discriminator_adversarial_loss", {1})
    record = Record()
    with_callback(monkeypatch, record)
    train(fast_cfg("iterations=2"))
    assert same(record.d[0], record.d[1]) and not same(record.d[1], record.d[2])
    assert not same(record.g[0], record.g[1])
    assert record.skipped == [1.0, 1.0]


def test_a_nan_micro_batch_skips_its_whole_accumulation_window(fast_cfg, monkeypatch):
    nan_on_calls(monkeypatch, D3SRLoss, "total", {1})  # the first micro-batch of iteration 1
    record = Record()
    with_callback(monkeypatch, record)
    train(fast_cfg("iterations=2", "model.accumulate_grad_batches=2"))
    assert same(record.g[0], record.g[2])  # iteration 1 (batches 1-2): no G update
    assert not same(record.g[2], record.g[4])  # iteration 2 updates
    assert record.skipped == [0.0, 1.0, 1.0, 1.0]


def test_too_many_nan_iterations_in_a_row_stop_the_run_naming_step_loss_and_checkpoint(fast_cfg, monkeypatch):
    nan_on_calls(monkeypatch, D3SRLoss, "total", None)
    record = Record()
    with_callback(monkeypatch, record)
    with pytest.raises(D3SRError) as stopped:
        train(fast_cfg("iterations=20", "model.max_skipped_steps=3"))
    message = str(stopped.value)
    assert "iteration 3" in message and "3 iterations in a row" in message and "G loss = nan" in message
    assert "model.max_skipped_steps=3" in message and "last.ckpt" in message
    assert all(same(record.g[0], g) for g in record.g)  # the generator never moved
    assert len(record.skipped) == 2  # the third iteration raised before its batch ended


def test_max_skipped_steps_is_validated(fast_cfg):
    from d3sr.models import D3SRModule

    with pytest.raises(Exception, match="model.max_skipped_steps must be >= 1"):  # wrapped by Hydra
        D3SRModule.from_config(fast_cfg("model.max_skipped_steps=0"))


# ----------------------------------------------------------------------------------------------------------------
# Pre-emption.


class SendSignal(L.Callback):
    def __init__(self, signum: int, at_batch: int) -> None:
        self.signum, self.at_batch = signum, at_batch

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.at_batch:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_signal_saves_last_ckpt_at_the_end_of_the_iteration_and_stops(fast_cfg, monkeypatch, signum, caplog):
    handler_before = signal.getsignal(signum)
    with_callback(monkeypatch, SendSignal(signum, at_batch=2))  # during iteration 3
    with caplog.at_level("INFO"):
        result = train(fast_cfg("iterations=20", "checkpoint_every=100"))
    assert result["preempted"] and result["iterations"] == 3
    ckpt = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)
    assert Path(result["checkpoint"]).name == "last.ckpt" and ckpt["d3sr"]["iteration"] == 3
    assert f"Pre-empted ({signal.Signals(signum).name}) at iteration 3: checkpoint saved to" in caplog.text
    assert signal.getsignal(signum) == handler_before  # the handlers are given back


def test_sigterm_ends_the_cli_cleanly_with_a_checkpoint_that_resumes(compose, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "d3sr.train", *FAST, "iterations=200", "checkpoint_every=2"]
    process = subprocess.Popen([*command, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = run_dir / "checkpoints" / "iter000002.ckpt"
    deadline = time.monotonic() + 600
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"checkpoint saved to {last}" in stdout + stderr and "Traceback" not in stderr
    iteration = torch.load(last, map_location="cpu", weights_only=False)["d3sr"]["iteration"]
    assert 3 <= iteration < 200
    resumed = train(compose([*FAST, "iterations=200", f"trainer.max_steps={2 * (iteration + 1)}", f"ckpt_path={last}",
                             f"paths.output_dir={tmp_path / 'resumed'}"]))  # fmt: skip
    assert resumed["iterations"] == iteration + 1 and not resumed["preempted"]


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint writes that fail.


def fail_on_write(monkeypatch, failing_call: int) -> None:
    """The `failing_call`-th checkpoint write stops half-way with ENOSPC (a full disk)."""
    import d3sr.callbacks.atomic_checkpoints as atomic

    original, count = atomic._write, [0]

    def write(checkpoint, path):
        count[0] += 1
        if count[0] == failing_call:
            # What torch.save really raises on a full disk (seen on a real tmpfs): its zip writer's RuntimeError,
            # chained from the OSError of the write.
            Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            except OSError as full:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from full
        original(checkpoint, path)

    monkeypatch.setattr(atomic, "_write", write)


def test_a_failing_checkpoint_write_keeps_the_previous_last_ckpt_and_says_where_and_why(fast_cfg, monkeypatch,
                                                                                      tmp_path):  # fmt: skip
    fail_on_write(monkeypatch, failing_call=4)  # iteration 1: iter000001, last; iteration 2: iter000002, last ✗
    with pytest.raises(D3SRError) as failed:
        train(fast_cfg("iterations=3"))
    folder = tmp_path / "checkpoints"
    message = str(failed.value)
    assert f"cannot write the checkpoint {folder / 'last.ckpt'}: No space left on device (ENOSPC)" in message
    assert "the previous last.ckpt is unchanged" in message
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)["d3sr"]["iteration"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["iter000001.ckpt", "iter000002.ckpt", "last.ckpt"]


def mount_tmpfs(folder: Path, megabytes: int) -> str | None:
    """Mount a real tmpfs of `megabytes` at `folder`; returns None, or why it cannot (not root, no mount)."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    return None if mounted.returncode == 0 else f"mount -t tmpfs failed: {mounted.stderr.strip()}"


def test_a_really_full_disk_is_one_error_line_exit_2_and_the_previous_checkpoint_kept(tmp_path):
    # A real 15 MB tmpfs as the run folder: iteration 1 saves iter000001.ckpt and last.ckpt (6 MB each), iteration
    # 2's iter000002.ckpt fills the disk. torch's zip writer then raises RuntimeError("... unexpected pos ...")
    # chained from OSError(ENOSPC): the error line must still name the full disk.
    run_dir = tmp_path / "small_disk"
    why = mount_tmpfs(run_dir, 15)
    if why:
        pytest.skip(why)
    try:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        result = subprocess.run([sys.executable, "-m", "d3sr.train", *FAST, "iterations=3",
                                 f"hydra.run.dir={run_dir}"], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=600)  # fmt: skip
        assert result.returncode == 2, result.stderr[-3000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "No space left on device (ENOSPC)" in errors[0] and "Free space in that folder" in errors[0]
        last = run_dir / "checkpoints" / "last.ckpt"
        assert torch.load(last, map_location="cpu", weights_only=False)["d3sr"]["iteration"] == 1
        assert not [p.name for p in last.parent.iterdir() if ".tmp-" in p.name]  # no half-written file left
    finally:
        subprocess.run(["umount", str(run_dir)], check=False)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint folders that cannot be written.


class Started(L.Callback):
    def __init__(self) -> None:
        self.started = False

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = True


def test_a_checkpoint_folder_under_a_file_stops_the_run_before_training(fast_cfg, monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    started = Started()
    with_callback(monkeypatch, started)
    with pytest.raises(D3SRError) as failed:
        train(fast_cfg(f"callbacks.model_checkpoint.dirpath={blocker / 'checkpoints'}"))
    message = str(failed.value)
    assert message.startswith(f"cannot write checkpoints to {blocker / 'checkpoints'}: ")
    assert "(checked before training)" in message
    assert not started.started and blocker.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="runs as root: folder permissions do not apply (the EACCES test below "
                    "injects the error instead)")  # fmt: skip
def test_a_read_only_checkpoint_folder_stops_the_run_before_training(fast_cfg, monkeypatch, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"an earlier run's checkpoint")
    folder.chmod(0o555)
    try:
        with pytest.raises(D3SRError, match=r"Permission denied \(EACCES\).*Make that folder writable"):
            train(fast_cfg())
        assert (folder / "last.ckpt").read_bytes() == b"an earlier run's checkpoint"
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(("code", "remedy"), [(errno.EACCES, "Make that folder writable"),
                                              (errno.EROFS, "Make that folder writable"),
                                              (errno.ENOSPC, "Free space in that folder")])  # fmt: skip
def test_a_folder_that_turns_read_only_mid_run_keeps_the_previous_checkpoint(monkeypatch, tmp_path, code, remedy):
    import d3sr.callbacks.atomic_checkpoints as atomic

    path = tmp_path / "last.ckpt"
    io = atomic.AtomicCheckpointIO()
    io.save_checkpoint({"iteration": 1}, path)

    def refuse(checkpoint, temporary):  # the folder refuses new files (chmod, a read-only remount, a full disk)
        raise OSError(code, os.strerror(code), str(temporary))

    monkeypatch.setattr(atomic, "_write", refuse)
    with pytest.raises(D3SRError) as failed:
        io.save_checkpoint({"iteration": 2}, path)
    message = str(failed.value)
    assert f"cannot write the checkpoint {path}: {os.strerror(code)} ({errno.errorcode[code]})" in message
    assert "the previous last.ckpt is unchanged" in message and remedy in message
    assert torch.load(path, weights_only=False) == {"iteration": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
