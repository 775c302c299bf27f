"""The fusion loss of DIFF-MF's closest peers (SwinFusion, MambaDFuse), with its weights from the options.

    L = w_int  * L1(F, max(ir, vi))
      + w_grad * L1(|∇F|, max(|∇ir|, |∇vi|))                    |∇x| = |Sobel_x x| + |Sobel_y x|
      + w_ssim * (1 - (a_ir * SSIM(ir, F) + a_vi * SSIM(vi, F)))

Choices the peers leave open, made here:
* Sobel filtering reflect-pads the border, so the image edge is not taken for a strong gradient.
* ``a_ir, a_vi`` come from each sample's mean gradient magnitudes g_ir, g_vi: "normalised" (default)
  is a_ir = g_ir / (g_ir + g_vi) as in SwinFusion, per sample rather than per batch; "softmax" is
  softmax(g_ir, g_vi), which stays near 1/2 because g is small (a gentler preference).
* SSIM is pytorch-msssim's (11x11 Gaussian window, sigma 1.5, K = (0.01, 0.03), data range 1,
  valid convolution), per sample. Everything is computed in float32, also under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn

DEFAULT_WEIGHTS = {"intensity": 20.0, "gradient": 20.0, "ssim": 10.0}
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


class SobelMagnitude(nn.Module):
    """|Sobel_x| + |Sobel_y| of a (B, 1, H, W) image."""

    def __init__(self) -> None:
        super().__init__()
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernel", torch.stack([gx, gx.t()])[:, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.to(x.dtype))
        return g.abs().sum(1, keepdim=True)


class FusionLoss(nn.Module):
    """Intensity-max L1 + Sobel-gradient-max L1 + gradient-weighted SSIM. Returns (total, parts)."""

    def __init__(self, weights: dict[str, float] | None = None, ssim_weighting: str = "normalised") -> None:
        super().__init__()
        weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown loss weight(s) {', '.join(unknown)}; use {', '.join(DEFAULT_WEIGHTS)}")
        if ssim_weighting not in ("normalised", "softmax"):
            raise ValueError(f"ssim_weighting must be 'normalised' or 'softmax', got {ssim_weighting!r}")
        self.weights = weights
        self.ssim_weighting = ssim_weighting
        self.sobel = SobelMagnitude()

    def ssim_source_weights(self, g_ir: torch.Tensor, g_vi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (a_ir, a_vi) summing to 1, from the mean gradient magnitude of each source."""
        m = torch.stack([g_ir.mean((1, 2, 3)), g_vi.mean((1, 2, 3))], 1)
        if self.ssim_weighting == "softmax":
            return tuple(torch.softmax(m, 1).unbind(1))
        w = (m + 1e-6) / (m.sum(1, keepdim=True) + 2e-6)  # two flat patches get equal weights
        return w[:, 0], w[:, 1]

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor):
        fused, ir, vi = fused.float(), ir.float(), vi.float()
        if min(fused.shape[-2:]) < SSIM_WINDOW:
            raise ValueError(f"patches must be at least {SSIM_WINDOW} pixels for SSIM, got {tuple(fused.shape[-2:])}")
        g_f, g_ir, g_vi = self.sobel(fused), self.sobel(ir), self.sobel(vi)
        intensity = F.l1_loss(fused, torch.maximum(ir, vi))
        gradient = F.l1_loss(g_f, torch.maximum(g_ir, g_vi))
        a_ir, a_vi = self.ssim_source_weights(g_ir, g_vi)
        kw = dict(data_range=1.0, size_average=False, win_size=SSIM_WINDOW, win_sigma=SSIM_SIGMA)
        similarity = (a_ir * ssim(ir, fused, **kw) + a_vi * ssim(vi, fused, **kw)).mean()
        w = self.weights
        parts = {
            "intensity": w["intensity"] * intensity,
            "gradient": w["gradient"] * gradient,
            "ssim": w["ssim"] * (1.0 - similarity),
        }
        return parts["intensity"] + parts["gradient"] + parts["ssim"], parts
