"""Raw thermal pixels -> [0, 1] intensities for the fusion model. ROS-free (the bag tool uses it too).

Radiometric cameras deliver 16-bit counts (or 32-bit floats) that fill a small part of
their range; fused as-is the thermal image would look black. Modes:

``auto``         8-bit thermal is already display-ready and passes unchanged; 16-bit and
                 float thermal get the per-frame percentile stretch below.
``none``         full-range scaling only (uint8 / 255, uint16 / 65535, float taken as [0, 1]).
``fixed``        a fixed raw range ``[fixed_min, fixed_max]`` maps to [0, 1].
``percentile``   per-frame AGC: the ``percentile_low`` .. ``percentile_high`` percentiles map
                 to [0, 1]; ``smoothing`` (0 = none, towards 1 = slow) low-passes the range
                 over frames so the image does not flicker when a hot object enters.
``temperature``  raw -> degrees through ``temperature = raw * scale + offset`` (e.g. 0.01 and
                 -273.15 for centikelvin cameras), then the window ``[min, max]`` in degrees
                 maps to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MODES", "ThermalNormaliser", "ThermalSettings"]

MODES = ("auto", "none", "fixed", "percentile", "temperature")


@dataclass(frozen=True)
class ThermalSettings:
    mode: str = "auto"
    fixed_min: float = 0.0
    fixed_max: float = 65535.0
    percentile_low: float = 1.0
    percentile_high: float = 99.0
    smoothing: float = 0.0
    temperature_scale: float = 0.01
    temperature_offset: float = -273.15
    temperature_min: float = 0.0
    temperature_max: float = 60.0

    def validate(self) -> None:
        """ValueError naming the first setting that cannot work."""
        if self.mode not in MODES:
            raise ValueError(f"thermal normalisation mode '{self.mode}' is not one of {', '.join(MODES)}")
        if self.mode == "fixed" and not self.fixed_max > self.fixed_min:
            raise ValueError(f"fixed_max ({self.fixed_max}) must be above fixed_min ({self.fixed_min})")
        if not 0.0 <= self.percentile_low < self.percentile_high <= 100.0:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentile_low}, {self.percentile_high}"
            )
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.mode == "temperature":
            if self.temperature_scale == 0:
                raise ValueError("temperature_scale must not be 0")
            if not self.temperature_max > self.temperature_min:
                raise ValueError(
                    f"temperature_max ({self.temperature_max}) must be above temperature_min ({self.temperature_min})"
                )


class ThermalNormaliser:
    """Callable turning one thermal frame into what FusionEngine.fuse takes (float32 [0, 1] or uint8)."""

    def __init__(self, settings: ThermalSettings | None = None) -> None:
        self.settings = settings or ThermalSettings()
        self.settings.validate()
        self._range: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget the smoothed AGC range (e.g. after a bag loop)."""
        self._range = None

    def __call__(self, thermal: np.ndarray) -> np.ndarray:
        s = self.settings
        mode = s.mode
        if mode == "auto":
            if thermal.dtype == np.uint8:
                return thermal
            mode = "percentile"
        if mode == "none":
            if thermal.dtype.kind == "f":
                return np.clip(thermal, 0.0, 1.0).astype(np.float32, copy=False)
            return thermal
        if mode == "fixed":
            return _stretch(thermal, s.fixed_min, s.fixed_max)
        if mode == "temperature":
            low = (s.temperature_min - s.temperature_offset) / s.temperature_scale
            high = (s.temperature_max - s.temperature_offset) / s.temperature_scale
            return _stretch(thermal, min(low, high), max(low, high), invert=s.temperature_scale < 0)
        return _stretch(thermal, *self._agc_range(thermal))

    def _agc_range(self, thermal: np.ndarray) -> tuple[float, float]:
        s = self.settings
        # A strided sample is plenty for percentiles and keeps AGC cheap on large frames.
        step = max(1, int(np.sqrt(thermal.size / 65536)))
        low, high = np.percentile(thermal[::step, ::step], (s.percentile_low, s.percentile_high))
        low, high = float(low), float(high)
        if self._range is not None and s.smoothing > 0:
            prev_low, prev_high = self._range
            low = s.smoothing * prev_low + (1 - s.smoothing) * low
            high = s.smoothing * prev_high + (1 - s.smoothing) * high
        self._range = (low, high)
        return low, high


def _stretch(raw: np.ndarray, low: float, high: float, invert: bool = False) -> np.ndarray:
    span = high - low
    if span <= 0:  # a flat frame: mid-gray rather than a division by zero
        return np.full(raw.shape, 0.5, np.float32)
    out = (raw.astype(np.float32) - np.float32(low)) * np.float32(1.0 / span)
    np.clip(out, 0.0, 1.0, out=out)
    return 1.0 - out if invert else out
