"""FusionEngine: the one object the node, the CLIs and the benchmarks fuse through.

It owns device and dtype choice, warm-up, inference mode, colour handling and (on CUDA)
one captured CUDA graph per frame size, so a camera stream pays the Python/launch cost of
the ~hundreds of small kernels once instead of every frame.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_model
from .colour import luma, recombine
from .config import get_config
from .model import DiffMF
from .ops import model_memory_format, resolve_backend

log = logging.getLogger("diffmf_core.engine")

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def default_checkpoint(preset: str = "tiny") -> Path | None:
    """The shipped weights for ``preset``, if this install has them."""
    path = WEIGHTS_DIR / f"{preset}.safetensors"
    return path if path.is_file() else None


def pick_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of float32, bfloat16, float16")
    return DTYPES[dtype]


class FusionEngine:
    """Load a DIFF-MF model once and fuse frames of any size.

    ``checkpoint``: a .safetensors file (or legacy .pth with ``preset``); None loads the
    shipped weights of ``preset`` (default 'tiny'), or, where none are shipped, a freshly
    initialised network with a warning.
    """

    def __init__(self, checkpoint: str | os.PathLike | None = None, preset: str | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                 cuda_graphs: bool = True, max_graphs: int = 4) -> None:
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        if self.device.type == "cpu" and self.dtype != torch.float32:
            log.warning("dtype %s on CPU is slow and imprecise; consider float32", self.dtype)
        self.checkpoint: Path | None = None
        if checkpoint:
            self.checkpoint = Path(checkpoint)
            model = load_model(self.checkpoint, preset=preset if self.checkpoint.suffix != ".safetensors" else None)
        else:
            self.checkpoint = default_checkpoint(preset or "tiny")
            if self.checkpoint is not None:
                model = load_model(self.checkpoint)
            else:
                log.warning("no trained weights shipped for preset %r: fusing with an untrained network",
                            preset or "tiny")
                model = DiffMF(get_config(preset or "tiny"))
        self.backend = resolve_backend(model.config.scan_backend, self.device).name
        # channels-last where the scan reads token-major tensors: on the 2-core CPU box the tiny model's 640x512
        # frame took 566 against 641 ms (median of 8) for the same weights channels-last (bench/RESULTS.md)
        self.memory_format = model_memory_format(self.device, self.backend)
        self.model = model.to(self.device, self.dtype, memory_format=self.memory_format).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.config = self.model.config
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: OrderedDict[tuple, _CapturedForward] = OrderedDict()
        self._max_graphs = max_graphs
        log.info("FusionEngine: %s", self.describe())

    # -- public -------------------------------------------------------------------------
    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        """Fuse one registered pair. ir: (H, W) [or (H, W, 1|3)]; vi: (H, W) or (H, W, 3) RGB.

        uint8, uint16 and float-in-[0, 1] inputs; returns uint8 (H, W), or (H, W, 3) RGB when
        the visible image is colour (fused luma with the visible chroma).
        """
        ir, vi = _check_pair(ir, vi)
        with torch.inference_mode():
            ir_t = _to_unit_tensor(ir, self.device)
            vi_t = _to_unit_tensor(vi, self.device)
            if ir_t.dim() == 3:  # colour-mapped or 3-channel gray thermal: use its luma
                ir_t = luma(ir_t.permute(2, 0, 1)).squeeze(0)
            colour = vi_t.dim() == 3
            vi_rgb = vi_t.permute(2, 0, 1) if colour else None
            vi_y = luma(vi_rgb).squeeze(0) if colour else vi_t
            fused = self._forward(ir_t[None, None], vi_y[None, None])[0].float()  # (1, H, W)
            out = recombine(fused, vi_rgb).permute(1, 2, 0) if colour else fused[0]
            return (out.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()

    def warmup(self, height: int = 256, width: int = 320, iterations: int = 2) -> float:
        """Run the model on random frames of this size (captures the CUDA graph); returns seconds taken."""
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(iterations):
            self.fuse(rng.random((height, width), np.float32), rng.random((height, width, 3), np.float32))
        return time.perf_counter() - start

    def describe(self) -> str:
        info = self.info()
        return (f"device={info['device']} dtype={info['dtype']} scan={info['scan_backend']} ({info['scan_layout']}) "
                f"params={info['parameters']:,} weights={info['checkpoint']}")

    def info(self) -> dict:
        return {
            "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "scan_backend": self.backend,
            # how SS2D / the SSD hand the scan u, delta and y (ops/scan_layout.py)
            "scan_layout": "token-major" if self.memory_format == torch.channels_last else "channel-major",
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "checkpoint": str(self.checkpoint) if self.checkpoint else "untrained",
            "cuda_graphs": self.use_graphs,
            "stride": self.config.stride,
        }

    # -- internals ----------------------------------------------------------------------
    def _forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        ir, vi = (t.to(self.dtype).contiguous(memory_format=self.memory_format) for t in (ir, vi))
        if not self.use_graphs:
            return self.model(ir, vi)
        key = tuple(ir.shape)
        graph = self._graphs.get(key)
        if graph is None:
            try:
                graph = _CapturedForward(self.model, ir, vi)
            except RuntimeError as exc:
                log.warning("CUDA graph capture failed (%s); running eagerly from now on", exc)
                self.use_graphs = False
                return self.model(ir, vi)
            self._graphs[key] = graph
            if len(self._graphs) > self._max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return graph(ir, vi)


class _CapturedForward:
    """One CUDA graph of the model's forward for a fixed input shape."""

    def __init__(self, model: DiffMF, ir: torch.Tensor, vi: torch.Tensor) -> None:
        self.ir, self.vi = ir.clone(), vi.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # let lazy init (cuDNN plans, Triton compiles) happen outside the capture
                model(self.ir, self.vi)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = model(self.ir, self.vi)

    def __call__(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        self.ir.copy_(ir)
        self.vi.copy_(vi)
        self.graph.replay()
        return self.out.clone()


def _check_pair(ir: np.ndarray, vi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ir, vi = np.asarray(ir), np.asarray(vi)
    if ir.ndim == 3 and ir.shape[2] == 1:
        ir = ir[:, :, 0]
    if vi.ndim == 3 and vi.shape[2] == 1:
        vi = vi[:, :, 0]
    for name, img in (("thermal", ir), ("visible", vi)):
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
            raise ValueError(f"{name} image must be (H, W) or (H, W, 3); got shape {img.shape}")
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise ValueError(f"{name} image is empty (shape {img.shape})")
    if ir.shape[:2] != vi.shape[:2]:
        raise ValueError(f"thermal {ir.shape[1]}x{ir.shape[0]} and visible {vi.shape[1]}x{vi.shape[0]} differ "
                         "in size; register them first (the ROS node's `registration` parameter does this)")
    return ir, vi


def _to_unit_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    """Upload at the source bit depth and scale on the device (less to copy than float32)."""
    if img.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(img)).to(device).float().mul_(1.0 / 255.0)
    if img.dtype == np.uint16:
        t = torch.from_numpy(np.ascontiguousarray(img).view(np.int16)).to(device).to(torch.int32)
        return t.bitwise_and_(0xFFFF).float().mul_(1.0 / 65535.0)
    if np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise ValueError("image contains NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).to(device).clamp_(0.0, 1.0)
    raise ValueError(f"unsupported image dtype {img.dtype}; use uint8, uint16 or float in [0, 1]")
