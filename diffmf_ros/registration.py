"""Thermal image into the visible camera's pixel grid, so the two can be fused pixel by pixel. ROS-free.

Modes:
``none``        the cameras are already registered; frames of different sizes are refused.
``resize``      the thermal frame is scaled to the visible size (co-boresighted cameras
                with matching fields of view).
``homography``  a 3x3 matrix H (row-major, 9 numbers) mapping thermal pixel coordinates to
                visible ones, ``[u_vi, v_vi, 1]^T ~ H [u_ir, v_ir, 1]^T``, from a calibration;
                the thermal frame is warped with cv2.warpPerspective.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["MODES", "RegistrationError", "Registration"]

MODES = ("none", "resize", "homography")


class RegistrationError(ValueError):
    """A thermal/visible pair that cannot be registered; ``reason`` is a short code for drop counting."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Registration:
    """Callable ``(thermal, visible_shape) -> thermal in the visible grid``."""

    def __init__(self, mode: str = "none", homography: Sequence[float] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"registration mode '{mode}' is not one of {', '.join(MODES)}")
        self.mode = mode
        self.homography: np.ndarray | None = None
        if mode == "homography":
            values = np.asarray(homography if homography is not None else [], dtype=np.float64).reshape(-1)
            if values.size != 9:
                raise ValueError(f"registration homography needs 9 numbers (3x3, row-major), got {values.size}")
            matrix = values.reshape(3, 3)
            if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix)) < 1e-12:
                raise ValueError(f"registration homography is not invertible: {values.tolist()}")
            self.homography = matrix

    def __call__(self, thermal: np.ndarray, visible_shape: tuple[int, ...]) -> np.ndarray:
        height, width = int(visible_shape[0]), int(visible_shape[1])
        if self.mode == "homography":
            return cv2.warpPerspective(
                thermal, self.homography, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
            )
        if thermal.shape[:2] == (height, width):
            return thermal
        if self.mode == "resize":
            shrinking = thermal.shape[0] > height
            return cv2.resize(thermal, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        raise RegistrationError(
            "size_mismatch",
            f"thermal {thermal.shape[1]}x{thermal.shape[0]} and visible {width}x{height} differ in size"
            " and registration is 'none' (set registration.mode to resize or homography)",
        )
