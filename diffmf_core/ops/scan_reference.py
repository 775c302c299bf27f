"""Pure-PyTorch selective scan: the oracle every fast backend is tested against.

The recurrence (Mamba / VMamba), per batch b, channel c (direction k = c // Dm), state n:

    dt_t  = softplus(delta_t + delta_bias)            (if delta_softplus)
    h_t   = exp(dt_t * A[c, n]) * h_{t-1} + dt_t * B[b, k, n, t] * u_t
    y_t   = sum_n C[b, k, n, t] * h_t + D[c] * u_t

It is evaluated chunk by chunk: inside a chunk of T steps every h_t is a masked sum
over the chunk's inputs weighted by exp(S_t - S_s) (S = cumulative dt*A, so every
exponent is <= 0 and nothing overflows), and the state is carried across chunks.
That keeps the Python loop L/T long and autograd exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 16


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
                             orders: torch.Tensor | None = None, chunk: int = CHUNK) -> torch.Tensor:
    """Reference scan; same contract as :func:`diffmf_core.ops.selective_scan`."""
    out_dtype = u.dtype
    if orders is not None:
        u_raster = u
        u, delta, B, C = gather_orders(u, delta, B, C, orders)
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    b, kd, L = u.shape
    K, N = B.shape[1], A.shape[1]
    dm = kd // K
    uf = u.to(work)
    dt = delta.to(work)
    if delta_bias is not None:
        dt = dt + delta_bias.to(work)[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Af = A.to(work).view(K, dm, N)
    Bf = B.to(work)
    Cf = C.to(work)

    h = uf.new_zeros(b, K, dm, N)
    ys = []
    for s in range(0, L, chunk):
        e = min(s + chunk, L)
        T = e - s
        dtc = dt[:, :, s:e].view(b, K, dm, T)
        S = torch.cumsum(dtc.unsqueeze(-1) * Af[None, :, :, None, :], dim=3)  # (b,K,dm,T,N)
        x = (dtc * uf[:, :, s:e].view(b, K, dm, T)).unsqueeze(-1) * Bf[:, :, None, :, s:e].transpose(-1, -2)
        diff = S.unsqueeze(4) - S.unsqueeze(3)  # (b,K,dm,T(t),T(s),N): S_t - S_s
        causal = torch.ones(T, T, dtype=torch.bool, device=u.device).tril()
        w = torch.exp(diff.masked_fill(~causal[:, :, None], float("-inf")))
        hs = torch.einsum("bkdtsn,bkdsn->bkdtn", w, x) + torch.exp(S) * h.unsqueeze(3)
        y = torch.einsum("bkdtn,bknt->bkdt", hs, Cf[:, :, :, s:e])
        ys.append(y)
        h = hs[:, :, :, -1]
    y = torch.cat(ys, dim=-1).reshape(b, kd, L)
    if D is not None:
        y = y + D.to(work)[None, :, None] * uf
    y = y.to(out_dtype)
    if orders is not None:
        y = scatter_orders(y, orders)
        del u_raster
    return y
