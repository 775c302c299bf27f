"""Pure-PyTorch selective scan: the oracle every fast backend is tested against.

The recurrence (Mamba / VMamba), per batch b, channel c (direction k = c // Dm), state n:

    dt_t  = softplus(delta_t + delta_bias)            (if delta_softplus)
    h_t   = exp(dt_t * A[c, n]) * h_{t-1} + dt_t * B[b, k, n, t] * u_t
    y_t   = sum_n C[b, k, n, t] * h_t + D[c] * u_t

It is written as the plain recurrence, vectorised over batch, channels and state:
obviously right, exact under autograd, and (measured on the 2-core box) faster than the
chunked and log-depth pure-PyTorch formulations we tried. It is slow all the same
(a Python step per token): the fast paths are the kernels in diffmf_kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_orders(u: torch.Tensor, delta: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  orders: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn the raster-order layout (shared u, per-direction orders) into the VMamba layout."""
    b, dm, L = u.shape
    K = orders.shape[0]
    idx = orders.to(device=u.device, dtype=torch.long)
    us = u[:, :, idx].permute(0, 2, 1, 3).reshape(b, K * dm, L)  # (b, K, dm, L) in scan order
    ds = torch.gather(delta.view(b, K, dm, L), 3, idx.view(1, K, 1, L).expand(b, K, dm, L)).reshape(b, K * dm, L)
    n = B.shape[2]
    bs = torch.gather(B, 3, idx.view(1, K, 1, L).expand(b, K, n, L))
    cs = torch.gather(C, 3, idx.view(1, K, 1, L).expand(b, K, n, L))
    return us, ds, bs, cs


def scatter_orders(y: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Inverse of gather_orders for the output: scan order back to raster order."""
    b, kd, L = y.shape
    K = orders.shape[0]
    idx = orders.to(device=y.device, dtype=torch.long)
    out = torch.empty_like(y).view(b, K, kd // K, L)
    out.scatter_(3, idx.view(1, K, 1, L).expand(b, K, kd // K, L), y.view(b, K, kd // K, L))
    return out.view(b, kd, L)


def selective_scan_reference(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor, D: torch.Tensor | None = None,
                             delta_bias: torch.Tensor | None = None, delta_softplus: bool = True,
                             orders: torch.Tensor | None = None) -> torch.Tensor:
    """Reference scan; same contract as :func:`diffmf_core.ops.selective_scan`."""
    out_dtype = u.dtype
    if orders is not None:
        u, delta, B, C = gather_orders(u, delta, B, C, orders)
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    b, kd, L = u.shape
    K = B.shape[1]
    uf = u.to(work)
    dt = delta.to(work)
    if delta_bias is not None:
        dt = dt + delta_bias.to(work)[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    decay = torch.exp(dt.unsqueeze(-1) * A.to(work)[None, :, None, :])  # (b, kd, L, N)
    # B and C belong to direction/group k; every channel of that group shares them.
    Bc = B.to(work).repeat_interleave(kd // K, dim=1)  # (b, kd, N, L)
    Cc = C.to(work).repeat_interleave(kd // K, dim=1)
    inp = (dt * uf).unsqueeze(-1) * Bc.transpose(-1, -2)  # (b, kd, L, N)
    h = uf.new_zeros(b, kd, A.shape[1])
    ys = []
    for t in range(L):
        h = decay[:, :, t] * h + inp[:, :, t]
        ys.append((h * Cc[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(work)[None, :, None] * uf
    y = y.to(out_dtype)
    return scatter_orders(y, orders) if orders is not None else y
