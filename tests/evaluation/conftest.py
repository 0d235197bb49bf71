"""Fixtures of the evaluation tests: private torch hub folders (empty, or with random LPIPS/DISTS weight files) and
folders of SR/HR image pairs cut from the photos shipped with scikit-image."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import write_pairs, write_random_weights


@pytest.fixture(scope="session")
def random_hub(tmp_path_factory) -> Path:
    """A TORCH_HOME holding random LPIPS and DISTS weight files (built once per session)."""
    home = tmp_path_factory.mktemp("eval_torch_home")
    write_random_weights(home)
    return home


@pytest.fixture
def with_random_hub(random_hub, monkeypatch) -> Path:
    """TORCH_HOME pointed at the random LPIPS/DISTS weights for one test."""
    monkeypatch.setenv("TORCH_HOME", str(random_hub))
    return random_hub


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """TORCH_HOME pointed at an empty folder for one test: no metric weights anywhere."""
    home = tmp_path / "empty_torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def pairs(tmp_path) -> tuple[Path, Path]:
    """(sr folder, hr folder) of three noisy/clean photo pairs."""
    return write_pairs(tmp_path / "set")
