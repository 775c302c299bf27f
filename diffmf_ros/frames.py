"""Frames on their way out: the node and the offline bag tool encode fused frames the same way."""

from __future__ import annotations

import cv2
import numpy as np


def to_display_uint8(pixels: np.ndarray) -> np.ndarray:
    """Any frame we hold (uint8, uint16, float [0, 1]) as uint8 for output."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return (pixels >> 8).astype(np.uint8)
    return (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_output(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """uint8 gray or RGB -> the array numpy_to_image_fields needs for ``encoding``."""
    if encoding == "mono8":
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) if pixels.ndim == 3 else pixels
    return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB) if pixels.ndim == 2 else pixels
