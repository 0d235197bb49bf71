"""Shared test setup: offline hub, a private torch hub cache, Hydra composition of the real configs."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "d3sr" / "conf"

# Under pytest-xdist (`make test` runs two workers on two cores) each worker, and each command a test starts, uses
# one thread: two workers of two threads each would fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

# Nothing may touch the network, and nothing may read or write the user's real caches.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The longest tests of the fast suite (`make test`'s --durations), started first: xdist hands the first tests out to
# its two workers in turn, so the long ones run side by side instead of one of them being left for the end.
LONGEST_FIRST = (
    "tests/test_learning.py::",
    "tests/test_train.py::test_multirun_sweeps_the_loss_weights",
    "tests/test_ddp.py::",
    "tests/test_notebook.py::test_inspect_checkpoint_notebook_runs",
    "tests/evaluation/test_optuna_sweep.py::test_two_trials",
    "tests/test_wheel.py::",
    "tests/evaluation/test_sweeps.py::test_table4b_multirun",
    "tests/test_fault_tolerance.py::test_sigterm_ends_the_cli",
    "tests/evaluation/test_held_out.py::test_held_out_tables",
)


def pytest_collection_modifyitems(config, items):
    """Move the LONGEST_FIRST tests to the front, in that order; the rest keep theirs."""

    def rank(item) -> int:
        ranks = (i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix))
        return next(ranks, len(LONGEST_FIRST))

    items.sort(key=rank)


@pytest.fixture(autouse=True, scope="session")
def _private_torch_home(tmp_path_factory):
    """An empty TORCH_HOME for the whole session (tests that need hub files write them there)."""
    home = tmp_path_factory.mktemp("torch_home")
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    """A training checkpoint of the demo generator (the shipped tiny pretrained backbone, LoRA at its init).

    What D3SRModule saves: the LoRA tensors and the fixed embedding, not the frozen base. Built once per session.
    """
    import torch
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from d3sr.models.saved_generator import checkpoint_record

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=["experiment=demo"])
    GlobalHydra.instance().clear()
    generator = instantiate(cfg.model.generator)
    state = {f"generator.{k}": v for k, v in generator.state_dict().items() if ".lora_" in k or k == "prompt_embeds"}
    path = tmp_path_factory.mktemp("demo_checkpoint") / "demo.ckpt"
    torch.save({"d3sr": checkpoint_record(generator, None, 0), "state_dict": state}, path)
    return path


@pytest.fixture
def compose():
    """compose(overrides, config_name="train") -> DictConfig from the project's conf/ with Hydra's own composer."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import d3sr  # noqa: F401  (registers the config resolvers, e.g. optimizer_steps)

    def _compose(overrides=(), config_name="train", return_hydra_config=False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides),
                                 return_hydra_config=return_hydra_config)  # fmt: skip

    yield _compose
    GlobalHydra.instance().clear()


@dataclass
class Ran:
    """What a command did: its exit status and its captured output."""

    returncode: int
    stdout: str
    stderr: str


def _logging_state() -> dict:
    import logging

    loggers = [logging.getLogger(), *[logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]]
    return {lg.name: (list(lg.handlers), lg.level, lg.disabled, lg.propagate) for lg in loggers}


def _restore_logging(state: dict) -> None:
    import logging

    for name in [None, *list(logging.root.manager.loggerDict)]:
        logger = logging.getLogger(name)
        handlers, level, disabled, propagate = state.get(logger.name, ([], logging.NOTSET, False, True))
        for handler in set(logger.handlers) - set(handlers):
            handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.disabled, logger.propagate = disabled, propagate


@pytest.fixture
def run_command(monkeypatch, capfd):
    """run_command(module, *args, env=None, cwd=None) -> Ran: `python -m d3sr.<module> args` inside this process.

    The same `main` as the console command (argv, environment and working folder set for the call, output captured at
    the file descriptors), without paying the interpreter's start and the imports again: for tests of what a command
    says and how it exits. tests/test_command_line.py runs real subprocesses (offline) for the same paths.
    """
    from hydra.core.global_hydra import GlobalHydra

    def run(module: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> Ran:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", [f"d3sr.{module}", *args])
        capfd.readouterr()
        GlobalHydra.instance().clear()
        logging_state = _logging_state()
        code = 0
        try:
            result = importlib.import_module(f"d3sr.{module}").main()
            if isinstance(result, int) and not isinstance(result, bool):
                code = result  # commands whose main returns the exit status (python -m runs sys.exit(main()))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        finally:
            GlobalHydra.instance().clear()
            _restore_logging(logging_state)  # Hydra's job logging holds this test's captured streams
        out, err = capfd.readouterr()
        return Ran(code, out, err)

    return run
