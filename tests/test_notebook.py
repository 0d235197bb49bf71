"""notebooks/inspect_checkpoint.ipynb runs end to end on a freshly trained tiny checkpoint (with TensorBoard logs)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from d3sr.train import train

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inspect_checkpoint.ipynb"

TINY_RUN = ["experiment=demo", "degradation=bicubic", "iterations=2", "checkpoint_every=1", "data.crop_size=64",
            "data.crops_per_image=1", "data.batch_size=2", "trainer.val_check_interval=2",
            "trainer.log_every_n_steps=1", "callbacks.image_logger.every_n_iterations=2",
            "++trainer.enable_progress_bar=false", "++trainer.enable_model_summary=false"]  # fmt: skip


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "parameters" in code[0].metadata.get("tags", [])


# The diffusion-D checkpoint runs in the fast suite; the pixel-D and no-D ones run with -m slow (their training and
# loading are covered fast by tests/models/test_ablations.py; the notebook's branches for them by these slow runs).
@pytest.mark.parametrize("discriminator", ["demo", pytest.param("demo_pixel", marks=pytest.mark.slow),
                                           pytest.param("none", marks=pytest.mark.slow)])  # fmt: skip
def test_inspect_checkpoint_notebook_runs(compose, tmp_path, monkeypatch, discriminator):
    """With a diffusion D (realism maps per t), a pixel D (one map) and none (said so): every Table 4b kind opens."""
    cfg = compose([*TINY_RUN, f"model/discriminator={discriminator}", f"paths.output_dir={tmp_path}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint = train(cfg)["checkpoint"]
    assert checkpoint and list(tmp_path.rglob("events.out.tfevents.*"))
    monkeypatch.setenv("D3SR_CHECKPOINT", checkpoint)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # fmt: skip
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    # Images, realism maps (none without a discriminator), curves.
    assert sum(o.output_type == "display_data" for o in outputs) >= (2 if discriminator == "none" else 3)
    assert ("no realism map" in text) == (discriminator == "none")
    assert "event file(s)" in text and not text.count("0 event file(s)")
