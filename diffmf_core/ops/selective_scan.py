"""The one selective-scan entry point every SSM layer calls; backends live beneath it.

Backends (name: where it runs):
    reference  pure PyTorch, any device; the oracle (ops/scan_reference.py)
    cpu        native CPU kernel from diffmf_kernels
    triton     fused Triton kernel from diffmf_kernels, CUDA
    mamba      mamba-ssm's compiled CUDA scan (selective_scan_cuda), when it loads

Choice: the ``backend`` argument, else ``$DIFFMF_SCAN_BACKEND``, else automatic
(CUDA: mamba -> triton -> reference; CPU: cpu -> reference). mamba-ssm's kernel goes
first where it loads because it measured faster than ours (bench/RESULTS.md). An explicitly named
backend that cannot run raises; the automatic choice is logged once per device type.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .scan_reference import selective_scan_reference

log = logging.getLogger("diffmf_core.scan")

BACKEND_ENV = "DIFFMF_SCAN_BACKEND"
BACKENDS = ("reference", "cpu", "triton", "mamba")
_AUTO_ORDER = {"cuda": ("mamba", "triton", "reference"), "cpu": ("cpu", "reference")}


class ScanBackendError(RuntimeError):
    """A scan backend was asked for by name but cannot run here."""


def _channel_major(needs_grad: bool) -> bool:
    return False


@dataclass(frozen=True)
class Backend:
    name: str
    fn: Callable[..., torch.Tensor]
    # (needs_grad) -> whether it reads token-major u/delta in place and pays less so (ops/scan_layout.py)
    prefers_token_major: Callable[[bool], bool] = _channel_major


def _load(name: str, device: torch.device) -> Backend:
    """Return the backend or raise ScanBackendError saying why it cannot run on ``device``."""
    if name == "reference":
        return Backend(name, selective_scan_reference)
    if name in ("cpu", "triton", "mamba"):
        want = "cpu" if name == "cpu" else "cuda"
        if device.type != want:
            raise ScanBackendError(f"scan backend '{name}' runs on {want} tensors, got {device.type}")
        try:
            mod = importlib.import_module(f"diffmf_kernels.{name}_scan")
        except ImportError as exc:
            raise ScanBackendError(f"scan backend '{name}' unavailable: {exc}") from exc
        reason = mod.unavailable_reason()
        if reason:
            raise ScanBackendError(f"scan backend '{name}' unavailable: {reason}")
        return Backend(name, mod.selective_scan, getattr(mod, "prefers_token_major", _channel_major))
    raise ScanBackendError(f"unknown scan backend {name!r}; choose one of {', '.join(BACKENDS)}")


_resolved: dict[tuple[str | None, str], Backend] = {}


def resolve_backend(backend: str | None, device: torch.device) -> Backend:
    """Pick (and cache) the backend for ``device``; see the module docstring for the rule."""
    requested = backend or os.environ.get(BACKEND_ENV) or None
    key = (requested, device.type)
    if key in _resolved:
        return _resolved[key]
    if requested:
        chosen = _load(requested, device)
        log.info("selective scan backend: %s (requested) on %s", chosen.name, device.type)
    else:
        skipped = []
        for name in _AUTO_ORDER.get(device.type, ("reference",)):
            try:
                chosen = _load(name, device)
                break
            except ScanBackendError as exc:
                skipped.append(str(exc))
        if skipped and chosen.name == "reference":
            log.warning("selective scan falls back to the pure-PyTorch reference on %s (%s)",
                        device.type, "; ".join(skipped))
        log.info("selective scan backend: %s (automatic) on %s", chosen.name, device.type)
    _resolved[key] = chosen
    return chosen


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                   delta_softplus: bool = True, backend: str | None = None,
                   orders: torch.Tensor | None = None) -> torch.Tensor:
    """Selective scan in VMamba's layout, on the chosen backend.

    Without ``orders``: u, delta (Bt, K*Dm, L); A (K*Dm, N); B, C (Bt, K, N, L);
    D, delta_bias (K*Dm). Channel c belongs to direction/group k = c // Dm.

    With ``orders`` (K, L) integer permutations: u is (Bt, Dm, L) in raster order and
    shared by the K directions; delta (Bt, K*Dm, L), B and C are in raster order too;
    direction k visits raster tokens ``orders[k, 0], orders[k, 1], ...``. The output is
    (Bt, K*Dm, L) in raster order. This lets a backend read flipped / transposed /
    interleaved scan orders by index instead of materialising copies.

    Returns y in u's dtype; the state is always accumulated in at least float32.
    """
    check_scan_shapes(u, delta, A, B, C, D, delta_bias, orders)
    chosen = resolve_backend(backend, u.device)
    return chosen.fn(u, delta, A, B, C, D, delta_bias, delta_softplus, orders)


def check_scan_shapes(u, delta, A, B, C, D=None, delta_bias=None, orders=None,
                      who: str = "selective_scan") -> tuple[int, int, int, int, int]:
    """Validate the contract's shapes (one place for every backend); returns (Bt, K, Dm, N, L).

    Kernels index these tensors blindly, so a wrong shape must fail here, not crash there.
    """
    if B.dim() != 4 or C.shape != B.shape:
        raise ValueError(f"{who}: B and C must both be (batch, K, N, L); got {tuple(B.shape)} and {tuple(C.shape)}")
    bt, K, N, L = B.shape
    kd = A.shape[0]
    if A.dim() != 2 or A.shape[1] != N or kd % K:
        raise ValueError(f"{who}: A must be (K*Dm, N) with K={K}, N={N}; got {tuple(A.shape)}")
    dm = kd // K
    u_shape = (bt, dm, L) if orders is not None else (bt, kd, L)
    if tuple(u.shape) != u_shape:
        raise ValueError(f"{who}: u must be {u_shape}; got {tuple(u.shape)}")
    if tuple(delta.shape) != (bt, kd, L):
        raise ValueError(f"{who}: delta must be {(bt, kd, L)}; got {tuple(delta.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (kd,):
            raise ValueError(f"{who}: {name} must be ({kd},); got {tuple(t.shape)}")
    if orders is not None and (tuple(orders.shape) != (K, L) or orders.dtype.is_floating_point
                               or orders.dtype.is_complex):
        raise ValueError(f"{who}: orders must be an integer (K, L) = {(K, L)} tensor; "
                         f"got {orders.dtype} {tuple(orders.shape)}")
    return bt, K, dm, N, L
