"""Our DISTS against torchmetrics' implementation on the same (random) VGG16 weights."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import vgg16

from d3sr.errors import D3SRError
from d3sr.losses.backbones import VGG16_FILE, default_weights_path
from d3sr.losses.dists import DISTS


@pytest.fixture(scope="module")
def vgg_file(_private_torch_home):
    """A random VGG16 state dict saved where torchvision's hub cache keeps the ImageNet file."""
    path = default_weights_path("vgg16")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(123)
    torch.save(vgg16(weights=None).state_dict(), path)
    yield path
    path.unlink()


def test_matches_torchmetrics_dists(vgg_file):
    from torchmetrics.functional.image.dists import DISTSNetwork  # loads VGG16 from the same hub cache file

    reference = DISTSNetwork().eval()
    ours = DISTS(pretrained_backbone=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 64, 80, generator=gen)
    y = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        expected = reference(x, y)
    got = ours(x, y)
    assert got.shape == (3,)
    torch.testing.assert_close(got, expected.view(-1), rtol=1e-4, atol=1e-5)


def test_identical_images_score_zero_and_noise_increases_distance():
    dists = DISTS(pretrained_backbone=False)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 64, 64, generator=gen)
    small = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    large = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert dists(x, x).abs().item() < 1e-5
    assert 0 < dists(x, small).item() < dists(x, large).item()


def test_gradients_flow_to_the_input_only():
    dists = DISTS(pretrained_backbone=False)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    dists(x, torch.rand(1, 3, 32, 32)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert not any(p.requires_grad for p in dists.parameters())


def test_missing_vgg_weights_is_one_clear_error(tmp_path):
    with pytest.raises(D3SRError, match=VGG16_FILE):
        DISTS(pretrained_backbone=True, backbone_weights=str(tmp_path / VGG16_FILE))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one shape"):
        DISTS(pretrained_backbone=False)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 16))
