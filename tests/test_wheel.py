"""A wheel holds everything training needs: built, installed into a fresh folder, and trained from elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_installed_wheel_trains_the_demo_from_another_folder(tmp_path):
    # Build the wheel from a copy of the project (setuptools writes build/ next to pyproject.toml; the checkout stays
    # clean), without isolation (the build backend is already installed), and install it into a bare folder.
    project, dist, site, work = tmp_path / "project", tmp_path / "dist", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    build = [sys.executable, "-m", "pip", "wheel", str(project), "--no-deps", "--no-build-isolation", "-q", "-w",
             str(dist)]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("d3sr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "d3sr/conf/train.yaml" in names and "d3sr/conf/experiment/demo.yaml" in names
    assert "d3sr/conf/inference/default.yaml" in names
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip

    # Run from a folder with no conf/ and no source tree, with the installed copy first on the path.
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    where = subprocess.run([sys.executable, "-c", "import d3sr; print(d3sr.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert where.stdout.strip().startswith(str(site)), where.stdout
    result = subprocess.run(
        [sys.executable, "-m", "d3sr.train", "experiment=demo", "iterations=1", f"hydra.run.dir={work / 'run'}",
         "logger=none", "callbacks=none", "++trainer.limit_val_batches=0"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Finished 1 iterations" in result.stderr + result.stdout
