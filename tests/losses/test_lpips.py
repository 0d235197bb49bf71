"""Our LPIPS against torchmetrics' on the same (random) backbones, EA-LPIPS, and the Table 4a loss options."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torchvision.models import alexnet, vgg16

from d3sr.errors import D3SRError
from d3sr.losses import DISTS, EADISTS, LPIPS, D3SRLoss, EdgeAware
from d3sr.losses.backbones import ALEXNET_FILE, VGG16_FILE, default_weights_path
from d3sr.losses.edges import sobel_magnitude

NETS = {"vgg": ("vgg16", vgg16), "alex": ("alexnet", alexnet)}
# The tiny demo recipe of tests/models/test_module.py: one iteration, no validation, no logger.
FAST = ["experiment=demo", "model/generator=tiny", "model/discriminator=tiny", "degradation=bicubic",
        "data.crop_size=64", "data.crops_per_image=1", "data.batch_size=2", "iterations=1",
        "logger=none", "callbacks=none", "++trainer.limit_val_batches=0", "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false"]  # fmt: skip


@pytest.fixture(scope="module")
def backbone_files(_private_torch_home):
    """Random VGG16 and AlexNet state dicts saved where torchvision's hub cache keeps the ImageNet files."""
    paths = []
    for seed, (arch, build) in enumerate(NETS.values()):
        path = default_weights_path(arch)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(100 + seed)
        torch.save(build(weights=None).state_dict(), path)
        paths.append(path)
    yield paths
    for path in paths:
        path.unlink()


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    return LPIPS(net="vgg", pretrained_backbone=False)


@pytest.fixture(scope="module")
def dists() -> DISTS:
    return DISTS(pretrained_backbone=False)


def pair(size: tuple[int, int] = (64, 80), batch: int = 3, noise: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, *size, generator=gen)
    return x, (x + noise * torch.randn(x.shape, generator=gen)).clamp(0, 1)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_matches_torchmetrics_lpips(backbone_files, net):
    # torchmetrics loads the backbone with torchvision from the same hub cache file, its heads from its own copy.
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    reference = LearnedPerceptualImagePatchSimilarity(net_type=net, reduction="none", normalize=True)
    ours = LPIPS(net=net, pretrained_backbone=True)
    x, y = pair()
    with torch.no_grad():
        reference.update(x, y)
        expected = reference.compute()
    got = ours(x, y)
    assert got.shape == (3,) and (expected > 1e-3).all()
    # Measured over five random batches, float32 on CPU: max |Δ| 3.7e-9; max relative 8.1e-8 (vgg), 1.4e-7 (alex).
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_identical_images_score_zero_and_noise_increases_distance(net):
    lpips = LPIPS(net=net, pretrained_backbone=False)
    x, small = pair(noise=0.05, batch=1)
    _, large = pair(noise=0.3, batch=1)
    assert lpips(x, x).abs().item() == 0
    assert 0 < lpips(x, small).item() < lpips(x, large).item()


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_gradients_flow_to_the_input_only(net):
    lpips = LPIPS(net=net, pretrained_backbone=False)
    x, y = pair(size=(64, 64), batch=2)
    x.requires_grad_(True)
    lpips(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lpips.parameters())
    assert not lpips.train().training  # the loss network stays in eval mode


def test_seeded_random_backbone_is_reproducible():
    x, y = pair(batch=1)
    torch.testing.assert_close(LPIPS(pretrained_backbone=False)(x, y), LPIPS(pretrained_backbone=False)(x, y))
    assert not torch.equal(LPIPS(pretrained_backbone=False, seed=1)(x, y), LPIPS(pretrained_backbone=False)(x, y))


def test_bad_options_and_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="LPIPS net"):
        LPIPS(net="squeeze", pretrained_backbone=False)
    with pytest.raises(D3SRError, match=ALEXNET_FILE):
        LPIPS(net="alex", pretrained_backbone=True, backbone_weights=str(tmp_path / ALEXNET_FILE))
    vgg_file = tmp_path / VGG16_FILE
    torch.save(vgg16(weights=None).state_dict(), vgg_file)
    with pytest.raises(D3SRError, match="does not hold torchvision alexnet"):
        LPIPS(net="alex", pretrained_backbone=True, backbone_weights=str(vgg_file))
    with pytest.raises(ValueError, match="one shape"):
        LPIPS(pretrained_backbone=False)(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 48))


