"""InferenceOptions' 'auto' precision and channels_last: the hardware check, what they resolve to, and bad values."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from d3sr.errors import ConfigError
from d3sr.inference import D3SRPipeline, InferenceOptions
from d3sr.options import auto_channels_last, auto_precision, cpu_units

CPU = torch.device("cpu")
AVX2_FLAGS = "fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2"  # an AMD EPYC (Zen 3) as seen by a VM
SAPPHIRE_RAPIDS_FLAGS = f"{AVX2_FLAGS} avx512f avx512dq avx512bw avx512vl avx512_bf16 amx_bf16 amx_tile amx_int8"


def cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: test\nflags\t\t: {flags}\nbugs\t\t: spectre_v1\n\n")
    return path


def test_cpu_units_reads_the_flags_line(tmp_path):
    assert cpu_units(cpuinfo(tmp_path, AVX2_FLAGS)) == frozenset()
    (tmp_path / "b").mkdir()
    assert cpu_units(cpuinfo(tmp_path / "b", SAPPHIRE_RAPIDS_FLAGS)) == {"avx512f", "avx512_bf16", "amx_bf16"}
    (tmp_path / "c").mkdir()
    assert cpu_units(cpuinfo(tmp_path / "c", f"{AVX2_FLAGS} avx512f")) == {"avx512f"}
    # No /proc/cpuinfo (macOS, Windows): bf16 units are not assumed; AVX-512 as torch reports it.
    assert not cpu_units(tmp_path / "missing") & {"amx_bf16", "avx512_bf16"}


def test_auto_follows_the_units():
    none, avx512, bf16 = frozenset(), frozenset({"avx512f"}), frozenset({"avx512f", "avx512_bf16"})
    assert auto_precision(CPU, none).value == torch.float32
    assert auto_precision(CPU, none).reason == "no bf16 matrix units on this CPU"
    assert auto_precision(CPU, avx512).value == torch.float32  # AVX-512 alone has no bf16 dot products
    assert auto_precision(CPU, bf16).value == torch.bfloat16
    assert auto_precision(CPU, frozenset({"amx_bf16"})).value == torch.bfloat16
    assert auto_channels_last(CPU, none).value is False
    assert auto_channels_last(CPU, avx512).value is True and auto_channels_last(CPU, bf16).value is True


def test_auto_resolves_to_a_valid_choice_on_this_machine():
    options = InferenceOptions(device="cpu")
    assert options.precision == "auto" and options.channels_last == "auto"  # the defaults
    bf16_units = bool(cpu_units() & {"amx_bf16", "avx512_bf16"})
    assert options.torch_dtype() == (torch.bfloat16 if bf16_units else torch.float32)
    assert options.tiling(CPU)["channels_last"] is bool(cpu_units())
    line = options.resolved()
    assert line.startswith("inference: precision auto -> ") and ", channels_last auto -> " in line
    assert "\n" not in line and ("bfloat16" if bf16_units else "float32") in line
    print(line)  # this machine's, in the test log


def test_explicit_values_are_kept():
    options = InferenceOptions(device="cpu", precision="bf16", channels_last=True)
    assert options.torch_dtype() == torch.bfloat16 and options.tiling(CPU)["channels_last"] is True
    assert options.resolved() == "inference: precision bf16 -> bfloat16, channels_last true -> on"
    options = InferenceOptions(device="cpu", precision="fp32", channels_last=False)
    assert options.torch_dtype() == torch.float32 and options.tiling(CPU)["channels_last"] is False
    assert options.resolved() == "inference: precision fp32 -> float32, channels_last false -> off"


@pytest.mark.parametrize(
    ("changes", "key"),
    [({"precision": "fp8"}, "inference.precision"), ({"precision": "AUTO"}, "inference.precision"),
     ({"channels_last": "maybe"}, "inference.channels_last"), ({"channels_last": 1}, "inference.channels_last")],
)  # fmt: skip
def test_bad_values_name_the_key(changes, key):
    with pytest.raises(ConfigError, match=key):
        InferenceOptions(**changes)


def test_the_pipeline_applies_auto_channels_last(trained):
    pipe = D3SRPipeline.from_pretrained(trained.bundle, device="cpu", dtype=torch.float32, color_fix="none")
    pipe(torch.rand(1, 3, 8, 8))
    converted = pipe.generator.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert converted is auto_channels_last(CPU).value


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def test_bf16_output_stays_close_to_fp32_on_the_demo_backbone():
    """The shipped tiny backbone (the demo's), astronaut ×4-downscaled, 16² → 64² output, colour fix on.

    Measured on an AMD EPYC (AVX2, no bf16 units: bf16 emulated, ~100× slower than fp32, hence the small image):
    57.3 dB here with backbone v3 (its VAE kept float32); on v2 59.0 dB, 59.5 dB at a 128² output, 58.7 dB (astronaut)
    and 60.9 dB (chelsea) at 256². The full-size SD 2.1
    architecture with random weights, 64² output: 41.3 dB, max difference 0.043 (`bench/inference.py
    --precision-gap --dtypes fp32 bf16 --output 64`; 156 s in bf16 here, too slow for a test).
    """
    from d3sr.images import embedded_lq
    from d3sr.models.generator import OneStepGenerator
    from d3sr.models.loading import pretrained_tiny

    generator = OneStepGenerator(pretrained_tiny("sd"), timestep=199).eval()
    lq = embedded_lq("astronaut")[None, :, :16, :16]
    options = InferenceOptions(tile_size=0, device="cpu", channels_last=False)
    fp32 = D3SRPipeline(copy.deepcopy(generator), options).to(CPU, torch.float32)(lq)
    pipe = D3SRPipeline(generator, options).to(CPU, torch.bfloat16)
    # The demo's linear-codec VAE stays float32 (bf16 cannot hold its channel pairs: 11.8 dB if cast), the UNet bf16.
    assert pipe.generator.vae.dtype == torch.float32 and pipe.dtype == torch.bfloat16
    bf16 = pipe(lq)
    assert psnr(bf16, fp32) > 45  # measured 57.3 dB (v2: 59.0); 45 dB is about 1.4 levels of 255 RMS
