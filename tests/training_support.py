"""Generated infrared/visible pairs and small training options shared by the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

# A network small enough that a training iteration on 16x16 crops takes a fraction of a second on CPU.
TINY_NET = {"preset": "tiny", "dim": 8, "stem_dim": 4, "d_state": 4, "sem_levels": 1, "ce_d_state": 4}


def scene_pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Float [0, 1] (ir, vi) with structure: warm blobs in the ir, texture and shading in the vi."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ir = np.full((h, w), 0.15, np.float32)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, max(3, h / 4))
        ir += 0.7 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    fx, fy = rng.uniform(0.2, 0.8, size=2)
    vi = 0.45 + 0.25 * np.sin(fx * xx) * np.cos(fy * yy) + 0.2 * (xx / w)
    return np.clip(ir, 0, 1), np.clip(vi, 0, 1)


def write_pairs(root: Path, n: int = 4, size: tuple[int, int] = (24, 28), colour: bool = False,
                sixteen_bit: bool = False, seed: int = 0, names: list[str] | None = None,
                ir_dir: str = "ir", vi_dir: str = "vi") -> list[str]:
    """Write n pairs as PNG under root/{ir,vi}; returns the stems."""
    rng = np.random.default_rng(seed)
    (root / ir_dir).mkdir(parents=True, exist_ok=True)
    (root / vi_dir).mkdir(parents=True, exist_ok=True)
    names = names or [f"{i:02d}" for i in range(n)]
    for name in names:
        ir, vi = scene_pair(rng, *size)
        scale, dtype = (65535, np.uint16) if sixteen_bit else (255, np.uint8)
        cv2.imwrite(str(root / ir_dir / f"{name}.png"), (ir * scale + 0.5).astype(dtype))
        if colour:
            tint = np.stack([vi * 0.8, vi, np.clip(vi * 1.2, 0, 1)], -1)  # RGB
            cv2.imwrite(str(root / vi_dir / f"{name}.png"), (tint[:, :, ::-1] * scale + 0.5).astype(dtype))
        else:
            cv2.imwrite(str(root / vi_dir / f"{name}.png"), (vi * scale + 0.5).astype(dtype))
    return names


def small_options(root: Path, dataroots: list[Path], **train: object) -> dict:
    """Options (as a file would hold them) for a few fast CPU iterations."""
    opt = {
        "task": "unit",
        "path": {"root": str(root)},
        "datasets": {"train": {"dataroot": [str(d) for d in dataroots], "H_size": 16, "batch_size": 2,
                               "num_workers": 0}},
        "netG": dict(TINY_NET),
        "train": {"max_iter": 4, "checkpoint_save": 2, "checkpoint_print": 2, "checkpoint_image": 1000,
                  "tensorboard": False, "G_scheduler_milestones": [3], **train},
    }
    return opt


def write_options(path: Path, opt: dict) -> Path:
    path.write_text(json.dumps(opt, indent=1), encoding="utf-8")
    return path
