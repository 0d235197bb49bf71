"""The weight-file table against pyiqa's own sources, the presence report, and the no-download guards."""

from __future__ import annotations

import os
import re
import types
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from d3sr.errors import ConfigError, D3SRError
from d3sr.evaluation.suite import DEFAULT_METRICS, build_metric
from d3sr.evaluation.weights import WEIGHT_FILES, check_weights, maniqa_backbone_offline, no_downloads, swapped

pytest.importorskip("pyiqa")


def test_table_matches_the_urls_in_pyiqa_sources():
    from pyiqa.archs import clip_model, dists_arch, inception, lpips_arch, musiq_arch, niqe_arch
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    def urls(metric):
        return [f.url for f in WEIGHT_FILES[metric]]

    assert urls("lpips") == [AlexNet_Weights.IMAGENET1K_V1.url, lpips_arch.default_model_urls["0.1_alex"]]
    assert urls("dists") == [VGG16_Weights.IMAGENET1K_V1.url, dists_arch.default_model_urls["url"]]
    assert urls("niqe") == [niqe_arch.default_model_urls["url"]]
    assert urls("musiq") == [musiq_arch.default_model_urls["koniq10k"]]
    assert urls("clipiqa") == [clip_model._MODELS["RN50"]]
    assert urls("fid") == [inception.FID_WEIGHTS_URL]
    # maniqa_arch imports timm at module level: read its URL table from the source instead.
    source = Path(find_spec("pyiqa").submodule_search_locations[0], "archs", "maniqa_arch.py").read_text()
    (pipal,) = re.findall(r"'pipal': get_url_from_name\('([^']+)'\)", source)
    assert [f.name for f in WEIGHT_FILES["maniqa"]] == [pipal]
    # Each file name is the last part of its URL, the name under which pyiqa / torch.hub store it.
    for files in WEIGHT_FILES.values():
        for f in files:
            assert f.url.rsplit("/", 1)[-1] == f.name


def test_paths_follow_torch_home(empty_hub):
    hub = Path(torch.hub.get_dir())
    assert hub == empty_hub / "hub"
    assert WEIGHT_FILES["lpips"][0].path == hub / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert WEIGHT_FILES["lpips"][1].path == hub / "pyiqa" / "LPIPS_v0.1_alex-df73285e.pth"
    assert WEIGHT_FILES["clipiqa"][0].path == hub / "clip" / "RN50.pt"


def test_report_lists_present_and_missing(empty_hub):
    report = check_weights(["psnr", "dists"])
    assert not report.ok and {e.file.name for e in report.missing} == {
        "vgg16-397923af.pth",
        "DISTS_weights-f5e65c96.pth",
    }
    text = report.format()
    assert "[missing] dists" in text and "[ok] psnr" in text and "vgg16-397923af.pth" in text
    vgg = WEIGHT_FILES["dists"][0].path
    vgg.parent.mkdir(parents=True)
    vgg.write_bytes(b"")
    assert [e.file.name for e in check_weights(["dists"]).missing] == ["DISTS_weights-f5e65c96.pth"]
    with pytest.raises(ConfigError, match="unknown metric"):
        check_weights(["sharpness"])


@pytest.mark.parametrize("metric", [m for m in (*DEFAULT_METRICS, "fid") if WEIGHT_FILES[m]])
def test_missing_weights_raise_our_message(empty_hub, metric):
    with pytest.raises(D3SRError) as raised:
        build_metric(metric, "cpu")
    message = str(raised.value)
    for file in WEIGHT_FILES[metric]:
        assert file.name in message and str(file.path) in message and file.url in message


def test_guard_turns_downloads_into_our_error(empty_hub):
    from pyiqa.utils import download_util

    url = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    with no_downloads():
        # pyiqa's cache folder follows the TORCH_HOME of now, not the one it was imported under.
        assert download_util.DEFAULT_CACHE_DIR == str(empty_hub / "hub" / "pyiqa")
        with pytest.raises(D3SRError, match="never downloads"):
            torch.hub.load_state_dict_from_url(url)
        with pytest.raises(D3SRError, match="never downloads"):
            download_util.load_file_from_url("https://example.org/weights.pth")
    assert not list(empty_hub.rglob("*.pth"))


def test_guard_puts_everything_back(empty_hub, monkeypatch):
    from pyiqa.utils import download_util

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = (download_util.DEFAULT_CACHE_DIR, download_util.download_url_to_file, torch.hub.download_url_to_file,
              urllib.request.urlopen)  # fmt: skip
    with no_downloads():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert torch.hub.download_url_to_file is not before[2] and urllib.request.urlopen is not before[3]
    after = (download_util.DEFAULT_CACHE_DIR, download_util.download_url_to_file, torch.hub.download_url_to_file,
             urllib.request.urlopen)  # fmt: skip
    assert after == before and "HF_HUB_OFFLINE" not in os.environ


def test_swapped_restores_attributes_and_keys_even_after_an_error():
    owner = types.SimpleNamespace(kept=1)
    table = {"kept": 1}
    with pytest.raises(RuntimeError), swapped(owner, kept=2, added=3), swapped(table, kept=2, added=3):
        assert (owner.kept, owner.added, table["kept"], table["added"]) == (2, 3, 2, 3)
        raise RuntimeError("inside")
    assert vars(owner) == {"kept": 1} and table == {"kept": 1}


def test_maniqa_backbone_is_built_without_imagenet_weights(monkeypatch):
    import pyiqa.archs.maniqa_arch as maniqa_arch

    timm = maniqa_arch.timm
    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        return torch.nn.Identity()

    monkeypatch.setattr(timm, "create_model", create_model)
    # MANIQA's own call, as made inside the guard.
    source = Path(find_spec("pyiqa").submodule_search_locations[0], "archs", "maniqa_arch.py").read_text()
    assert "timm.create_model('vit_base_patch8_224', pretrained=True)" in source
    with maniqa_backbone_offline():
        backbone = maniqa_arch.timm.create_model("vit_base_patch8_224", pretrained=True)
    assert isinstance(backbone, torch.nn.Identity)
    assert calls == [("vit_base_patch8_224", {"pretrained": False})]
    assert maniqa_arch.timm is timm  # put back


def test_suite_lists_every_missing_file_at_once(empty_hub):
    from d3sr.evaluation.suite import MetricSuite

    with pytest.raises(D3SRError) as raised:
        MetricSuite(["lpips", "dists", "musiq"], device="cpu")
    message = str(raised.value)
    expected = [f.name for m in ("lpips", "dists", "musiq") for f in WEIGHT_FILES[m]]
    assert len(expected) >= 3
    assert all(name in message for name in expected), message
