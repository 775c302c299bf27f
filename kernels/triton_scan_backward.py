"""Host side of the Triton backward: the forward's plan (triton_scan_forward.plan_kinds), in reverse.

Parts that ran "tiles" or "lines" forward restart from states saved every ``ts_bwd`` steps and
use _bwd_summary/_bwd_output on those directions; "rows" parts restart from the state saved at
every rows sub-tile and use _bwd_rows_summary/_bwd_rows. Like the forward, the parts share one
reverse ``_carry`` over their chunk summaries (row stride = the larger chunk count, zero tail).
"""

from __future__ import annotations

import torch

from .triton_scan import ScanConfig, TokenOrder, _carry, _cdiv, _pow2
from .triton_scan_forward import _selection, first_axis_fast, line_geometry, plan_kinds, rows_chunks, state_slots


def run_backward(gy, u, delta, A, B, C, D, delta_bias, softplus, order: TokenOrder, cfg: ScanConfig,
                 states: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients (u, delta, A, B, C, D, delta_bias) in float32 or the inputs' dtypes."""
    from . import triton_scan_kernels as tk

    bt, kd, L = delta.shape
    K, N = B.shape[1], A.shape[1]
    dm = kd // K
    dev, f32 = u.device, torch.float32
    np2 = _pow2(N)
    dummy = torch.empty(1, dtype=f32, device=dev)
    table = order.table if order.table is not None else torch.empty(1, dtype=torch.int32, device=dev)
    flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus))
    bias = delta_bias if delta_bias is not None else dummy
    Dt = D if D is not None else dummy
    shared_u = u.shape[1] != kd
    n_save = state_slots(cfg, order, K, L)
    kinds = plan_kinds(cfg, order, K, L)
    counts = [rows_chunks(cfg, kind, order, L)[1] if kind.kernel == "rows" else _cdiv(L, cfg.ts_bwd) for kind in kinds]
    stride = max(counts)
    alloc = torch.zeros if len(set(counts)) > 1 else torch.empty
    gsum = alloc(bt * kd * np2 * stride, dtype=f32, device=dev)
    dtsum = alloc(bt * kd * stride, dtype=f32, device=dev)
    for kind, count in zip(kinds, counts):
        sel = _selection(kind.dirs, dev)
        if kind.kernel == "rows":
            n_dblk = _cdiv(dm, cfg.rows_bd)
            n_seg = rows_chunks(cfg, kind, order, L)[0]
            tk._bwd_rows_summary[(bt * len(kind.dirs) * count * n_dblk,)](
                delta, A, C, bias, sel, gy, gsum, dtsum, L, *line_geometry(kind, order, L), K, dm, N, n_dblk, n_seg,
                stride, len(kind.dirs), NP=np2, BD=cfg.rows_bd, GT=cfg.rows_gt, SUB=cfg.rows_sub, REV=kind.reverse,
                num_warps=cfg.rows_warps, **flags)
        else:
            n_dblk = _cdiv(dm, cfg.bd_bwd)
            tk._bwd_summary[(bt * len(kind.dirs) * count * n_dblk,)](
                delta, A, C, bias, table, table, sel, gy, gsum, dtsum, L, order.H, order.W, K, dm, N, n_dblk,
                count, len(kind.dirs), stride, NP=np2, BD=cfg.bd_bwd, TS=cfg.ts_bwd, num_warps=cfg.warps_bwd,
                MODE=order.mode, FIRST_FAST=first_axis_fast(), **flags)
    gin = _carry(tk, gsum, dtsum, A, bt * kd * np2, stride, np2, N, kd, cfg, reverse=True)
    gu = torch.empty(bt, kd, L, dtype=f32 if shared_u else u.dtype, device=dev)
    gdelta = torch.empty_like(delta)
    gB, gC = torch.empty_like(B), torch.empty_like(C)
    partials = []  # per part: (gA (Bt, chunks, KD, NP), gD, gbias (Bt, chunks, KD)), zero where it has no channel
    zeros = torch.zeros if len(kinds) > 1 else torch.empty
    for kind, count in zip(kinds, counts):
        gA = zeros(bt, count, kd, np2, dtype=f32, device=dev)
        gD = zeros(bt, count, kd, dtype=f32, device=dev) if D is not None else dummy
        gb = zeros(bt, count, kd, dtype=f32, device=dev) if delta_bias is not None else dummy
        partials.append((gA, gD, gb))
        sel = _selection(kind.dirs, dev)
        if kind.kernel == "rows":
            grid = bt * len(kind.dirs) * count
            tk._bwd_rows[(grid,)](u, delta, A, B, C, Dt, bias, sel, gy, states, gin, gu, gdelta, gB, gC,
                                  gA, gD, gb, L, *line_geometry(kind, order, L), K, dm, N,
                                  rows_chunks(cfg, kind, order, L)[0], stride, n_save, count, len(kind.dirs),
                                  NP=np2, DMP=_pow2(dm), GT=cfg.rows_gt, SUB=cfg.rows_sub, REV=kind.reverse,
                                  SHARED_U=shared_u, HAS_D=D is not None, num_warps=cfg.rows_warps, **flags)
        else:
            n_dblk = _cdiv(dm, cfg.bd_bwd)
            tk._bwd_output[(bt * len(kind.dirs) * count,)](
                u, delta, A, B, C, Dt, bias, table, table, sel, gy, states, gin, gu, gdelta, gB, gC, gA, gD, gb,
                L, order.H, order.W, K, dm, N, n_dblk, count, len(kind.dirs), stride, n_save,
                NP=np2, BD=cfg.bd_bwd, TS=cfg.ts_bwd, SHARED_U=shared_u, HAS_D=D is not None,
                FIRST_FAST=first_axis_fast(), num_warps=cfg.warps_bwd, MODE=order.mode, **flags)
    if shared_u:
        gu = gu.view(bt, K, dm, L).sum(1)
    gA = sum(p[0].sum((0, 1)) for p in partials)[:, :N]
    gD = sum(p[1].sum((0, 1)) for p in partials) if D is not None else None
    gbias = sum(p[2].sum((0, 1)) for p in partials) if delta_bias is not None else None
    return gu, gdelta, gA, gB, gC, gD, gbias
