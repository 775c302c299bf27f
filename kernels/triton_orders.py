"""Grid token orders as copies on the GPU: raster <-> scan order in one coalesced pass.

Backends that cannot read a token order by index (mamba-ssm's kernel) need u, delta, B and C
laid out in scan order and y put back in raster order. PyTorch's gather/scatter do that with
an int64 index per element, strided reads for the column directions and, under autograd, an
index_put with accumulation for the gradient of the shared u. Measured on an H100
(bench/RESULTS.md; 640x512, K=4, Dm=64, bf16) those copies made the mamba backend take
5.4 ms forward / 23.8 ms backward against 3.2 / 8.0 ms for its kernel on pre-ordered inputs.

Here a program copies one TY x TX tile of the H x W map for one (batch, direction) and up to
MAX_CPB channels in turn. It branches on the direction once, so that in each branch the loads
and stores are seen to be contiguous (along x in raster order, along y in a column scan), and
Triton transposes the column directions' tiles on chip. The reversed directions' scan side runs
backwards through a tile: those accesses stay 2-byte ones (coalesced, one instruction per element;
a tl.flip of the tile did not make them vector accesses under Triton 3.6 or 3.9). Orders that are
not grid scans keep torch's gather.
The Triton scan's ``grad_forward="reorder"`` uses the same copies to give its rows kernels
contiguous lines in every direction.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_scan import MODE_GRID, TokenOrder

TY, TX, WARPS = 32, 64, 4
# A program copies its tile for up to MAX_CPB channels in turn when the copy has at least TARGET_PROGRAMS
# programs' worth of tiles without that: one 4 KB tile per program made 250 K programs at 640x512, K=4,
# Dm=64 (1.45 ms of copies around mamba-ssm's kernel on an H100, ~30 % of the copy bandwidth); small maps
# keep one channel per program so that they still spread over the GPU.
MAX_CPB, TARGET_PROGRAMS = 8, 4096


@triton.jit
def _move(src, dst, raster_base, scan_base, raster, t, mask, c0, CH, L, TO_SCAN: tl.constexpr,
          CPB: tl.constexpr):
    # Channels c0 .. c0 + CPB - 1 (those below CH): consecutive rows, L apart, on both sides.
    for ci in tl.static_range(CPB):
        m = mask & (raster * 0 + c0 + ci < CH)
        off = ci * L
        if TO_SCAN:
            v = tl.load(src + raster_base + off + raster, mask=m)
            tl.store(dst + scan_base + off + t, v, mask=m)
        else:
            v = tl.load(src + scan_base + off + t, mask=m)
            tl.store(dst + raster_base + off + raster, v, mask=m)


@triton.jit
def _grid_copy(src, dst, codes, H, W, L, CH, K, KS, n_tx, n_tiles, n_cb, TO_SCAN: tl.constexpr, TY: tl.constexpr,
               TX: tl.constexpr, CPB: tl.constexpr):
    # Program (row block, tile), one grid axis (the others stop at 65535): a row block is CPB channels of one
    # (batch, direction k) of the scan-order tensor; the raster side is direction k % KS of the same batch
    # and channels (KS = 1: one raster map for all k).
    pid = tl.program_id(0)
    blk = pid // n_tiles
    tile = pid % n_tiles
    c0 = (blk % n_cb) * CPB
    k = (blk // n_cb) % K
    b = blk // (n_cb * K)
    code = tl.load(codes + k)
    scan_base = ((b * K + k) * CH + c0).to(tl.int64) * L
    raster_base = ((b * KS + k % KS) * CH + c0).to(tl.int64) * L
    y = (tile // n_tx) * TY + tl.arange(0, TY)[:, None]
    x = (tile % n_tx) * TX + tl.arange(0, TX)[None, :]
    mask = (y < H) & (x < W)
    raster = y * W + x
    if code == 0:
        _move(src, dst, raster_base, scan_base, raster, raster, mask, c0, CH, L, TO_SCAN, CPB)
    elif code == 1:
        _move(src, dst, raster_base, scan_base, raster, x * H + y, mask, c0, CH, L, TO_SCAN, CPB)
    elif code == 2:
        _move(src, dst, raster_base, scan_base, raster, L - 1 - raster, mask, c0, CH, L, TO_SCAN, CPB)
    else:
        _move(src, dst, raster_base, scan_base, raster, L - 1 - (x * H + y), mask, c0, CH, L, TO_SCAN, CPB)


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def channels_per_program(programs_one_each: int, channels: int) -> int:
    """How many channels a program copies: up to MAX_CPB while TARGET_PROGRAMS programs remain."""
    return min(MAX_CPB, _pow2_floor(programs_one_each // TARGET_PROGRAMS), 1 << (channels - 1).bit_length())


def _launch(x: torch.Tensor, order: TokenOrder, K: int, ch: int, to_scan: bool) -> torch.Tensor:
    """x (b, KS*ch, L) -> (b, K*ch, L); KS is 1 (a map every direction shares) or K."""
    b, kc, L = x.shape
    n_tx = triton.cdiv(order.W, TX)
    out = torch.empty(b, K * ch, L, dtype=x.dtype, device=x.device)
    n_tiles = triton.cdiv(order.H, TY) * n_tx
    cpb = channels_per_program(b * K * ch * n_tiles, ch)
    n_cb = triton.cdiv(ch, cpb)
    _grid_copy[(b * K * n_cb * n_tiles,)](x.contiguous(), out, order.table, order.H, order.W, L, ch, K, kc // ch,
                                          n_tx, n_tiles, n_cb, TO_SCAN=to_scan, TY=TY, TX=TX, CPB=cpb,
                                          num_warps=WARPS)
    return out


class _ToScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, order, K, ch):
        ctx.meta = (order, K, ch, x.shape)
        return _launch(x, order, K, ch, True)

    @staticmethod
    def backward(ctx, g):
        order, K, ch, shape = ctx.meta
        back = _launch(g, order, K, ch, False)
        if shape[1] != K * ch:  # a shared map: its gradient sums over the directions
            back = back.view(shape[0], K, ch, shape[2]).sum(1)
        return back, None, None, None


class _ToRaster(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, order, K, ch):
        ctx.meta = (order, K, ch)
        return _launch(y, order, K, ch, False)

    @staticmethod
    def backward(ctx, g):
        order, K, ch = ctx.meta
        return _launch(g, order, K, ch, True), None, None, None


def gather(u: torch.Tensor, delta: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
           order: TokenOrder) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scan_reference.gather_orders for a grid order (``order.mode == MODE_GRID``), differentiable."""
    if order.mode != MODE_GRID:
        raise ValueError("triton_orders.gather needs a grid order (describe_orders(...).mode == MODE_GRID)")
    b, kd, L = delta.shape
    K, N = B.shape[1], B.shape[2]
    dm = kd // K
    us = _ToScan.apply(u, order, K, dm)
    ds = _ToScan.apply(delta, order, K, dm)
    bs, cs = (_ToScan.apply(t.reshape(b, K * N, L), order, K, N).view(b, K, N, L) for t in (B, C))
    return us, ds, bs, cs


def scatter(y: torch.Tensor, order: TokenOrder, K: int) -> torch.Tensor:
    """scan_reference.scatter_orders for a grid order, differentiable."""
    return _ToRaster.apply(y, order, K, y.shape[1] // K)
