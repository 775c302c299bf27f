"""The fusion loss: each term does what its formula says, the weights come from the options."""

import pytest
import torch
from diffmf_training.loss import FusionLoss, SobelMagnitude
from pytorch_msssim import ssim


def _pair(seed=0, size=24):
    g = torch.Generator().manual_seed(seed)
    ir = torch.rand(2, 1, size, size, generator=g)
    vi = torch.rand(2, 1, size, size, generator=g)
    return ir, vi


def test_sobel_is_abs_gx_plus_abs_gy_and_flat_images_have_none():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)  # +1 per column, +6 per row
    g = SobelMagnitude()(x)
    assert torch.allclose(g[..., 1:-1, 1:-1], torch.full((1, 1, 4, 4), 8.0 * 1 + 8.0 * 6))
    assert SobelMagnitude()(torch.full((1, 1, 8, 8), 0.3)).abs().max() == 0


def test_intensity_term_vanishes_at_the_elementwise_max():
    ir, vi = _pair()
    loss = FusionLoss({"intensity": 1, "gradient": 0, "ssim": 0})
    total, parts = loss(torch.maximum(ir, vi), ir, vi)
    assert total.item() == pytest.approx(0.0, abs=1e-7)
    assert loss(0.5 * (ir + vi), ir, vi)[0] > 0.05


def test_gradient_term_vanishes_when_the_fused_image_carries_the_strongest_edges():
    ir, _ = _pair()
    flat = torch.full_like(ir, 0.4)
    loss = FusionLoss({"intensity": 0, "gradient": 1, "ssim": 0})
    assert loss(ir, ir, flat)[0].item() == pytest.approx(0.0, abs=1e-7)
    assert loss(flat, ir, flat)[0] > 0.1


def test_ssim_term_weights_the_source_with_more_gradient():
    ir, _ = _pair()
    flat = torch.full_like(ir, 0.4)
    loss = FusionLoss({"intensity": 0, "gradient": 0, "ssim": 1})
    g = loss.sobel
    a_ir, a_vi = loss.ssim_source_weights(g(ir), g(flat))
    assert torch.allclose(a_ir + a_vi, torch.ones(2)) and (a_ir > 0.99).all()
    kw = dict(data_range=1.0, size_average=False)
    expected = 1 - (a_ir * ssim(ir, ir, **kw) + a_vi * ssim(flat, ir, **kw)).mean()
    assert loss(ir, ir, flat)[0].item() == pytest.approx(expected.item(), abs=1e-6)
    assert loss(ir, ir, flat)[0].item() < 0.01  # fused = the textured source: almost no SSIM loss


def test_softmax_weighting_is_gentler_than_normalised():
    ir, _ = _pair()
    flat = torch.full_like(ir, 0.4)
    g = SobelMagnitude()
    a_soft, _ = FusionLoss(ssim_weighting="softmax").ssim_source_weights(g(ir), g(flat))
    a_norm, _ = FusionLoss().ssim_source_weights(g(ir), g(flat))
    assert (a_soft > 0.5).all() and (a_soft < a_norm).all()


def test_weights_scale_each_part_and_the_total_is_their_sum():
    ir, vi = _pair(1)
    fused = 0.5 * (ir + vi)
    _, unit = FusionLoss({"intensity": 1, "gradient": 1, "ssim": 1})(fused, ir, vi)
    total, parts = FusionLoss()(fused, ir, vi)  # the peers' 20 / 20 / 10
    assert parts["intensity"].item() == pytest.approx(20 * unit["intensity"].item(), rel=1e-5)
    assert parts["gradient"].item() == pytest.approx(20 * unit["gradient"].item(), rel=1e-5)
    assert parts["ssim"].item() == pytest.approx(10 * unit["ssim"].item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(p.item() for p in parts.values()), rel=1e-6)


def test_gradients_flow_to_the_fused_image_and_bad_settings_are_refused():
    ir, vi = _pair()
    fused = (0.5 * (ir + vi)).requires_grad_()
    FusionLoss()(fused, ir, vi)[0].backward()
    assert fused.grad is not None and fused.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 11"):
        FusionLoss()(fused[..., :8, :8], ir[..., :8, :8], vi[..., :8, :8])
    with pytest.raises(ValueError, match="unknown loss weight"):
        FusionLoss({"tv": 1})
