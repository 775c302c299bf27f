"""Image arrays in and out of the network's [0, 1] float range; image files read with their bit depth."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file and why."""


def to_float01(img: np.ndarray) -> np.ndarray:
    """uint8 / 255, uint16 / 65535, floats taken as already in [0, 1] (clipped). Returns float32."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) * (1.0 / 255.0)
    if img.dtype == np.uint16:
        return img.astype(np.float32) * (1.0 / 65535.0)
    if np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise ValueError("image contains NaN or infinite values")
        return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)
    raise ValueError(f"unsupported image dtype {img.dtype}; use uint8, uint16 or float in [0, 1]")


def to_uint8(img01: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8, rounded."""
    return (np.clip(img01, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Gray (H, W) or RGB (H, W, 3) at the file's bit depth (uint8 or uint16).

    A 3-channel file whose channels are all equal (TNO stores gray that way) is returned as gray.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageReadError(f"{path}: not a readable image")
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: {img.dtype} pixels; only 8- and 16-bit images are supported")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        elif img.shape[2] == 1:
            img = img[:, :, 0]
    if img.ndim == 3:
        if (img[:, :, 0] == img[:, :, 1]).all() and (img[:, :, 1] == img[:, :, 2]).all():
            return np.ascontiguousarray(img[:, :, 0])
        return np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB
    return img


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write gray or RGB (uint8/uint16) to a file whose extension picks the format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = img[:, :, ::-1] if img.ndim == 3 else img
    if not cv2.imwrite(str(path), np.ascontiguousarray(out)):
        raise OSError(f"{path}: could not write image")
