"""YCbCr in the SeAFusion convention: fuse on Y, put the visible Cb/Cr back.

    Y  = 0.299 R + 0.587 G + 0.114 B
    Cr = 0.713 (R - Y) + 0.5          Cb = 0.564 (B - Y) + 0.5
    R  = Y + 1.403 (Cr - 0.5)         G  = Y - 0.714 (Cr - 0.5) - 0.344 (Cb - 0.5)
    B  = Y + 1.773 (Cb - 0.5)

Values are floats in [0, 1]; channels last for numpy (H, W, 3), channel-first for torch (..., 3, H, W).
"""

from __future__ import annotations

import numpy as np
import torch


def _split(x, axis):
    if isinstance(x, torch.Tensor):
        return x.unbind(axis)
    return np.moveaxis(x, axis, 0)


def _stack(parts, axis, like):
    if isinstance(like, torch.Tensor):
        return torch.stack(parts, axis)
    return np.stack(parts, axis)


def rgb_to_ycbcr(rgb, channel_axis: int | None = None):
    """RGB -> YCbCr (same container and layout: numpy channels-last, torch channel-first by default)."""
    axis = channel_axis if channel_axis is not None else (-3 if isinstance(rgb, torch.Tensor) else -1)
    r, g, b = _split(rgb, axis)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr = 0.713 * (r - y) + 0.5
    cb = 0.564 * (b - y) + 0.5
    return _stack([y, cb, cr], axis, rgb)


def ycbcr_to_rgb(ycbcr, channel_axis: int | None = None, clip: bool = True):
    """YCbCr (Y, Cb, Cr order) -> RGB, clipped to [0, 1] by default."""
    axis = channel_axis if channel_axis is not None else (-3 if isinstance(ycbcr, torch.Tensor) else -1)
    y, cb, cr = _split(ycbcr, axis)
    r = y + 1.403 * (cr - 0.5)
    g = y - 0.714 * (cr - 0.5) - 0.344 * (cb - 0.5)
    b = y + 1.773 * (cb - 0.5)
    out = _stack([r, g, b], axis, ycbcr)
    if clip:
        out = out.clamp(0, 1) if isinstance(out, torch.Tensor) else np.clip(out, 0, 1)
    return out


def luma(rgb, channel_axis: int | None = None):
    """Y of an RGB image (keeps a size-1 channel axis for torch, drops it for numpy)."""
    axis = channel_axis if channel_axis is not None else (-3 if isinstance(rgb, torch.Tensor) else -1)
    r, g, b = _split(rgb, axis)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y.unsqueeze(axis) if isinstance(y, torch.Tensor) else y


def recombine(fused_y, visible_rgb, channel_axis: int | None = None):
    """Fused luma + the visible image's chroma -> RGB."""
    axis = channel_axis if channel_axis is not None else (-3 if isinstance(visible_rgb, torch.Tensor) else -1)
    _, cb, cr = _split(rgb_to_ycbcr(visible_rgb, axis), axis)
    y = fused_y.squeeze(axis) if isinstance(fused_y, torch.Tensor) and fused_y.dim() == visible_rgb.dim() else fused_y
    return ycbcr_to_rgb(_stack([y, cb, cr], axis, visible_rgb), axis)
