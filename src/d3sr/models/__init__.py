"""Networks: the one-step generator, the diffusion discriminator, the Lightning module, their construction and
saved form.

May import losses/ and the ground floor (images, errors, options, psnr_ssim); never data/, inference/ or evaluation/.
"""

from d3sr.models.d3sr_module import D3SRModule
from d3sr.models.discriminator import DiffusionDiscriminator, PatchHead
from d3sr.models.generator import OneStepGenerator, predict_x0
from d3sr.models.loading import Backbone
from d3sr.models.pixel_discriminator import PixelDiscriminator

__all__ = [
    "Backbone",
    "D3SRModule",
    "DiffusionDiscriminator",
    "OneStepGenerator",
    "PatchHead",
    "PixelDiscriminator",
    "predict_x0",
]
