"""Real thermal/visible pairs from ``../shared/data`` (beside the checkout) turned into a short camera sequence.

The demo can use them instead of the generated scene (``diffmf_demo --source shared``). Each
pair is a still photograph, so the "camera" pans slowly across it, a few seconds per pair;
thermal and visible crops move together, so the two stay registered. Night pairs of MSRS
(file names ending in N) come first: that is where fusion helps most.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from diffmf_core.images import read_image

from .synthetic_scene import NS_PER_S, ScenePair

__all__ = ["find_shared_data", "panning_sequence"]


def find_shared_data() -> Path | None:
    """``$DIFFMF_SHARED_DATA``, else ``../shared/data`` beside the checkout; None when absent."""
    env = os.environ.get("DIFFMF_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root if root.is_dir() else None


def _pick(root: Path, subset: str, count: int) -> list[tuple[Path, Path]]:
    ir_dir, vi_dir = root / subset / "ir", root / subset / "vi"
    if not ir_dir.is_dir() or not vi_dir.is_dir():
        raise FileNotFoundError(f"{root / subset}: no ir/ and vi/ folders")
    names = sorted(p.name for p in ir_dir.iterdir() if (vi_dir / p.name).is_file())
    night = [n for n in names if Path(n).stem.endswith("N")]
    ordered = night if len(night) >= count else night + [n for n in names if n not in night]
    if not ordered:
        raise FileNotFoundError(f"{root / subset}: no pairs (same file name in ir/ and vi/)")
    picks = [ordered[int(i)] for i in np.linspace(0, len(ordered) - 1, min(count, len(ordered)))]
    return [(ir_dir / n, vi_dir / n) for n in picks]


def _crop(image: np.ndarray, x: int, y: int, w: int, h: int, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(image[y:y + h, x:x + w], size, interpolation=cv2.INTER_AREA)


def panning_sequence(root: Path, n_frames: int, rate_hz: float, width: int, height: int, subset: str = "MSRS",
                     pairs: int = 4, start_ns: int = 1_700_000_000 * NS_PER_S,
                     thermal_offset_s: float = 0.004) -> list[ScenePair]:
    """``n_frames`` frames at ``rate_hz`` panning over up to ``pairs`` real pairs of ``subset``."""
    if n_frames < 1 or rate_hz <= 0:
        raise ValueError(f"need n_frames >= 1 and rate_hz > 0, got {n_frames}, {rate_hz}")
    sources = _pick(root, subset, min(pairs, n_frames))
    per_pair = np.array_split(np.arange(n_frames), len(sources))
    period_ns = int(round(NS_PER_S / rate_hz))
    offset_ns = int(round(thermal_offset_s * NS_PER_S))
    out: list[ScenePair] = []
    for (ir_path, vi_path), indices in zip(sources, per_pair):
        ir, vi = read_image(ir_path), read_image(vi_path)
        if ir.ndim == 3:
            ir = cv2.cvtColor(ir, cv2.COLOR_RGB2GRAY)
        if vi.ndim == 2:
            vi = cv2.cvtColor(vi, cv2.COLOR_GRAY2RGB)
        h_img, w_img = ir.shape[:2]
        # The largest window of the output's aspect ratio that leaves room to pan sideways.
        crop_h = min(h_img, int(0.9 * w_img * height / width))
        crop_w = min(w_img, int(round(crop_h * width / height)))
        y = (h_img - crop_h) // 2
        for step, i in enumerate(indices):
            x = int(round((w_img - crop_w) * (step / max(1, len(indices) - 1))))
            stamp = start_ns + int(i) * period_ns
            out.append(ScenePair(_crop(ir, x, y, crop_w, crop_h, (width, height)),
                                 _crop(vi, x, y, crop_w, crop_h, (width, height)), stamp + offset_ns, stamp))
    return out
