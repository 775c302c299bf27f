"""Cross-Modal SSD Exchange: two Mamba-2-style SSMs that swap B and C between modalities.

Each modality is projected to (x, B, C, dt, z). The IR branch scans its own x with the
visible image's B (key) and C (query), the VI branch the other way round: in SSD's
attention reading this is linear-cost cross-attention. A and dt are scalar per head as
in Mamba-2; B and C are shared by all heads (Mamba-2's ngroups = 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import is_token_major, scan_orders, scan_token_major, selective_scan
from .scan_io import conv_tokens, sum_directions
from .ssm_params import a_log_init, dt_bias_init


class _ModalityProjection(nn.Module):
    def __init__(self, dim: int, inner: int, d_state: int, heads: int, directions: int, d_conv: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv2d = nn.Conv2d(inner, inner, d_conv, padding=d_conv // 2, groups=inner)
        self.bcdt_proj = nn.Linear(inner, 2 * d_state + directions * heads, bias=False)
        self.A_log = a_log_init(directions * heads, 1)
        self.dt_bias = dt_bias_init(directions * heads)
        self.D = nn.Parameter(torch.ones(inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, f: torch.Tensor, token_major: bool):
        x, z = self.in_proj(self.norm(f.permute(0, 2, 3, 1))).chunk(2, dim=-1)
        u = conv_tokens(self.conv2d, x, token_major)  # (B, inner, L)
        bcdt = self.bcdt_proj(u.transpose(1, 2))  # (B, L, 2N + K*heads)
        return u, z, bcdt


class CrossModalSSD(nn.Module):
    """Returns the two exchanged SSM outputs (Y_ir, Y_vi), each (B, C, H, W)."""

    def __init__(self, dim: int, ssm_ratio: float, d_state: int, heads: int, bidirectional: bool,
                 d_conv: int, scan_backend: str | None) -> None:
        super().__init__()
        self.inner = int(dim * ssm_ratio)
        self.d_state, self.heads, self.scan_backend = d_state, heads, scan_backend
        self.directions = ("row", "row_rev") if bidirectional else ("row",)
        k = len(self.directions)
        self.ir = _ModalityProjection(dim, self.inner, d_state, heads, k, d_conv)
        self.vi = _ModalityProjection(dim, self.inner, d_state, heads, k, d_conv)

    def _scan(self, branch: _ModalityProjection, u: torch.Tensor, z: torch.Tensor, own: torch.Tensor,
              other: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, inner, L = u.shape
        n, k, heads = self.d_state, len(self.directions), self.heads
        head_dim = inner // heads
        B_other, C_other = other[..., :n], other[..., n:2 * n]  # swapped: the other modality's B and C
        dt = own[..., 2 * n:].view(b, L, k, heads)
        if is_token_major(u):  # the scan reads u and delta in place as (B, L, channels) memory
            delta = dt.repeat_interleave(head_dim, dim=3).reshape(b, L, k * inner).transpose(1, 2)
        else:
            delta = dt.permute(0, 2, 3, 1).repeat_interleave(head_dim, dim=2).reshape(b, k * inner, L).contiguous()
        A = -torch.exp(branch.A_log.float()).view(k, heads, 1).repeat_interleave(head_dim, dim=1)
        A = A.reshape(k * inner, 1)
        dt_bias = branch.dt_bias.float().view(k, heads).repeat_interleave(head_dim, dim=1).reshape(-1)
        # Views (the directions share them): backends copy what they cannot read in place.
        Bk = B_other.transpose(1, 2).unsqueeze(1).expand(b, k, n, L)
        Ck = C_other.transpose(1, 2).unsqueeze(1).expand(b, k, n, L)
        y = selective_scan(u, delta, A.expand(k * inner, n).contiguous(), Bk, Ck,
                           branch.D.float().repeat(k), dt_bias, True, backend=self.scan_backend,
                           orders=scan_orders(hw[0], hw[1], u.device, self.directions))
        y = sum_directions(y, k)  # (B, L, inner)
        y = branch.out_norm(y) * F.silu(z.reshape(b, L, inner))
        return branch.out_proj(y).transpose(1, 2).reshape(b, -1, *hw)

    def forward(self, f_ir: torch.Tensor, f_vi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hw = f_ir.shape[-2:]
        tm = scan_token_major(f_ir.device, self.scan_backend, torch.is_grad_enabled())
        u_ir, z_ir, p_ir = self.ir(f_ir, tm)
        u_vi, z_vi, p_vi = self.vi(f_vi, tm)
        y_ir = self._scan(self.ir, u_ir, z_ir, p_ir, p_vi, hw)
        y_vi = self._scan(self.vi, u_vi, z_vi, p_vi, p_ir, hw)
        return y_ir, y_vi
