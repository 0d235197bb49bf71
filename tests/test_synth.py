"""Test-set synthesis CLI: sizes, byte-identical reruns, the manifest, refusals, unreadable files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import d3sr
from d3sr.errors import D3SRError
from d3sr.images import EMBEDDED_HELD_OUT, EMBEDDED_TRAIN
from d3sr.synth import synthesize

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def hq(tmp_path) -> Path:
    """Small HQ photos (one of a size that is not a multiple of 4, one in a subfolder) and a corrupt file."""
    from skimage import data

    folder = tmp_path / "hq"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(data.astronaut()[100:164, 150:222]).save(folder / "astronaut.png")
    Image.fromarray(data.coffee()[50:116, 200:275]).save(folder / "sub" / "coffee.png")  # 66×75 → 64×72
    Image.fromarray(data.chelsea()[:64, :64]).save(folder / "chelsea.jpg", quality=95)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def run_in_process(compose, *overrides: str) -> dict:
    """The same composition as the CLI (Hydra's compose with its runtime config), run in this process."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose(list(overrides), config_name="synth", return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        return synthesize(cfg)
    finally:
        HydraConfig.instance().cfg = None


def test_synth_writes_lq_pngs_deterministically_with_a_manifest(hq, tmp_path, compose, run_command):
    out1, cwd = tmp_path / "lq1", tmp_path / "cwd"
    cwd.mkdir()
    result = run_command("synth", f"input={hq}", f"output={out1}", "seed=3", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert list(cwd.iterdir()) == []  # no Hydra run folder or log file
    written = sorted(p.relative_to(out1).as_posix() for p in out1.rglob("*") if p.is_file())
    assert written == ["astronaut.png", "chelsea.png", "manifest.json", "sub/coffee.png"]
    sizes = {name: Image.open(out1 / name).size for name in ("astronaut.png", "chelsea.png", "sub/coffee.png")}
    assert sizes == {"astronaut.png": (18, 16), "chelsea.png": (16, 16), "sub/coffee.png": (18, 16)}  # (W, H)

    manifest = json.loads((out1 / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["d3sr_version"] == d3sr.__version__
    assert manifest["degradation"]["name"] == "realesrgan"
    assert manifest["degradation"]["parameters"]["stage1"]["noise_range"] == [1, 30]
    assert [f["output"] for f in manifest["files"]] == ["astronaut.png", "chelsea.png", "sub/coffee.png"]
    assert manifest["files"][2]["hq_crop"] == [64, 72] and manifest["files"][2]["lq_size"] == [16, 18]
    assert [s["input"] for s in manifest["skipped"]] == ["broken.png"]

    # A second run is byte-identical; an image's LQ does not depend on the other files in the folder.
    out2 = tmp_path / "lq2"
    run_in_process(compose, f"input={hq}", f"output={out2}", "seed=3")
    for name in written:
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), name
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "astronaut.png").write_bytes((hq / "astronaut.png").read_bytes())
    run_in_process(compose, f"input={alone}", f"output={tmp_path / 'lq3'}", "seed=3")
    assert (tmp_path / "lq3" / "astronaut.png").read_bytes() == (out1 / "astronaut.png").read_bytes()
    # Another seed, another degradation.
    run_in_process(compose, f"input={alone}", f"output={tmp_path / 'lq4'}", "seed=4")
    assert (tmp_path / "lq4" / "astronaut.png").read_bytes() != (out1 / "astronaut.png").read_bytes()


def test_synth_refuses_to_overwrite_or_write_into_its_input(hq, tmp_path, compose, run_command):
    out = tmp_path / "lq"
    out.mkdir()
    (out / "old.png").write_bytes(b"x")
    result = run_command("synth", f"input={hq}", f"output={out}", cwd=tmp_path)
    assert result.returncode == 2
    assert "error: output=" in result.stderr and "overwrite=true" in result.stderr
    assert "Traceback" not in result.stderr
    manifest = run_in_process(compose, f"input={hq}", f"output={out}", "overwrite=true", "degradation=bicubic")
    assert manifest["degradation"]["name"] == "bicubic" and (out / "astronaut.png").is_file()
    lq = np.asarray(Image.open(out / "astronaut.png"))
    assert lq.shape == (16, 18, 3) and lq.dtype == np.uint8
    with pytest.raises(D3SRError, match="is the input folder"):
        run_in_process(compose, f"input={hq}", f"output={hq}", "overwrite=true")
    with pytest.raises(D3SRError, match="not a folder"):
        run_in_process(compose, f"input={tmp_path / 'missing'}", f"output={tmp_path / 'lq5'}")
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "a.png").write_bytes(b"")
    with pytest.raises(D3SRError, match="could be read"):
        run_in_process(compose, f"input={only_broken}", f"output={tmp_path / 'lq6'}")


def test_synth_embedded_photos(tmp_path, compose):
    manifest = run_in_process(compose, "input=embedded", f"output={tmp_path / 'lq'}", "degradation=bicubic")
    assert len(manifest["files"]) == len(EMBEDDED_TRAIN) + len(EMBEDDED_HELD_OUT) and not manifest["skipped"]
    assert Image.open(tmp_path / "lq" / "astronaut.png").size == (128, 128)
