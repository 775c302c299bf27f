"""The demo's pictures: a side-by-side video (thermal | visible | fused) and a PNG contact sheet."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .fused_outputs import to_bgr
from .thermal import ThermalNormaliser, ThermalSettings

__all__ = ["contact_sheet", "side_by_side", "thermal_for_display", "write_video"]

LABELS = ("thermal", "visible", "fused")


def thermal_for_display(thermal: np.ndarray) -> np.ndarray:
    """Thermal as 8-bit white-hot gray, as the node's default normalisation gives it to the model."""
    unit = ThermalNormaliser(ThermalSettings(mode="auto"))(thermal)
    return (unit * 255.0 + 0.5).astype(np.uint8) if unit.dtype != np.uint8 else unit


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    scale = max(0.35, panel.shape[1] / 640)
    thickness = 1 if scale < 0.8 else 2
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(panel, (0, 0), (w + 8, h + base + 6), (0, 0, 0), -1)
    cv2.putText(panel, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return panel


def side_by_side(thermal: np.ndarray, visible: np.ndarray, fused: np.ndarray, scale: int = 1,
                 caption: str = "") -> np.ndarray:
    """One BGR frame: thermal | visible | fused, each labelled, optionally enlarged ``scale`` times."""
    height, width = visible.shape[:2]
    panels = []
    for name, image in zip(LABELS, (thermal_for_display(thermal), visible, fused)):
        panel = to_bgr(image)
        if panel.shape[:2] != (height, width):
            panel = cv2.resize(panel, (width, height), interpolation=cv2.INTER_AREA)
        if scale > 1:
            panel = cv2.resize(panel, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
        panels.append(_label(panel, name + (f"  {caption}" if caption and name == "fused" else "")))
    return np.hstack(panels)


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float) -> Path:
    """MP4 (mp4v) of equally sized BGR frames."""
    path = Path(path)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot open an mp4v video writer here")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


def contact_sheet(path: str | os.PathLike, rows: Sequence[np.ndarray], max_rows: int = 4) -> Path:
    """A PNG of up to ``max_rows`` side-by-side rows, evenly spaced through the sequence."""
    if not rows:
        raise ValueError("no frames for the contact sheet")
    picks = np.unique(np.linspace(0, len(rows) - 1, min(max_rows, len(rows))).round().astype(int))
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    sheet = np.vstack([part for i in picks for part in (rows[i], gap)][:-1])
    path = Path(path)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"{path}: could not write the contact sheet")
    return path
