"""Checkpoint → inference bundle: `python -m d3sr.export ckpt=PATH output=DIR [merge=true] [use_ema=true]`.

The bundle's layout and format are owned by d3sr.models.saved_generator (see its docstring); this is the command.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from d3sr.commands import hydra_command
from d3sr.errors import D3SRError
from d3sr.models.saved_generator import export_bundle

log = logging.getLogger("d3sr.export")


def run(cfg: DictConfig) -> Path:
    """Check the command line and export."""
    if not cfg.get("ckpt") or not cfg.get("output"):
        raise D3SRError("usage: python -m d3sr.export ckpt=PATH/TO/last.ckpt output=BUNDLE_DIR [merge=true]")
    output = export_bundle(cfg.ckpt, cfg.output, cfg.merge, cfg.overwrite, cfg.get("base_model"), cfg.use_ema,
                           cfg.get("evaluation"))  # fmt: skip
    kind = ("merged UNet" if cfg.merge else "LoRA") + (", EMA weights" if cfg.use_ema else "")
    print(f"Exported {cfg.ckpt} → {output} ({kind}); load with D3SRPipeline.from_pretrained({str(output)!r})")
    return output


main = hydra_command("export", run)

if __name__ == "__main__":
    main()
