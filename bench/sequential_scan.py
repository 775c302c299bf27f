"""The textbook selective scan: one PyTorch step per token (the baseline the CPU kernel is measured against).

This is the shape of the "reference" scans that ship with Mamba-style code: discretise
everything up front (exp(dt*A) and dt*B*u for all L steps), then walk L in a Python loop
with one multiply-add on the (batch, channels, N) state per step. VMamba layout only
(no ``orders``); it exists for benchmarks, not for the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_sequential(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                              C: torch.Tensor, D: torch.Tensor | None = None,
                              delta_bias: torch.Tensor | None = None, delta_softplus: bool = True) -> torch.Tensor:
    """u, delta (Bt, K*Dm, L); A (K*Dm, N); B, C (Bt, K, N, L); D, delta_bias (K*Dm,). fp32 state."""
    bt, kd, L = u.shape
    K, N = B.shape[1], A.shape[1]
    uf, dt = u.float(), delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    # Each channel reads its direction's B and C.
    Bx = B.float().repeat_interleave(kd // K, dim=1)  # (Bt, KD, N, L)
    Cx = C.float().repeat_interleave(kd // K, dim=1)
    dA = torch.exp(dt.unsqueeze(2) * A.float()[None, :, :, None])  # (Bt, KD, N, L)
    dBu = (dt * uf).unsqueeze(2) * Bx
    h = uf.new_zeros(bt, kd, N)
    ys = []
    for t in range(L):
        h = dA[..., t] * h + dBu[..., t]
        ys.append(torch.einsum("bdn,bdn->bd", h, Cx[..., t]))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + D.float()[None, :, None] * uf
    return y.to(u.dtype)
