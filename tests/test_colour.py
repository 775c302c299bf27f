"""YCbCr conversion (SeAFusion convention) for numpy and torch."""

import numpy as np
import torch

from diffmf_core.colour import luma, recombine, rgb_to_ycbcr, ycbcr_to_rgb


def test_known_values():
    white = np.ones((1, 1, 3), np.float32)
    np.testing.assert_allclose(rgb_to_ycbcr(white)[0, 0], [1.0, 0.5, 0.5], atol=1e-6)
    red = np.array([[[1.0, 0.0, 0.0]]], np.float32)
    y, cb, cr = rgb_to_ycbcr(red)[0, 0]
    assert abs(y - 0.299) < 1e-6 and abs(cr - (0.713 * 0.701 + 0.5)) < 1e-6 and abs(cb - (0.5 - 0.564 * 0.299)) < 1e-6


def test_round_trip_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    rgb = rng.random((9, 11, 3)).astype(np.float32) * 0.8 + 0.1
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    np.testing.assert_allclose(back, rgb, atol=2e-3)  # the published coefficients are rounded
    t = torch.from_numpy(rgb).permute(2, 0, 1)
    np.testing.assert_allclose(rgb_to_ycbcr(t).permute(1, 2, 0).numpy(), rgb_to_ycbcr(rgb), atol=1e-6)
    np.testing.assert_allclose(luma(t)[0].numpy(), luma(rgb), atol=1e-6)


def test_recombine_keeps_visible_chroma_and_takes_fused_luma():
    rng = np.random.default_rng(1)
    vi = rng.random((6, 7, 3)).astype(np.float32) * 0.6 + 0.2
    fused_y = np.full((6, 7), 0.5, np.float32)
    out = recombine(fused_y, vi)
    ycc_out, ycc_vi = rgb_to_ycbcr(out), rgb_to_ycbcr(vi)
    np.testing.assert_allclose(ycc_out[..., 0], 0.5, atol=3e-3)
    np.testing.assert_allclose(ycc_out[..., 1:], ycc_vi[..., 1:], atol=3e-3)
    t_out = recombine(torch.from_numpy(fused_y)[None], torch.from_numpy(vi).permute(2, 0, 1))
    np.testing.assert_allclose(t_out.permute(1, 2, 0).numpy(), out, atol=1e-6)
