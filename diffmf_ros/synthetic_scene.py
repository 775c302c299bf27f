"""A generated thermal/visible scene for the demo and the tests: no cameras, no downloads.

What it shows is the case fusion is for: a foggy night street where the visible camera
sees dim colour (lit windows, car paint, headlights) but hardly the people, and the
thermal camera sees warm people and vehicles (hot engines, tyres) on a cool background
but no colour or printed detail. Both cameras share one pixel grid (registered).

Thermal frames are radiometric ``uint16`` in centikelvin (``raw = (T + 273.15) * 100``),
the format many LWIR cores put out, so the node's 16-bit normalisation is exercised.
Visible frames are ``uint8`` RGB. Everything is deterministic for a given ``seed``.

    scene = SyntheticScene(width=320, height=256, seed=0)
    thermal, visible = scene.render(t=0.5)          # seconds since the start
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["ScenePair", "SyntheticScene", "sequence"]

KELVIN = 273.15
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class _Walker:
    x0: float  # start, as a fraction of the width
    speed: float  # widths per second (negative: walking left)
    ground: float  # feet row, as a fraction of the height (further away = higher up, smaller)
    skin: float  # surface temperature of the warmest part, degrees C
    coat: tuple[float, float, float]  # visible clothing colour, RGB in [0, 1]


@dataclass(frozen=True)
class _Vehicle:
    x0: float
    speed: float
    ground: float
    paint: tuple[float, float, float]
    engine: float  # hood temperature, degrees C


@dataclass(frozen=True)
class ScenePair:
    """One thermal and one visible frame with the stamps their cameras gave them."""

    thermal: np.ndarray  # H x W; uint16 centikelvin from the generated scene, uint8 from real 8-bit data
    visible: np.ndarray  # uint8 RGB, H x W x 3
    thermal_stamp_ns: int
    visible_stamp_ns: int


class SyntheticScene:
    """Renders the street at any time ``t``; the static background is drawn once."""

    def __init__(self, width: int = 320, height: int = 256, seed: int = 0, fog: float = 0.55,
                 light: float = 0.32) -> None:
        if width < 32 or height < 32:
            raise ValueError(f"scene must be at least 32x32 pixels, got {width}x{height}")
        if not 0.0 <= fog < 1.0 or not 0.0 < light <= 1.0:
            raise ValueError(f"fog must be in [0, 1) and light in (0, 1], got {fog}, {light}")
        self.width, self.height, self.seed = int(width), int(height), int(seed)
        self.fog, self.light = fog, light
        self._rng = np.random.default_rng(seed)
        self.horizon = 0.42  # fraction of the height where the sky meets the street
        self._walkers, self._vehicles = self._cast()
        self._thermal_bg, self._visible_bg = self._background()
        rows = np.linspace(0.0, 1.0, self.height, dtype=np.float32)[:, None, None]
        # Fog is thickest towards the horizon (far away) and thins out at the bottom (near).
        self._fog_amount = (fog * np.clip(1.15 - 0.9 * np.abs(rows - self.horizon) / (1 - self.horizon), 0, 1)).astype(
            np.float32
        )

    # -- public --------------------------------------------------------------------------
    def render(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(thermal uint16 centikelvin H x W, visible uint8 RGB H x W x 3) at ``t`` seconds."""
        temperature = self._thermal_bg.copy()
        visible = self._visible_bg.copy()
        for vehicle in self._vehicles:
            self._draw_vehicle(vehicle, t, temperature, visible)
        for walker in self._walkers:
            self._draw_walker(walker, t, temperature, visible)
        return self._thermal_camera(temperature, t), self._visible_camera(visible, t)

    def temperature_range(self) -> tuple[float, float]:
        """Coldest and warmest temperatures (degrees C) the scene can show; for a fixed window."""
        return float(self._thermal_bg.min()) - 1.0, max(w.skin for w in self._walkers) + 20.0

    # -- scene layout --------------------------------------------------------------------
    def _cast(self) -> tuple[list[_Walker], list[_Vehicle]]:
        rng = self._rng
        coats = [(0.10, 0.12, 0.16), (0.22, 0.10, 0.08), (0.12, 0.14, 0.10), (0.30, 0.28, 0.32)]
        walkers = [
            _Walker(x0=float(rng.uniform(0.05, 0.95)), speed=float(rng.choice([-1, 1]) * rng.uniform(0.04, 0.09)),
                    ground=float(g), skin=float(rng.uniform(31.0, 34.5)), coat=coats[i % len(coats)])
            for i, g in enumerate((0.62, 0.74, 0.90, 0.97))
        ]
        vehicles = [
            _Vehicle(x0=float(rng.uniform(0.0, 1.0)), speed=0.16, ground=0.80, paint=(0.55, 0.08, 0.07), engine=62.0),
            _Vehicle(x0=float(rng.uniform(0.0, 1.0)), speed=-0.11, ground=0.66, paint=(0.10, 0.22, 0.50), engine=48.0),
        ]
        return walkers, vehicles

    def _background(self) -> tuple[np.ndarray, np.ndarray]:
        h, w, rng = self.height, self.width, self._rng
        y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        sky = y < self.horizon
        # Thermal: a cold sky that warms towards the horizon; ground at ~9 C with smooth patches.
        temperature = np.where(sky, -18.0 + 22.0 * (y / self.horizon) ** 2, 9.0 + 3.0 * (y - self.horizon))
        temperature = np.broadcast_to(temperature, (h, w)).astype(np.float32).copy()
        temperature += np.where(sky, 0.0, 1.5 * _smooth_noise(rng, h, w, scale=8))
        visible = np.zeros((h, w, 3), np.float32)
        visible[:] = np.where(sky[..., None], [0.10, 0.13, 0.22], [0.16, 0.17, 0.14])
        visible += np.where(sky, 0.0, 0.06 * _smooth_noise(rng, h, w, scale=3))[..., None]
        # Road: a darker, slightly warmer (it held the day's heat) band.
        top, bottom = int(0.60 * h), int(0.86 * h)
        visible[top:bottom] = [0.11, 0.11, 0.12]
        temperature[top:bottom] += 3.0
        for x in range(0, w, max(8, w // 10)):  # lane marks: bright paint, no thermal contrast
            cv2.rectangle(visible, (x, int(0.73 * h)), (x + max(3, w // 25), int(0.735 * h) + 1), (0.55, 0.55, 0.5), -1)
        # Buildings on the horizon with lit windows (colour the thermal camera cannot see).
        x = 0
        while x < w:
            bw = int(rng.uniform(0.12, 0.22) * w)
            bh = int(rng.uniform(0.12, 0.32) * h)
            y0, y1 = int(self.horizon * h) - bh, int(self.horizon * h) + int(0.18 * h)
            shade = rng.uniform(0.16, 0.26)
            cv2.rectangle(visible, (x, y0), (x + bw, y1), (shade, shade * 0.9, shade * 0.85), -1)
            cv2.rectangle(temperature, (x, y0), (x + bw, y1), float(rng.uniform(6.0, 9.0)), -1)
            step = max(4, bw // 5)
            for wx in range(x + step // 2, x + bw - step // 2, step):
                for wy in range(y0 + step // 2, y1 - step, step):
                    if rng.random() < 0.45:
                        colour = (0.95, 0.78, 0.35) if rng.random() < 0.7 else (0.55, 0.75, 0.95)
                        corner = (wx + max(1, step // 3), wy + max(1, step // 3))
                        cv2.rectangle(visible, (wx, wy), corner, colour, -1)
                        cv2.rectangle(temperature, (wx, wy), corner, 14.0, -1)
            x += bw + int(rng.uniform(0.0, 0.05) * w)
        # Street lamps: bright in the visible, a small warm spot in the thermal.
        for lx in np.linspace(0.1, 0.9, 4):
            px, top_y, foot = int(lx * w), int(0.30 * h), int(0.62 * h)
            cv2.line(visible, (px, top_y), (px, foot), (0.08, 0.08, 0.08), max(1, w // 160))
            cv2.circle(visible, (px, top_y), max(2, w // 60), (1.0, 0.85, 0.55), -1)
            cv2.circle(temperature, (px, top_y), max(1, w // 90), 38.0, -1)
        return temperature, visible

    # -- moving things ------------------------------------------------------------------
    def _scale(self, ground: float) -> float:
        """Apparent size of a 1.7 m person standing at ``ground`` (perspective: bigger when nearer)."""
        near = (ground - self.horizon) / (1.0 - self.horizon)
        return self.height * (0.10 + 0.26 * near)

    def _x(self, x0: float, speed: float, t: float, margin: float) -> float:
        span = 1.0 + 2 * margin
        return ((x0 + speed * t + margin) % span - margin) * self.width

    def _draw_walker(self, p: _Walker, t: float, temperature: np.ndarray, visible: np.ndarray) -> None:
        size = self._scale(p.ground)
        cx = self._x(p.x0, p.speed, t, margin=0.1)
        foot = p.ground * self.height + 0.02 * size * np.sin(2 * np.pi * 1.8 * t + p.x0 * 10)
        head_r = max(1, int(0.09 * size))
        body_w, body_h = max(1, int(0.16 * size)), max(2, int(0.34 * size))
        body_c = (int(cx), int(foot - 0.52 * size))
        head_c = (int(cx), int(foot - 0.92 * size))
        stride = 0.12 * size * np.sin(2 * np.pi * 1.8 * t + p.x0 * 10)
        legs = [((int(cx), int(foot - 0.3 * size)), (int(cx + s), int(foot))) for s in (stride, -stride)]
        thick = max(1, int(0.07 * size))
        # Thermal: clothing a few degrees under skin, face and hands warmest.
        cv2.ellipse(temperature, body_c, (body_w, body_h), 0, 0, 360, p.skin - 6.0, -1)
        for a, b in legs:
            cv2.line(temperature, a, b, p.skin - 8.0, thick)
        cv2.circle(temperature, head_c, head_r, p.skin, -1)
        # Visible: dark clothes, barely lit; a dim face.
        cv2.ellipse(visible, body_c, (body_w, body_h), 0, 0, 360, p.coat, -1)
        for a, b in legs:
            cv2.line(visible, a, b, tuple(0.7 * c for c in p.coat), thick)
        cv2.circle(visible, head_c, head_r, (0.30, 0.22, 0.18), -1)

    def _draw_vehicle(self, v: _Vehicle, t: float, temperature: np.ndarray, visible: np.ndarray) -> None:
        size = self._scale(v.ground)
        length, height = 1.5 * size, 0.45 * size
        cx = self._x(v.x0, v.speed, t, margin=0.25)
        ground = v.ground * self.height
        facing = 1 if v.speed > 0 else -1
        x0, x1 = int(cx - length / 2), int(cx + length / 2)
        body_top = int(ground - 0.75 * height)
        cabin = (int(cx - 0.25 * length * facing), int(ground - 1.1 * height))
        cv2.rectangle(temperature, (x0, body_top), (x1, int(ground - 0.15 * height)), 21.0, -1)
        cv2.ellipse(temperature, cabin, (int(0.28 * length), int(0.4 * height)), 0, 180, 360, 18.0, -1)
        hood = (int(cx + 0.32 * length * facing), int(ground - 0.5 * height))
        cv2.ellipse(temperature, hood, (int(0.16 * length), int(0.22 * height)), 0, 0, 360, v.engine, -1)
        exhaust = (int(cx - 0.5 * length * facing), int(ground - 0.2 * height))
        cv2.circle(temperature, exhaust, max(1, int(0.09 * height)), v.engine + 25.0, -1)
        wheels = [int(cx + f * 0.3 * length) for f in (-1, 1)]
        for wx in wheels:
            cv2.circle(temperature, (wx, int(ground - 0.12 * height)), max(1, int(0.2 * height)), 30.0, -1)
        cv2.rectangle(visible, (x0, body_top), (x1, int(ground - 0.15 * height)), v.paint, -1)
        cv2.ellipse(visible, cabin, (int(0.28 * length), int(0.4 * height)), 0, 180, 360,
                    tuple(0.6 * c for c in v.paint), -1)
        cv2.ellipse(visible, cabin, (int(0.22 * length), int(0.3 * height)), 0, 180, 360, (0.05, 0.06, 0.08), -1)
        for wx in wheels:
            cv2.circle(visible, (wx, int(ground - 0.12 * height)), max(1, int(0.2 * height)), (0.03, 0.03, 0.03), -1)
        lamp = (int(cx + 0.5 * length * facing), int(ground - 0.45 * height))
        cv2.circle(visible, lamp, max(1, int(0.12 * height)), (1.0, 0.97, 0.85) if facing > 0 else (0.9, 0.1, 0.05), -1)

    # -- the cameras ----------------------------------------------------------------------
    def _thermal_camera(self, temperature: np.ndarray, t: float) -> np.ndarray:
        """Optics blur, a little sensor noise, centikelvin counts."""
        rng = np.random.default_rng((self.seed, int(round(t * 1e6))))
        sigma = max(0.6, self.width / 400)
        blurred = cv2.GaussianBlur(temperature, (0, 0), sigma)
        noisy = blurred + rng.normal(0.0, 0.08, blurred.shape).astype(np.float32)
        return np.clip((noisy + KELVIN) * 100.0, 0, 65535).astype(np.uint16)

    def _visible_camera(self, radiance: np.ndarray, t: float) -> np.ndarray:
        """Night exposure (dark), fog veiling the far street, gamma, shot noise; uint8 RGB."""
        rng = np.random.default_rng((self.seed, int(round(t * 1e6)), 1))
        fog_colour = np.array([0.42, 0.44, 0.47], np.float32)
        seen = radiance * (1.0 - self._fog_amount) + fog_colour * self._fog_amount
        seen = np.clip(seen * self.light, 0.0, 1.0) ** (1 / 2.2)
        seen = seen + rng.normal(0.0, 0.015, seen.shape).astype(np.float32)
        return (np.clip(seen, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Zero-mean, unit-ish spatially smooth noise (coarse random grid, cubic upsampling)."""
    coarse = rng.standard_normal((max(2, h // (4 * scale)), max(2, w // (4 * scale)))).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def sequence(n_frames: int, rate_hz: float = 10.0, width: int = 320, height: int = 256, seed: int = 0,
             start_ns: int = 1_700_000_000 * NS_PER_S, thermal_offset_s: float = 0.004) -> Iterator[ScenePair]:
    """``n_frames`` pairs at ``rate_hz``; the thermal camera fires ``thermal_offset_s`` after the visible one.

    The offset (a few ms, as with two free-running cameras) is well inside the node's default
    slop, so every pair matches, but the pairer still has to pick partners by time.
    """
    if n_frames < 1 or rate_hz <= 0:
        raise ValueError(f"need n_frames >= 1 and rate_hz > 0, got {n_frames}, {rate_hz}")
    scene = SyntheticScene(width, height, seed)
    period_ns = int(round(NS_PER_S / rate_hz))
    offset_ns = int(round(thermal_offset_s * NS_PER_S))
    for i in range(n_frames):
        stamp = start_ns + i * period_ns
        thermal, visible = scene.render(i * period_ns / NS_PER_S)
        yield ScenePair(thermal, visible, stamp + offset_ns, stamp)