def test_ea_lpips_is_lpips_of_images_plus_lpips_of_edges(lpips):
    gt, sr = pair(size=(48, 64), batch=2)
    image, edges = lpips(sr, gt), lpips(sobel_magnitude(sr), sobel_magnitude(gt))
    torch.testing.assert_close(EdgeAware(lpips, edge_weight=0.5)(sr, gt), image + 0.5 * edges)
    torch.testing.assert_close(EdgeAware(lpips, edge_weight=0)(sr, gt), image)
    assert (edges > 0).all()


def test_the_validation_dists_of_each_edge_aware_loss(lpips, dists):
    assert EdgeAware(lpips).dists is None
    assert EdgeAware(lpips, dists=dists).dists is dists
    assert EADISTS(dists).dists is dists and EdgeAware(dists).dists is dists
    gt, sr = pair(size=(32, 32), batch=1)
    torch.testing.assert_close(EdgeAware(lpips, dists=dists)(sr, gt), EdgeAware(lpips)(sr, gt))  # not in the loss
    with pytest.raises(ValueError, match="DISTS already"):
        EdgeAware(dists, dists=dists)
    with pytest.raises(ValueError, match="edge_weight"):
        EdgeAware(lpips, edge_weight=-1)


@pytest.mark.parametrize("option, edge_weight", [("lpips", 0.0), ("ea_lpips", 1.0)])
def test_lpips_options_compose_with_the_papers_weights(compose, option, edge_weight):
    cfg = compose([f"loss={option}", "paths.output_dir=/tmp/x"])
    paper = compose(["loss=paper", "paths.output_dir=/tmp/x"]).loss
    node = cfg.loss
    assert (node.lambda_mse, node.lambda_ea_dists, node.lambda_adv) == (
        paper.lambda_mse, paper.lambda_ea_dists, paper.lambda_adv
    )  # fmt: skip
    assert node.perceptual.edge_weight == edge_weight and node.perceptual.network.net == "vgg"
    # One switch for both ImageNet backbones: on by default, off with the DISTS one (what experiment=demo sets).
    assert node.perceptual.network.pretrained_backbone is True and node.perceptual.dists.pretrained_backbone is True
    off = compose([f"loss={option}", "loss.perceptual.dists.pretrained_backbone=false", "paths.output_dir=/tmp/x"])
    assert off.loss.perceptual.network.pretrained_backbone is False
    demo = compose(["experiment=demo", f"loss={option}", "paths.output_dir=/tmp/x"])
    loss = instantiate(demo.loss)
    assert isinstance(loss, D3SRLoss) and isinstance(loss.perceptual, EdgeAware)
    assert isinstance(loss.perceptual.network, LPIPS) and isinstance(loss.perceptual.dists, DISTS)
    # Without the validation DISTS, the LPIPS backbone keeps its own (default) setting and there is no val/dists.
    bare = compose([f"loss={option}", "loss.perceptual.dists=null", "paths.output_dir=/tmp/x"])
    assert bare.loss.perceptual.network.pretrained_backbone is True


def test_one_training_step_with_ea_lpips(compose, tmp_path):
    """The tiny demo recipe trains with EA-LPIPS (the superset of the two LPIPS rows: both terms, one backward)."""
    from d3sr.models import D3SRModule
    from d3sr.train import build_trainer

    cfg = compose([*FAST, "loss=ea_lpips", f"paths.output_dir={tmp_path}"])
    L.seed_everything(cfg.seed)
    module = D3SRModule.from_config(cfg)
    assert "val/dists" in module.validation_metrics  # validation scores DISTS under the LPIPS losses too
    lora = {n: p.detach().clone() for n, p in module.generator.named_parameters() if p.requires_grad}
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=instantiate(cfg.data))
    params = dict(module.generator.named_parameters())
    assert any(not torch.equal(before, params[n].detach()) for n, before in lora.items())
    assert trainer.callback_metrics["train/g/ea_dists"].item() > 0
