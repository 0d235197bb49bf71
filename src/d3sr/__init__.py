"""d3sr: an open implementation of D³SR, one-step diffusion SR trained against a large diffusion discriminator.

Layers, bottom to top (imports point down only; see tests/test_architecture.py): the ground floor (images, errors,
options, psnr_ssim, resolvers, atomic_files) → losses/, data/ → models/ → callbacks/, inference/ → evaluation/ →
entry points (train, infer, export, evaluate, synth, pretrain_tiny, check_weights, complexity), which nothing imports.
"""

import logging

from d3sr.resolvers import register_resolvers

__version__ = "0.1.0"

# peft imports bitsandbytes when it is installed (pyiqa pulls it in); its CPU backend warns about an optional
# kernel package that d3sr never uses. Keep that line out of every log.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
# transformers imports the `kernels` package, which under HF_HUB_OFFLINE=1 warns that it skips a publisher check for
# a kernel d3sr never loads: keep our commands' output to our own lines offline too.
logging.getLogger("kernels").setLevel(logging.ERROR)


class _NoAdvertisements(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing ..." lines (printed at the start of every training run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertisements())

register_resolvers()
