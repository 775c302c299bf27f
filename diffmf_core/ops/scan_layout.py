"""Token-major scan tensors: (Bt, channels, L) views of (Bt, L, channels) memory, and who should hand them over.

A channels-last model holds its maps token-major; the contract's u, delta and y are (Bt, channels, L). Backends
that read token-major in place save the model a transposing copy of each (and themselves strided gathers: the
CPU kernel's 16 channel lanes of a token become one contiguous load in every scan direction). The others make
their inputs contiguous, so the layout never changes a result, only what it costs.
"""

from __future__ import annotations

import os

import torch

from .selective_scan import resolve_backend

LAYOUT_ENV = "DIFFMF_SCAN_LAYOUT"
LAYOUTS = ("auto", "token_major", "channel_major")


def is_token_major(t: torch.Tensor) -> bool:
    """A (Bt, channels, L) view of (Bt, L, channels) memory, e.g. ``x.transpose(1, 2)`` of a channels-last x."""
    bt, c, L = t.shape
    return c > 1 and L > 1 and t.stride(1) == 1 and t.stride(2) == c and (bt == 1 or t.stride(0) == c * L)


def as_token_major(t: torch.Tensor) -> torch.Tensor:
    """The same (Bt, channels, L) values laid out token-major (a copy unless they already are)."""
    return t if is_token_major(t) else t.transpose(1, 2).contiguous().transpose(1, 2)


def scan_token_major(device: torch.device, backend: str | None = None, needs_grad: bool = False) -> bool:
    """Whether a model should hand this device's scan token-major u and delta (and take y back so).

    ``$DIFFMF_SCAN_LAYOUT``: ``token_major`` / ``channel_major`` force a layout; ``auto`` (default) asks the
    backend (its module's ``prefers_token_major(needs_grad)``; none = channel-major)."""
    layout = os.environ.get(LAYOUT_ENV) or "auto"
    if layout not in LAYOUTS:
        raise ValueError(f"{LAYOUT_ENV} must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if layout != "auto":
        return layout == "token_major"
    return resolve_backend(backend, device).prefers_token_major(needs_grad)


def model_memory_format(device: torch.device, backend: str | None = None,
                        needs_grad: bool = False) -> torch.memory_format:
    """channels_last where the scan takes token-major tensors (the network's convolutions then hand SS2D
    (B, L, C) memory without copies), else contiguous. For a model's weights and its input images."""
    return torch.channels_last if scan_token_major(device, backend, needs_grad) else torch.contiguous_format
