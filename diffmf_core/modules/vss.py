"""VMamba's Visual State Space block: SS2D (depthwise conv, 4-direction cross scan, merge, gate)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import scan_orders, scan_token_major, selective_scan
from .scan_io import conv_tokens, sum_directions
from .ssm_params import a_log_init, dt_bias_init


class SS2D(nn.Module):
    """2-D selective scan over four token orders of an (H, W) map, summed (VMamba's merge).

    Works channels-last: (B, H, W, C) in and out. The four orders are index permutations
    handed to the scan, so no flipped or transposed copies of the map are made here. Where the
    scan backend reads token-major tensors in place (ops.scan_token_major), u, delta and y stay
    (B, L, channels) in memory too; otherwise they are made contiguous (B, channels, L).
    """

    K = 4

    def __init__(self, dim: int, d_state: int = 16, ssm_ratio: float = 2.0, dt_rank: int = 0,
                 d_conv: int = 3, scan_backend: str | None = None) -> None:
        super().__init__()
        inner = int(dim * ssm_ratio)
        rank = dt_rank or math.ceil(dim / 16)
        self.inner, self.rank, self.d_state, self.scan_backend = inner, rank, d_state, scan_backend
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv2d = nn.Conv2d(inner, inner, d_conv, padding=d_conv // 2, groups=inner)
        self.x_proj_weight = nn.Parameter(torch.empty(self.K, rank + 2 * d_state, inner))
        nn.init.uniform_(self.x_proj_weight, -inner**-0.5, inner**-0.5)
        self.dt_projs_weight = nn.Parameter(torch.empty(self.K, inner, rank))
        nn.init.uniform_(self.dt_projs_weight, -rank**-0.5, rank**-0.5)
        self.dt_projs_bias = dt_bias_init(self.K * inner)
        self.A_logs = a_log_init(self.K * inner, d_state)
        self.Ds = nn.Parameter(torch.ones(self.K * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        L = h * w
        tm = scan_token_major(x.device, self.scan_backend, torch.is_grad_enabled())
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        u = conv_tokens(self.conv2d, xs, tm)  # (B, inner, L), raster order, shared by the 4 directions
        if tm:  # (B, L, ...) matmuls; the K directions' dt projections as one block-diagonal one
            x_dbl = F.linear(u.transpose(1, 2), self.x_proj_weight.flatten(0, 1)).view(b, L, self.K, -1)
            dts, Bs, Cs = torch.split(x_dbl, [self.rank, self.d_state, self.d_state], dim=3)
            delta = F.linear(dts.flatten(2), torch.block_diag(*self.dt_projs_weight)).transpose(1, 2)
            Bs, Cs = Bs.permute(0, 2, 3, 1), Cs.permute(0, 2, 3, 1)
        else:
            x_dbl = torch.einsum("bdl,kcd->bkcl", u, self.x_proj_weight)
            dts, Bs, Cs = torch.split(x_dbl, [self.rank, self.d_state, self.d_state], dim=2)
            delta = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight).reshape(b, -1, L).contiguous()
        # B and C go as views of x_dbl: backends copy what they cannot read in place.
        y = selective_scan(
            u, delta, -torch.exp(self.A_logs.float()), Bs, Cs,
            self.Ds.float(), self.dt_projs_bias.float(), True, backend=self.scan_backend,
            orders=scan_orders(h, w, x.device),
        )
        y = sum_directions(y, self.K).view(b, h, w, self.inner)
        y = self.out_norm(y) * F.silu(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """x + SS2D(LN(x)) [+ MLP(LN(x))], channels-last."""

    def __init__(self, dim: int, d_state: int, ssm_ratio: float, dt_rank: int, d_conv: int,
                 mlp_ratio: float, scan_backend: str | None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.op = SS2D(dim, d_state, ssm_ratio, dt_rank, d_conv, scan_backend)
        hidden = int(dim * mlp_ratio)
        self.mlp = None
        if hidden:
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.op(self.norm(x))
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x


class VSSBlocks(nn.Module):
    """A stack of VSS blocks on an NCHW map (the figure's "VSS Blocks" box)."""

    def __init__(self, dim: int, depth: int, d_state: int, ssm_ratio: float, dt_rank: int, d_conv: int,
                 mlp_ratio: float, scan_backend: str | None) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[
            VSSBlock(dim, d_state, ssm_ratio, dt_rank, d_conv, mlp_ratio, scan_backend) for _ in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
