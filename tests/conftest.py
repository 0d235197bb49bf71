"""Shared test setup: offline hub, a private torch hub cache, Hydra composition of the real configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "d3sr" / "conf"

# Nothing may touch the network, and nothing may read or write the user's real caches.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
