"""Host side of the Triton forward: which kernels run which scan directions, and their launches.

Every forward variant is the same two-level scan: per chunk of the scan, a summary (end state
from zero, sum of dt) -> one ``_carry`` scan over chunks -> per chunk, the output from the
carried state. A variant is a list of *parts*, each running some of the K directions with one
kernel and its own chunking; the parts share the summary buffers (row stride = the largest
chunk count; a part with fewer chunks leaves the rest zero, the identity of the carry).

- "tiles":  _fwd_summary/_fwd_output for every direction (channels on the lanes);
- "lines":  _fwd_lines for every direction (adjacent scan lines on the lanes);
- "hybrid": row directions (and no orders) by ``cfg.rows_kernel`` ("rows": _fwd_rows, tokens
  on the lanes; or "tiles"), column directions by ``cfg.cols_kernel`` ("lines": _fwd_lines,
  adjacent columns on the lanes; or "rows": _fwd_rows along the columns, tokens W apart).
  Orders read through a table use "tiles".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .triton_scan import MODE_GRID, MODE_IDENTITY, MODE_TABLE, ScanConfig, TokenOrder, _carry, _cdiv, _pow2


@dataclass
class _Problem:
    """Tensors, sizes and flags every launch of one forward call shares."""

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor
    bias: torch.Tensor
    table: torch.Tensor
    y: torch.Tensor
    states: torch.Tensor
    dummy: torch.Tensor
    order: TokenOrder
    cfg: ScanConfig
    bt: int
    K: int
    dm: int
    N: int
    L: int
    np2: int
    n_save: int
    flags: dict
    token_major: bool = False  # u, delta and y are (Bt, L, channels) in memory (the tiles kernels only)


@dataclass
class _Part:
    """Some directions run by one kernel: its chunk count and ``launch(summary, hin, hsum, dtsum, stride, save)``."""

    chunks: int
    launch: Callable[..., None]


@functools.cache
def _triton_version() -> tuple[int, int]:
    """Parsed once: the forward asks at every launch."""
    import triton

    major, minor = triton.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


# Triton before 3.9 lays out a load whose pointers are contiguous along no axis with its first
# axis fastest (3.9: its last). The kernels take FIRST_FAST and then load such tiles with the
# axis that belongs on the lanes first, and transpose: without it 3.6 (the GPU image's) compiled
# the "lines" forward into 3x the instructions and sent the tiles forward's inputs through shared
# memory every step (bench/triton_sass.py, docs/kernels.md).
FIRST_AXIS_FAST: bool | None = None  # None: decide from the installed Triton; tests set both


def first_axis_fast() -> bool:
    return FIRST_AXIS_FAST if FIRST_AXIS_FAST is not None else _triton_version() < (3, 9)


def token_major_mode(token_major: bool, loads: str) -> int:
    """The tiles kernels' TOKEN_MAJOR: 0 channel-major, 1 token-major by vector loads, 2 by lanes
    (ScanConfig.tiles_tm_loads; triton_scan_kernels._tiles_program)."""
    return (2 if loads == "lanes" else 1) if token_major else 0


_cache: dict[tuple, torch.Tensor | tuple[torch.Tensor, int]] = {}


def _cached(key: tuple, make: Callable[[], torch.Tensor | tuple[torch.Tensor, int]]):
    """Small per-shape device tables, built once (no host-to-device copy per call)."""
    if key not in _cache:
        if len(_cache) > 128:
            _cache.clear()
        _cache[key] = make()
    return _cache[key]


def _selection(dirs: tuple[int, ...], device) -> torch.Tensor:
    return _cached(("sel", dirs, str(device)), lambda: torch.tensor(dirs, dtype=torch.int32, device=device))


def _lines_table(order: TokenOrder, K: int, L: int, chunk: int, group: int, dirs: tuple[int, ...],
                 device) -> tuple[torch.Tensor, int]:
    """Per direction (pieces per line, lines) for _fwd_lines, and the programs per (batch, dir, block) of ``dirs``."""

    def make():
        rows, work = [], 0
        for k in range(K):
            line = (order.H if order.codes[k] & 1 else order.W) if order.mode == MODE_GRID else 0
            if line and line % chunk == 0:
                ppl, n_lines = line // chunk, L // line
            else:  # no line structure to follow: each chunk is a line of its own
                ppl, n_lines = 1, _cdiv(L, chunk)
            rows += [ppl, n_lines]
            if k in dirs:
                work = max(work, _cdiv(n_lines, group) * ppl)
        return torch.tensor(rows, dtype=torch.int32, device=device), work

    return _cached(("lines", order.mode, order.H, order.W, order.codes, K, L, chunk, group, dirs, str(device)), make)


def _tiles_part(p: _Problem, dirs: tuple[int, ...]) -> _Part:
    from . import triton_scan_kernels as tk

    cfg = p.cfg
    n_chunks = _cdiv(p.L, cfg.ts * cfg.sub)
    n_dblk = _cdiv(p.dm, cfg.bd)
    grid = (p.bt * len(dirs) * n_chunks * n_dblk,)
    sel = _selection(dirs, p.u.device)
    flags = {k: v for k, v in p.flags.items() if k != "HAS_D"}
    meta = dict(NP=p.np2, BD=cfg.bd, TS=cfg.ts, SUB=cfg.sub, num_warps=cfg.warps, MODE=p.order.mode,
                ROWS_CONTIG=cfg.tiles_rows == "contiguous", STAGES=cfg.tiles_stages,
                PREFETCH=bool(cfg.tiles_prefetch), FOLD=cfg.tiles_fold,
                TOKEN_MAJOR=token_major_mode(p.token_major, cfg.tiles_tm_loads), **flags)
    if cfg.tiles_maxnreg:
        meta["maxnreg"] = cfg.tiles_maxnreg
    sizes = (p.L, p.order.H, p.order.W, p.K, p.dm, p.N, n_dblk, n_chunks)

    def launch(summary, hin, hsum, dtsum, stride, save):
        if summary:
            tk._fwd_summary[grid](p.u, p.delta, p.A, p.B, p.bias, p.table, p.table, sel, hsum, dtsum,
                                  *sizes, len(dirs), stride, *p.B.stride(), 1, FIRST_FAST=first_axis_fast(), **meta)
        else:
            tk._fwd_output[grid](p.u, p.delta, p.A, p.B, p.C, p.D, p.bias, p.table, p.table, sel, hin, p.y,
                                 p.states, *sizes, p.n_save, len(dirs), stride, *p.B.stride(), 1,
                                 HAS_D=p.flags["HAS_D"], SAVE_EVERY=cfg.ts_bwd // cfg.ts if save else 0,
                                 FIRST_FAST=first_axis_fast(), **meta)

    return _Part(n_chunks, launch)


def _lines_part(p: _Problem, dirs: tuple[int, ...]) -> _Part:
    from . import triton_scan_kernels as tk

    cfg, order = p.cfg, p.order
    n_dblk = _cdiv(p.dm, cfg.bd_lines)
    lines, n_work = _lines_table(order, p.K, p.L, cfg.chunk, cfg.lines, dirs, p.u.device)
    grid = (p.bt * len(dirs) * n_work * n_dblk,)
    sel = _selection(dirs, p.u.device)

    def launch(summary, hin, hsum, dtsum, stride, save):
        tk._fwd_lines[grid](p.u, p.delta, p.A, p.B, p.C, p.D, p.bias, p.table, p.table, lines, sel, hin, p.y,
                            p.states, hsum, dtsum, p.L, order.H, order.W, p.K, p.dm, p.N, n_dblk, n_work, stride,
                            p.n_save, cfg.chunk, len(dirs), NP=p.np2, BD=cfg.bd_lines, G=cfg.lines,
                            MODE=order.mode, SUMMARY=summary, SAVE_EVERY=cfg.ts_bwd if save else 0,
                            FIRST_FAST=first_axis_fast(), num_warps=cfg.warps_lines, **p.flags)

    return _Part(_cdiv(p.L, cfg.chunk), launch)


def _rows_part(p: _Problem, kind: Kind) -> _Part:
    from . import triton_scan_kernels as tk

    cfg = p.cfg
    n_lines, length, line_stride, pos_stride = line_geometry(kind, p.order, p.L)
    n_seg, chunks = rows_chunks(cfg, kind, p.order, p.L)
    n_dblk = _cdiv(p.dm, cfg.rows_bd)
    grid = (p.bt * len(kind.dirs) * chunks * n_dblk,)
    sel = _selection(kind.dirs, p.u.device)

    def launch(summary, hin, hsum, dtsum, stride, save):
        tk._fwd_rows[grid](p.u, p.delta, p.A, p.B, p.C, p.D, p.bias, sel, hin, p.y, p.states, hsum, dtsum,
                           p.L, n_lines, length, line_stride, pos_stride, p.K, p.dm, p.N, n_dblk, n_seg, stride,
                           p.n_save, len(kind.dirs), NP=p.np2, BD=cfg.rows_bd, GT=cfg.rows_gt, SUB=cfg.rows_sub,
                           REV=kind.reverse, SUMMARY=summary, SAVE=save, num_warps=cfg.rows_warps, **p.flags)

    return _Part(chunks, launch)


@dataclass(frozen=True)
class Kind:
    """One part of the plan: a kernel family, its directions, and for "rows" the line geometry."""

    kernel: str  # "tiles" | "lines" | "rows"
    dirs: tuple[int, ...]
    reverse: bool = False  # rows: the scan runs against memory order
    columns: bool = False  # rows: lines are image columns (tokens W apart) instead of rows


def plan_kinds(cfg: ScanConfig, order: TokenOrder, K: int, L: int) -> list[Kind]:
    """The parts of the configured forward; the backward pass follows the same plan."""
    everything = tuple(range(K))
    if cfg.forward == "tiles" or (cfg.forward == "hybrid" and order.mode == MODE_TABLE):
        return [Kind("tiles", everything)]
    if cfg.forward == "lines":
        return [Kind("lines", everything)]
    if order.mode == MODE_IDENTITY:  # one row of length L
        return [Kind(cfg.rows_kernel, everything)]
    by_code = {code: tuple(k for k, c in enumerate(order.codes) if c == code) for code in range(4)}
    kinds = []
    if by_code[1] or by_code[3]:
        if cfg.cols_kernel == "rows":
            kinds += [Kind("rows", by_code[code], code == 3, True) for code in (1, 3) if by_code[code]]
        else:
            kinds.append(Kind("lines", by_code[1] + by_code[3]))
    if by_code[0] or by_code[2]:
        if cfg.rows_kernel == "tiles":
            kinds.append(Kind("tiles", by_code[0] + by_code[2]))
        else:
            kinds += [Kind("rows", by_code[code], code == 2) for code in (0, 2) if by_code[code]]
    return kinds


def line_geometry(kind: Kind, order: TokenOrder, L: int) -> tuple[int, int, int, int]:
    """(lines, line length, line stride, position stride) of a "rows" part, in raster memory."""
    if order.mode == MODE_IDENTITY:
        return 1, L, L, 1
    H, W = order.H, order.W
    return (W, H, 1, W) if kind.columns else (H, W, W, 1)


def rows_chunks(cfg: ScanConfig, kind: Kind, order: TokenOrder, L: int) -> tuple[int, int]:
    """(segments per line, chunks = lines x segments) of a "rows" part."""
    n_lines, length, _, _ = line_geometry(kind, order, L)
    n_seg = _cdiv(length, cfg.rows_gt * cfg.rows_sub)
    return n_seg, n_lines * n_seg


def state_slots(cfg: ScanConfig, order: TokenOrder, K: int, L: int) -> int:
    """Saved states per (channel, state): every ts_bwd steps, or one per rows sub-tile, whichever needs more."""
    slots = 0
    for kind in plan_kinds(cfg, order, K, L):
        if kind.kernel == "rows":
            slots = max(slots, rows_chunks(cfg, kind, order, L)[1] * cfg.rows_sub)
        else:
            slots = max(slots, _cdiv(L, cfg.ts_bwd))
    return slots


def _plan(p: _Problem) -> list[_Part]:
    parts = []
    for kind in plan_kinds(p.cfg, p.order, p.K, p.L):
        if kind.kernel == "tiles":
            parts.append(_tiles_part(p, kind.dirs))
        elif kind.kernel == "lines":
            parts.append(_lines_part(p, kind.dirs))
        else:
            parts.append(_rows_part(p, kind))
    return parts


def run_forward(u, delta, A, B, C, D, delta_bias, softplus, order: TokenOrder, cfg: ScanConfig,
                save_states: bool, token_major: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y and (if asked) the states the backward pass restarts from (``state_slots`` per channel and state).

    token_major: u and delta are (Bt, channels, L) views of (Bt, L, channels) memory, and y is made alike;
    B and C may then be any views with one set of strides (the model's projection slices). The tiles forward
    only (see triton_scan.token_major)."""
    from . import triton_scan_kernels as tk

    bt, kd, L = delta.shape
    if token_major and any(kind.kernel != "tiles" for kind in plan_kinds(cfg, order, B.shape[1], L)):
        raise ValueError(f"triton scan: token-major inputs need the tiles forward, not {cfg.forward!r}")
    if B.stride() != C.stride():
        raise ValueError(f"triton scan: B and C must share strides, got {B.stride()} and {C.stride()}")
    K, N = B.shape[1], A.shape[1]
    dev, f32 = u.device, torch.float32
    dummy = torch.empty(1, dtype=f32, device=dev)
    np2 = _pow2(N)
    n_save = state_slots(cfg, order, K, L)
    p = _Problem(u=u, delta=delta, A=A, B=B, C=C, D=D if D is not None else dummy,
                 bias=delta_bias if delta_bias is not None else dummy,
                 table=order.table if order.table is not None else torch.empty(1, dtype=torch.int32, device=dev),
                 y=(torch.empty(bt, L, kd, dtype=u.dtype, device=dev).transpose(1, 2) if token_major
                    else torch.empty(bt, kd, L, dtype=u.dtype, device=dev)),
                 states=torch.empty(bt * kd * np2 * n_save, dtype=f32, device=dev) if save_states else dummy,
                 dummy=dummy, order=order, cfg=cfg, bt=bt, K=K, dm=kd // K, N=N, L=L, np2=np2, n_save=n_save,
                 flags=dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus), SHARED_U=u.shape[1] != kd,
                            HAS_D=D is not None), token_major=token_major)
    parts = _plan(p)
    n_chunks = max(part.chunks for part in parts)
    hin = dummy
    if n_chunks > 1:
        rows = bt * kd * np2
        alloc = torch.zeros if len({part.chunks for part in parts}) > 1 else torch.empty
        hsum = alloc(rows * n_chunks, dtype=f32, device=dev)
        dtsum = alloc(bt * kd * n_chunks, dtype=f32, device=dev)
        for part in parts:
            part.launch(True, dummy, hsum, dtsum, n_chunks, False)
        hin = _carry(tk, hsum, dtsum, A, rows, n_chunks, np2, N, kd, cfg, reverse=False)
    for part in parts:
        part.launch(False, hin, dummy, dummy, n_chunks, save_states)
    return p.y, (p.states if save_states else None)
