"""`python -m d3sr.held_out`: the held-out table of `make demo`, from the clean and the Real-ESRGAN-degraded LQ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from d3sr.train import train

REPO = Path(__file__).resolve().parents[2]


def test_held_out_tables_score_the_same_photos_from_both_lqs(compose, tmp_path):
    cfg = compose(["experiment=demo", "iterations=1", "checkpoint_every=1", "logger=none", "callbacks=default",
                   "callbacks.image_logger=null", "++trainer.limit_val_batches=0", "degradation=bicubic",
                   f"paths.output_dir={tmp_path / 'run'}"])  # fmt: skip
    checkpoint = train(cfg)["checkpoint"]
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "d3sr.held_out", checkpoint, "--tile-size", "0", "--json",
                             str(tmp_path / "held_out.json")], cwd=REPO, env=environ, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "×4 from clean bicubic LQ" in result.stdout
        and "×4 from Real-ESRGAN-degraded LQ (set A, seed 0)" in result.stdout
    )
    tables = json.loads((tmp_path / "held_out.json").read_text())["tables"]
    assert {kind: [row["photo"] for row in rows] for kind, rows in tables.items()} == {
        "clean": ["chelsea", "coffee", "rocket"], "realesrgan": ["chelsea", "coffee", "rocket"]}  # fmt: skip
    for clean, degraded in zip(tables["clean"], tables["realesrgan"]):
        # Bicubic from the clean LQ: the figures of BENCHMARKS.md (31.68, 27.38, 29.84 dB), deterministic.
        expected = {"chelsea": 31.68, "coffee": 27.38, "rocket": 29.84}[clean["photo"]]
        assert abs(clean["scores"]["bicubic"][0] - expected) < 0.01, clean
        # The Real-ESRGAN LQ (blur, noise, JPEG) is the harder input for every method.
        assert all(degraded["scores"][m][0] < clean["scores"][m][0] for m in ("bicubic", "vae_only")), degraded
