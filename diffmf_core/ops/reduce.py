"""Sums over a short dimension, written as elementwise adds of its slices."""

from __future__ import annotations

import torch


def sum_slices(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t.sum(dim)`` for a short ``dim``, as adds of its slices: dense, in the slices' memory order.

    torch's sum over a short leading or middle dimension zero-fills its output and strides through the input:
    on the 2-core CPU box 2.5 ms against 0.5 for (1, 10240, 4, 32) over the 4 (the scan's directions), 0.7
    against 0.25 for two channel blocks of the CPU scan's dB. The slices are added in order (0 + 1) + 2 ...;
    autograd goes through it like through sum."""
    out = t.select(dim, 0)
    if t.shape[dim] > 1:
        out = out + t.select(dim, 1)
        for i in range(2, t.shape[dim]):
            out = out.add_(t.select(dim, i))
    return out
