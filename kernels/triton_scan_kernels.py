"""Triton kernels of the chunked selective scan (the host side is triton_scan.py).

Notation: scan step t of direction k reads raster token idx(k, t); per channel c and
state n, a_t = exp(dt_t * A[c, n]), b_t = dt_t * u_t * B[n, t],
h_t = a_t * h_{t-1} + b_t, y_t = sum_n C[n, t] * h_t + D[c] * u_t.

Forward, three launches (L is cut into chunks so thousands of programs run at once):
  1. summary: per chunk, the state it would end in from a zero start, and sum(dt);
  2. _carry:  per (channel, n), a scan over chunks -> the state entering each chunk;
  3. output:  per chunk, the exact recurrence from that state, writing y and, for the
              backward pass, the state every ts_bwd steps.
Implementations of 1 and 3: _fwd_summary/_fwd_output (default: tl.associative_scan over
sub-tiles of TS steps, state carried in registers), _fwd_lines (a per-step loop over adjacent
scan lines, see its comment) and _fwd_rows (contiguous row segments, tokens on the lanes).
Backward, three launches at sub-tile granularity: _bwd_summary (per sub-tile, the
gradient it sends left), _carry in reverse, _bwd_output (one program per sub-tile and
direction, looping over channel blocks so dL/dB and dL/dC are summed in registers).

Token index modes (MODE): 0 identity; 1 the 4 grid directions by arithmetic (code per
direction: bit 0 = column-major, bit 1 = reversed) on an H x W map; 2 an int32 table.
"""

# Constexpr branches stay if/else blocks: that is the form every Triton version compiles.
# ruff: noqa: SIM108

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _linear_combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): x -> a2 * (a1 * x + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _tokens(t, k, L, H, W, dirs_ptr, orders_ptr, MODE: tl.constexpr):
    """Raster index read at scan step t (int32 tensor) of direction k.

    (Scalar conditions are broadcast as ``tensor * 0 + scalar`` in masks below: the
    interpreter rejects a mask made of a tensor & a scalar.)
    """
    if MODE == 0:
        idx = t
    elif MODE == 1:
        code = tl.load(dirs_ptr + k)
        # unsigned: tokens are never negative where they are read, and unsigned division needs no sign fix-ups
        # (Triton 3.6, sm_90: 44-54 fewer instructions per loop in the tiny model's tiles kernels)
        tt = tl.where((code & 2) != 0, L - 1 - t, t).to(tl.uint32)
        hu = H.to(tl.uint32)
        idx = tl.where((code & 1) != 0, (tt % hu) * W + tt // hu, tt).to(tl.int32)
    else:
        idx = tl.load(orders_ptr + k * L + t, mask=(t >= 0) & (t < L), other=0)
    return idx


@triton.jit
def _sub_tile_tokens(sub, k, L, H, W, dirs_ptr, orders_ptr, MODE: tl.constexpr, TS: tl.constexpr,
                     CONTIG: tl.constexpr, REV: tl.constexpr):
    """(raster tokens, mask) of sub-tile ``sub``. CONTIG (a row direction): in memory order, written so the
    compiler sees TS adjacent tokens (vector loads and stores); with REV (a reversed row) that is the scan
    order backwards: the output kernel flips its tiles (tl.associative_scan(reverse=True) compiled to ~1300
    shuffles per loop under Triton 3.6, the flips to 4), the summary kernel sums the other way."""
    if CONTIG:
        if REV:
            idx = L - (sub + 1) * TS + tl.arange(0, TS)
            mask = idx >= 0
        else:
            idx = sub * TS + tl.arange(0, TS)
            mask = idx < L
    else:
        t = sub * TS + tl.arange(0, TS)
        mask = t < L
        idx = _tokens(t, k, L, H, W, dirs_ptr, orders_ptr, MODE)
    return idx, mask


@triton.jit
def _softplus(x):
    # max(x, 0) + log1p(exp(-|x|)): a series where 1 + e would round, else log(1 + e).
    e = tl.exp(-tl.abs(x))
    series = e * (1.0 - e * (0.5 - e * (0.3333333333333333 - e * 0.25)))
    lp = tl.where(e < 0.01, series, tl.log(1.0 + e))
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + lp)


@triton.jit
def _raw_tc(base_ptr, row, idx, mask, FIRST_FAST: tl.constexpr):
    """The [TS, BD] tile base[row[c] + idx[t]] as loaded (0 where masked); _tc_float makes it float32 [TS, BD].

    FIRST_FAST (Triton before 3.9): loaded as [BD, TS] and transposed. Those versions lay a load
    out with its first axis fastest where nothing says otherwise, and the channels belong on
    the lanes; loaded [TS, BD] the tile went through shared memory on every step.
    """
    if FIRST_FAST:
        v = tl.load(base_ptr + row[:, None] + idx[None, :], mask=tl.trans(mask), other=0.0)
    else:
        v = tl.load(base_ptr + row[None, :] + idx[:, None], mask=mask, other=0.0)
    return v


@triton.jit
def _tc_float(v, FIRST_FAST: tl.constexpr):
    if FIRST_FAST:
        v = tl.trans(v)
    return v.to(tl.float32)


@triton.jit
def _load_tc(base_ptr, row, idx, mask, FIRST_FAST: tl.constexpr):
    """The [TS, BD] tile base[row[c] + idx[t]] as float32 (0 where masked); see _raw_tc."""
    return _tc_float(_raw_tc(base_ptr, row, idx, mask, FIRST_FAST), FIRST_FAST)


@triton.jit
def _store_tc(base_ptr, row, idx, value, mask, FIRST_FAST: tl.constexpr):
    """Store a [TS, BD] tile at base[row[c] + idx[t]] (see _raw_tc)."""
    if FIRST_FAST:
        tl.store(base_ptr + row[:, None] + idx[None, :], tl.trans(value).to(base_ptr.dtype.element_ty),
                 mask=tl.trans(mask))
    else:
        tl.store(base_ptr + row[None, :] + idx[:, None], value.to(base_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dt_of(x, mask, bias, SOFTPLUS: tl.constexpr):
    """x = delta + bias and dt (0 where masked) for a float32 [TS, BD] tile of delta."""
    x = x + bias[None, :]
    if SOFTPLUS:
        dt = _softplus(x)
    else:
        dt = x
    return x, tl.where(mask, dt, 0.0)


@triton.jit
def _load_dt(delta_ptr, row, idx, mask, bias, SOFTPLUS: tl.constexpr, FIRST_FAST: tl.constexpr = False):
    """x = delta + bias and dt (0 where masked) for a [TS, BD] tile."""
    return _dt_of(_load_tc(delta_ptr, row, idx, mask, FIRST_FAST), mask, bias, SOFTPLUS)


@triton.jit
def _selected_coords(pid, n_dblk, n_chunks, sel_ptr, n_sel, Dm, BD: tl.constexpr):
    """(batch, direction, chunk, channels) of a program over the n_sel directions listed in sel_ptr."""
    dblk = pid % n_dblk
    rest = pid // n_dblk
    j = rest % n_chunks
    bk = rest // n_chunks
    b = bk // n_sel
    k = tl.load(sel_ptr + bk % n_sel)
    d = dblk * BD + tl.arange(0, BD)
    return b, k, j, d


@triton.jit
def _segment_coords(rest, n_seg, NL, sel_ptr, n_sel, REV: tl.constexpr):
    """(batch, direction, line, segment, chunk id in scan order) of a rows-kernel program; ``rest`` = its
    program id without the channel-block part. A line is an image row, or a column for a column direction."""
    seg = rest % n_seg
    rest = rest // n_seg
    ln = rest % NL
    bk = rest // NL
    b = bk // n_sel
    k = tl.load(sel_ptr + bk % n_sel)
    if REV:
        j = (NL - 1 - ln) * n_seg + (n_seg - 1 - seg)
    else:
        j = ln * n_seg + seg
    return b, k, ln, seg, j


@triton.jit
def _channel_rows(b, c, d, KD, Dm, L, SHARED_U: tl.constexpr):
    """Channel c's row of the (Bt, K*Dm, ...) buffers, its offset in delta / y, and its u row's offset."""
    rows = (b * KD + c).to(tl.int64)
    drow = rows * L
    if SHARED_U:  # u is (Bt, Dm, L), shared by the directions
        urow = (b * Dm + d).to(tl.int64) * L
    else:
        urow = drow
    return rows, drow, urow


@triton.jit
def _channel_params(A_ptr, D_ptr, bias_ptr, c, dmask, n, nmask, N,
                    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, BD: tl.constexpr):
    """A * log2(e) as [NP, BD], and D, delta_bias as [BD] (zeros when absent)."""
    A2 = tl.load(A_ptr + c[None, :] * N + n[:, None], mask=nmask[:, None] & dmask[None, :], other=0.0) * LOG2E
    if HAS_BIAS:
        bias = tl.load(bias_ptr + c, mask=dmask, other=0.0)
    else:
        bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + c, mask=dmask, other=0.0)
    else:
        Dv = tl.zeros([BD], dtype=tl.float32)
    return A2, bias, Dv


# Tiles are [NP, TS, BD] (state, step, channel): channels go to the lanes, so the scan over
# steps and the sum over states both stay inside a thread (no shuffles).


@triton.jit
def _tiles_program(A_ptr, D_ptr, bias_ptr, dirs_ptr, sel_ptr, L, K, Dm, N, n_dblk, n_chunks, n_sel, bc_b, bc_k,
                   bc_n, bc_t, lane_step, NP: tl.constexpr, BD: tl.constexpr, MODE: tl.constexpr,
                   SHARED_U: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, ROWS_CONTIG: tl.constexpr,
                   TOKEN_MAJOR: tl.constexpr):
    """What a tiles forward program (summary or output) starts from: its direction k, chunk j, channel and
    state masks, channel parameters, buffer rows, and the direction code when it reads rows contiguously
    (else -1, a plain int, so the callers' branches on it resolve while compiling).

    Element (channel, token) of u / delta / y sits at row + token * step: channel-major buffers have
    step 1; TOKEN_MAJOR ones ((Bt, L, channels) in memory) have the channel count, so a warp's lanes
    (adjacent channels) read and write adjacent elements in every scan direction. TOKEN_MAJOR = 1 lets the
    compiler see that: it loads 4 adjacent channels per thread (8-byte bf16 loads) and moves every u, delta and y
    tile between that layout and the one channel per lane the arithmetic uses through shared memory (under Triton
    3.6, sm_90: 10 barriers and 31 shared-memory accesses per loop against 4 and 18 channel-major); 2 steps the
    channels by ``lane_step`` (1, never specialised), so the tiles are read and written one channel per lane in
    place, coalesced across the warp, with the channel-major kernel's barriers and shared-memory traffic."""
    b, k, j, d = _selected_coords(tl.program_id(0), n_dblk, n_chunks, sel_ptr, n_sel, Dm, BD)
    dmask = d < Dm
    c = k * Dm + d
    n = tl.arange(0, NP)
    nmask = n < N
    A2, bias, Dv = _channel_params(A_ptr, D_ptr, bias_ptr, c, dmask, n, nmask, N, HAS_D, HAS_BIAS, BD)
    rows, drow, urow = _channel_rows(b, c, d, K * Dm, Dm, L, SHARED_U)
    if TOKEN_MAJOR:
        if TOKEN_MAJOR == 2:
            d = d * lane_step
        drow = b.to(tl.int64) * L * (K * Dm) + k * Dm + d
        dstep = K * Dm
        if SHARED_U:
            urow = b.to(tl.int64) * L * Dm + d
            ustep = Dm
        else:
            urow = drow
            ustep = dstep
    else:
        dstep = 1
        ustep = 1
    # B and C (shared strides, in elements): state n's row and the token step; contiguous (Bt, K, N, L) buffers
    # have bc_t = 1 (the JIT specialises it, so their loads compile as before), token-major slices of a
    # projection bc_n = 1 (a token's states together).
    brow = b.to(tl.int64) * bc_b + k.to(tl.int64) * bc_k + n.to(tl.int64) * bc_n
    bstep = bc_t
    if ROWS_CONTIG and MODE == 1:
        code = tl.load(dirs_ptr + k)
    else:
        code = -1
    return k, j, dmask, n, nmask, A2, bias, Dv, rows, drow, urow, dstep, ustep, brow, bstep, code


@triton.jit
def _tiles_inputs(u_ptr, delta_ptr, B_ptr, C_ptr, dirs_ptr, orders_ptr, sub, lo, hi, k, L, H, W, drow, urow, dstep,
                  ustep, brow, bstep, dmask, nmask, MODE: tl.constexpr, TS: tl.constexpr, FIRST_FAST: tl.constexpr,
                  CONTIG: tl.constexpr, REV: tl.constexpr, WITH_C: tl.constexpr, GUARD: tl.constexpr):
    """Sub-tile ``sub``'s tokens, token mask, and delta, u, B (and C) as loaded. GUARD (a prefetch, which may
    ask for a sub-tile past the chunk): nothing is read unless lo <= sub < hi."""
    idx, tmask = _sub_tile_tokens(sub, k, L, H, W, dirs_ptr, orders_ptr, MODE, TS, CONTIG, REV)
    if GUARD:
        sv = idx * 0 + sub
        tmask = tmask & (sv >= lo) & (sv < hi)
    m2 = tmask[:, None] & dmask[None, :]
    xr = _raw_tc(delta_ptr, drow, idx * dstep, m2, FIRST_FAST)
    ur = _raw_tc(u_ptr, urow, idx * ustep, m2, FIRST_FAST)
    bm = nmask[:, None] & tmask[None, :]
    Br = tl.load(B_ptr + brow[:, None] + idx[None, :] * bstep, mask=bm, other=0.0)
    if WITH_C:
        Cr = tl.load(C_ptr + brow[:, None] + idx[None, :] * bstep, mask=bm, other=0.0)
    else:
        Cr = Br
    return idx, tmask, xr, ur, Br, Cr


@triton.jit
def _fold_scan(a, bx, h, TS: tl.constexpr):
    """h_t over a [NP, TS, BD] sub-tile from the state h entering it, h folded into the first step (b_0 + a_0 h):
    the scan's running product of a is then unused and compiled away (48 FMUL and 48 FFMA fewer per loop at N=16,
    TS=4 than adding Pc h after the scan)."""
    first = tl.arange(0, TS) == 0
    _, hs = tl.associative_scan((a, tl.where(first[None, :, None], a * h[:, None, :] + bx, bx)), 1, _linear_combine)
    return hs


@triton.jit
def _last_step(hs, TS: tl.constexpr):
    """The state after a sub-tile: hs's last step, [NP, BD]."""
    last = tl.arange(0, TS) == TS - 1
    return tl.sum(tl.where(last[None, :, None], hs, 0.0), axis=1)


@triton.jit
def _summary_step(h, later, tmask, xr, ur, Br, A2, bias, dmask, TS: tl.constexpr, SOFTPLUS: tl.constexpr,
                  FIRST_FAST: tl.constexpr, REV: tl.constexpr, FOLD: tl.constexpr):
    """Add one sub-tile (inputs as _tiles_inputs loaded them) to a chunk's end state: FOLD > 1, sub-tiles in scan
    order by the output kernel's recurrence (_fold_scan); else from the chunk's end, by weights."""
    x, dt = _dt_of(_tc_float(xr, FIRST_FAST), tmask[:, None] & dmask[None, :], bias, SOFTPLUS)
    uu = _tc_float(ur, FIRST_FAST)
    Bv = Br.to(tl.float32)
    if FOLD > 1:
        if REV:  # memory order is the scan order backwards
            dt = tl.flip(dt, 0)
            uu = tl.flip(uu, 0)
            Bv = tl.flip(Bv, 1)
        a = tl.exp2(A2[:, None, :] * dt[None, :, :])
        h = _last_step(_fold_scan(a, (dt * uu)[None, :, :] * Bv[:, :, None], h, TS), TS)
    else:
        # Each step's weight in the chunk's end state is exp(A * dt summed over every later step of
        # the chunk) = exp(A * (later + after-in-sub-tile)).
        if REV:  # memory order: the later scan steps are the earlier tile elements
            after = tl.cumsum(dt, axis=0) - dt + later[None, :]
        else:
            after = tl.cumsum(dt, axis=0, reverse=True) - dt + later[None, :]
        w = tl.exp2(A2[:, None, :] * after[None, :, :])
        h += tl.sum(w * ((dt * uu)[None, :, :] * Bv[:, :, None]), axis=1)
    later += tl.sum(dt, axis=0)
    return h, later


@triton.jit
def _summary_loop(u_ptr, delta_ptr, B_ptr, dirs_ptr, orders_ptr, k, j, L, H, W, A2, bias, drow, urow, dstep, ustep,
                  brow, bstep, dmask, nmask, NP: tl.constexpr, BD: tl.constexpr, TS: tl.constexpr, SUB: tl.constexpr,
                  MODE: tl.constexpr, SOFTPLUS: tl.constexpr, FIRST_FAST: tl.constexpr, CONTIG: tl.constexpr,
                  REV: tl.constexpr, STAGES: tl.constexpr, PREFETCH: tl.constexpr, FOLD: tl.constexpr):
    """A chunk's end state from a zero start, and its sum of dt (see _sub_tile_tokens for CONTIG, REV; _summary_step
    for FOLD). PREFETCH: the next sub-tile's loads are issued before this one's arithmetic."""
    h = tl.zeros([NP, BD], dtype=tl.float32)
    later = tl.zeros([BD], dtype=tl.float32)
    lo = j * SUB
    hi = lo + SUB
    if FOLD > 1:
        step = 1
        start = lo
    else:
        step = -1
        start = hi - 1
    if PREFETCH:
        _, n_tm, n_x, n_u, n_B, _ = _tiles_inputs(u_ptr, delta_ptr, B_ptr, B_ptr, dirs_ptr, orders_ptr, start, lo, hi,
                                                  k, L, H, W, drow, urow, dstep, ustep, brow, bstep, dmask, nmask, MODE,
                                                  TS, FIRST_FAST, CONTIG, REV, False, False)
    for s0 in tl.range(0, SUB, num_stages=STAGES):
        sub = start + step * s0
        if PREFETCH:
            tm, xr, ur, Br = n_tm, n_x, n_u, n_B
            _, n_tm, n_x, n_u, n_B, _ = _tiles_inputs(u_ptr, delta_ptr, B_ptr, B_ptr, dirs_ptr, orders_ptr, sub + step,
                                                      lo, hi, k, L, H, W, drow, urow, dstep, ustep, brow, bstep, dmask,
                                                      nmask, MODE, TS, FIRST_FAST, CONTIG, REV, False, True)
        else:
            _, tm, xr, ur, Br, _ = _tiles_inputs(u_ptr, delta_ptr, B_ptr, B_ptr, dirs_ptr, orders_ptr, sub, lo, hi, k,
                                                 L, H, W, drow, urow, dstep, ustep, brow, bstep, dmask, nmask, MODE, TS,
                                                 FIRST_FAST, CONTIG, REV, False, False)
        h, later = _summary_step(h, later, tm, xr, ur, Br, A2, bias, dmask, TS, SOFTPLUS, FIRST_FAST, REV, FOLD)
    return h, later


@triton.jit(do_not_specialize=["lane_step"])  # see _tiles_program
def _fwd_summary(u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr, dirs_ptr, orders_ptr, sel_ptr, hsum_ptr, dtsum_ptr,
                 L, H, W, K, Dm, N, n_dblk, n_chunks, n_sel, stride, bc_b, bc_k, bc_n, bc_t, lane_step,
                 NP: tl.constexpr, BD: tl.constexpr, TS: tl.constexpr, SUB: tl.constexpr,
                 MODE: tl.constexpr, SHARED_U: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                 FIRST_FAST: tl.constexpr = False, ROWS_CONTIG: tl.constexpr = False, STAGES: tl.constexpr = 1,
                 PREFETCH: tl.constexpr = False, FOLD: tl.constexpr = 0, TOKEN_MAJOR: tl.constexpr = 0):
    k, j, dmask, n, nmask, A2, bias, _, rows, drow, urow, dstep, ustep, brow, bstep, code = _tiles_program(
        A_ptr, A_ptr, bias_ptr, dirs_ptr, sel_ptr, L, K, Dm, N, n_dblk, n_chunks, n_sel, bc_b, bc_k, bc_n, bc_t,
        lane_step, NP, BD, MODE, SHARED_U, False, HAS_BIAS, ROWS_CONTIG, TOKEN_MAJOR)
    if code == 0:  # rows read contiguously (ROWS_CONTIG)
        h, later = _summary_loop(u_ptr, delta_ptr, B_ptr, dirs_ptr, orders_ptr, k, j, L, H, W, A2, bias, drow, urow,
                                 dstep, ustep, brow, bstep, dmask, nmask, NP, BD, TS, SUB, MODE, SOFTPLUS, FIRST_FAST,
                                 True, False, STAGES, PREFETCH, FOLD)
    elif code == 2:
        h, later = _summary_loop(u_ptr, delta_ptr, B_ptr, dirs_ptr, orders_ptr, k, j, L, H, W, A2, bias, drow, urow,
                                 dstep, ustep, brow, bstep, dmask, nmask, NP, BD, TS, SUB, MODE, SOFTPLUS, FIRST_FAST,
                                 True, True, STAGES, PREFETCH, FOLD)
    else:
        h, later = _summary_loop(u_ptr, delta_ptr, B_ptr, dirs_ptr, orders_ptr, k, j, L, H, W, A2, bias, drow, urow,
                                 dstep, ustep, brow, bstep, dmask, nmask, NP, BD, TS, SUB, MODE, SOFTPLUS, FIRST_FAST,
                                 False, False, STAGES, PREFETCH, FOLD)
    tot = later
    out = (rows[None, :] * NP + n[:, None]) * stride + j
    tl.store(hsum_ptr + out, h, mask=(n < NP)[:, None] & dmask[None, :])
    tl.store(dtsum_ptr + rows * stride + j, tot, mask=dmask)


@triton.jit
def _carry(hsum_ptr, dtsum_ptr, A_ptr, out_ptr, KD, N, n_rows, n_chunks,
           NP: tl.constexpr, R: tl.constexpr, CT: tl.constexpr, REVERSE: tl.constexpr):
    """out[j] = P_j * out[j -/+ 1] + hsum[j] over chunks (inclusive), P_j = exp(A * dtsum[j]).

    Tiles are [CT, R] (chunk, row) so that rows sit on the lanes and the scan is in-thread.
    """
    pid = tl.program_id(0)
    rows = pid * R + tl.arange(0, R)  # row = (b * KD + c) * NP + n
    rmask = rows < n_rows
    n = rows % NP
    bc = rows // NP
    c = bc % KD
    A2 = tl.load(A_ptr + c * N + n, mask=rmask & (n < N), other=0.0) * LOG2E
    base = rows.to(tl.int64) * n_chunks
    dbase = bc.to(tl.int64) * n_chunks
    carry = tl.zeros([R], dtype=tl.float32)
    for start in range(0, n_chunks, CT):
        i = start + tl.arange(0, CT)
        if REVERSE:
            jj = n_chunks - 1 - i
        else:
            jj = i
        m = (i < n_chunks)[:, None] & rmask[None, :]
        hv = tl.load(hsum_ptr + base[None, :] + jj[:, None], mask=m, other=0.0)
        S = tl.load(dtsum_ptr + dbase[None, :] + jj[:, None], mask=m, other=0.0)
        P = tl.exp2(A2[None, :] * S)
        Pc, Hc = tl.associative_scan((P, hv), 0, _linear_combine)
        res = Hc + Pc * carry[None, :]
        tl.store(out_ptr + base[None, :] + jj[:, None], res, mask=m)
        last = tl.arange(0, CT) == CT - 1
        carry = tl.sum(tl.where(last[:, None], res, 0.0), axis=0)


@triton.jit(do_not_specialize=["lane_step"])  # see _tiles_program
def _fwd_output(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dirs_ptr, orders_ptr, sel_ptr, hin_ptr,
                y_ptr, states_ptr, L, H, W, K, Dm, N, n_dblk, n_chunks, n_save, n_sel, stride, bc_b, bc_k, bc_n, bc_t,
                lane_step, NP: tl.constexpr, BD: tl.constexpr, TS: tl.constexpr, SUB: tl.constexpr,
                MODE: tl.constexpr, SHARED_U: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, SAVE_EVERY: tl.constexpr, FIRST_FAST: tl.constexpr = False,
                ROWS_CONTIG: tl.constexpr = False, STAGES: tl.constexpr = 1, PREFETCH: tl.constexpr = False,
                FOLD: tl.constexpr = 0, TOKEN_MAJOR: tl.constexpr = 0):
    # SAVE_EVERY > 0: store the state at every SAVE_EVERY-th sub-tile start (n_save of them),
    # where the backward pass starts its sub-tiles.
    k, j, dmask, n, nmask, A2, bias, Dv, rows, drow, urow, dstep, ustep, brow, bstep, code = _tiles_program(
        A_ptr, D_ptr, bias_ptr, dirs_ptr, sel_ptr, L, K, Dm, N, n_dblk, n_chunks, n_sel, bc_b, bc_k, bc_n, bc_t,
        lane_step, NP, BD, MODE, SHARED_U, HAS_D, HAS_BIAS, ROWS_CONTIG, TOKEN_MAJOR)
    srow = rows[None, :] * NP + n[:, None]  # [NP, BD] rows of the (Bt, KD, NP, chunks) buffers
    smask = nmask[:, None] & dmask[None, :]
    # State entering this chunk: the carry scan's inclusive result of chunk j - 1.
    if FIRST_FAST:  # [BD, NP] then transposed, for the reason in _load_tc
        h = tl.trans(tl.load(hin_ptr + tl.trans(srow) * stride + (j - 1),
                             mask=tl.trans(smask & (srow * 0 + j > 0)), other=0.0))
    else:
        h = tl.load(hin_ptr + srow * stride + (j - 1), mask=smask & (srow * 0 + j > 0), other=0.0)
    if code == 0:  # rows read contiguously (ROWS_CONTIG)
        _output_loop(u_ptr, delta_ptr, B_ptr, C_ptr, dirs_ptr, orders_ptr, y_ptr, states_ptr, h, k, j, L, H, W, n_save,
                     A2, bias, Dv, drow, urow, dstep, ustep, brow, bstep, srow, smask, dmask, nmask, NP, BD, TS, SUB,
                     MODE, SAVE_EVERY, SOFTPLUS, FIRST_FAST, True, False, STAGES, PREFETCH, FOLD)
    elif code == 2:
        _output_loop(u_ptr, delta_ptr, B_ptr, C_ptr, dirs_ptr, orders_ptr, y_ptr, states_ptr, h, k, j, L, H, W, n_save,
                     A2, bias, Dv, drow, urow, dstep, ustep, brow, bstep, srow, smask, dmask, nmask, NP, BD, TS, SUB,
                     MODE, SAVE_EVERY, SOFTPLUS, FIRST_FAST, True, True, STAGES, PREFETCH, FOLD)
    else:
        _output_loop(u_ptr, delta_ptr, B_ptr, C_ptr, dirs_ptr, orders_ptr, y_ptr, states_ptr, h, k, j, L, H, W, n_save,
                     A2, bias, Dv, drow, urow, dstep, ustep, brow, bstep, srow, smask, dmask, nmask, NP, BD, TS, SUB,
                     MODE, SAVE_EVERY, SOFTPLUS, FIRST_FAST, False, False, STAGES, PREFETCH, FOLD)


@triton.jit
def _output_step(h, idx, tmask, xr, ur, Br, Cr, sub, y_ptr, states_ptr, n_save, L, A2, bias, Dv, drow, dstep, srow,
                 smask, dmask, TS: tl.constexpr, SAVE_EVERY: tl.constexpr, SOFTPLUS: tl.constexpr,
                 FIRST_FAST: tl.constexpr, REV: tl.constexpr, FOLD: tl.constexpr):
    """One sub-tile's outputs (inputs as _tiles_inputs loaded them) from the state ``h`` entering it; the state
    leaving it. FOLD > 0: by _fold_scan, else Hc + Pc h after a scan from zero."""
    m2 = tmask[:, None] & dmask[None, :]
    x, dt = _dt_of(_tc_float(xr, FIRST_FAST), m2, bias, SOFTPLUS)
    uu = _tc_float(ur, FIRST_FAST)
    Bv = Br.to(tl.float32)
    Cv = Cr.to(tl.float32)
    if REV:
        dt = tl.flip(dt, 0)
        uu = tl.flip(uu, 0)
        Bv = tl.flip(Bv, 1)
        Cv = tl.flip(Cv, 1)
    if SAVE_EVERY > 0:
        keep = ((srow * 0 + sub) % SAVE_EVERY == 0) & (srow * 0 + sub * TS < L)
        if FIRST_FAST:
            tl.store(states_ptr + tl.trans(srow) * n_save + sub // SAVE_EVERY, tl.trans(h), mask=tl.trans(smask & keep))
        else:
            tl.store(states_ptr + srow * n_save + sub // SAVE_EVERY, h, mask=smask & keep)
    a = tl.exp2(A2[:, None, :] * dt[None, :, :])
    bx = (dt * uu)[None, :, :] * Bv[:, :, None]
    if FOLD > 0:
        hs = _fold_scan(a, bx, h, TS)
    else:
        Pc, Hc = tl.associative_scan((a, bx), 1, _linear_combine)
        hs = Hc + Pc * h[:, None, :]
    y = tl.sum(hs * Cv[:, :, None], axis=0) + Dv[None, :] * uu
    if REV:
        y = tl.flip(y, 0)
    _store_tc(y_ptr, drow, idx * dstep, y, m2, FIRST_FAST)
    return _last_step(hs, TS)


@triton.jit
def _output_loop(u_ptr, delta_ptr, B_ptr, C_ptr, dirs_ptr, orders_ptr, y_ptr, states_ptr, h, k, j, L, H, W, n_save, A2,
                 bias, Dv, drow, urow, dstep, ustep, brow, bstep, srow, smask, dmask, nmask, NP: tl.constexpr,
                 BD: tl.constexpr, TS: tl.constexpr, SUB: tl.constexpr, MODE: tl.constexpr, SAVE_EVERY: tl.constexpr,
                 SOFTPLUS: tl.constexpr, FIRST_FAST: tl.constexpr, CONTIG: tl.constexpr, REV: tl.constexpr,
                 STAGES: tl.constexpr, PREFETCH: tl.constexpr, FOLD: tl.constexpr):
    """A chunk's outputs from the state ``h`` entering it (see _sub_tile_tokens for CONTIG, REV). PREFETCH: the
    next sub-tile's loads are issued before this one's arithmetic (registers; any load width). FOLD: see
    _output_step."""
    lo = j * SUB
    hi = lo + SUB
    if PREFETCH:
        n_idx, n_tm, n_x, n_u, n_B, n_C = _tiles_inputs(u_ptr, delta_ptr, B_ptr, C_ptr, dirs_ptr, orders_ptr, lo, lo,
                                                        hi, k, L, H, W, drow, urow, dstep, ustep, brow, bstep, dmask,
                                                        nmask, MODE, TS, FIRST_FAST, CONTIG, REV, True, False)
    for s in tl.range(0, SUB, num_stages=STAGES):  # STAGES > 1: the next sub-tiles' loads in flight
        sub = lo + s
        if PREFETCH:
            idx, tm, xr, ur, Br, Cr = n_idx, n_tm, n_x, n_u, n_B, n_C
            n_idx, n_tm, n_x, n_u, n_B, n_C = _tiles_inputs(u_ptr, delta_ptr, B_ptr, C_ptr, dirs_ptr, orders_ptr,
                                                            sub + 1, lo, hi, k, L, H, W, drow, urow, dstep, ustep, brow,
                                                            bstep, dmask, nmask, MODE, TS, FIRST_FAST, CONTIG, REV,
                                                            True, True)
        else:
            idx, tm, xr, ur, Br, Cr = _tiles_inputs(u_ptr, delta_ptr, B_ptr, C_ptr, dirs_ptr, orders_ptr, sub, lo, hi,
                                                    k, L, H, W, drow, urow, dstep, ustep, brow, bstep, dmask, nmask,
                                                    MODE, TS, FIRST_FAST, CONTIG, REV, True, False)
        h = _output_step(h, idx, tm, xr, ur, Br, Cr, sub, y_ptr, states_ptr, n_save, L, A2, bias, Dv, drow, dstep, srow,
                         smask, dmask, TS, SAVE_EVERY, SOFTPLUS, FIRST_FAST, REV, FOLD)


@triton.jit
def _bwd_summary(delta_ptr, A_ptr, C_ptr, bias_ptr, dirs_ptr, orders_ptr, sel_ptr, gy_ptr, gsum_ptr, dtsum_ptr,
                 L, H, W, K, Dm, N, n_dblk, n_sub, n_sel, stride,
                 NP: tl.constexpr, BD: tl.constexpr, TS: tl.constexpr,
                 MODE: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                 FIRST_FAST: tl.constexpr = False):
    """Per sub-tile: G = sum_t exp(A * cumsum(dt)_t) * gy_t * C_t (what it sends left), sum(dt)."""
    b, k, j, d = _selected_coords(tl.program_id(0), n_dblk, n_sub, sel_ptr, n_sel, Dm, BD)
    KD = K * Dm
    dmask = d < Dm
    c = k * Dm + d
    n = tl.arange(0, NP)
    nmask = n < N
    A2, bias, _ = _channel_params(A_ptr, A_ptr, bias_ptr, c, dmask, n, nmask, N, False, HAS_BIAS, BD)
    rows = (b * KD + c).to(tl.int64)
    drow = rows * L
    brow = ((b * K + k) * N + n).to(tl.int64) * L
    t = j * TS + tl.arange(0, TS)
    tmask = t < L
    idx = _tokens(t, k, L, H, W, dirs_ptr, orders_ptr, MODE)
    m2 = tmask[:, None] & dmask[None, :]
    x, dt = _load_dt(delta_ptr, drow, idx, m2, bias, SOFTPLUS, FIRST_FAST)
    gy = _load_tc(gy_ptr, drow, idx, m2, FIRST_FAST)
    Cv = tl.load(C_ptr + brow[:, None] + idx[None, :], mask=nmask[:, None] & tmask[None, :],
                 other=0.0).to(tl.float32)
    cs = tl.cumsum(dt, axis=0)
    w = tl.exp2(A2[:, None, :] * cs[None, :, :])
    g = tl.sum(w * (gy[None, :, :] * Cv[:, :, None]), axis=1)
    out = (rows[None, :] * NP + n[:, None]) * stride + j
    tl.store(gsum_ptr + out, g, mask=(n < NP)[:, None] & dmask[None, :])
    tl.store(dtsum_ptr + rows * stride + j, tl.sum(dt, axis=0), mask=dmask)


@triton.jit
def _bwd_output(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dirs_ptr, orders_ptr, sel_ptr, gy_ptr,
                states_ptr, gin_ptr, gu_ptr, gdelta_ptr, gB_ptr, gC_ptr, gA_ptr, gD_ptr, gbias_ptr,
                L, H, W, K, Dm, N, n_dblk, n_sub, n_sel, stride, n_save,
                NP: tl.constexpr, BD: tl.constexpr, TS: tl.constexpr,
                MODE: tl.constexpr, SHARED_U: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, FIRST_FAST: tl.constexpr = False):
    """One program per (batch, direction, sub-tile): every gradient of the sub-tile.

    Runs the n_sel directions in sel_ptr; ``stride`` is the row stride of the carry buffer,
    ``n_save`` that of the saved states.
    """
    pid = tl.program_id(0)
    j = pid % n_sub
    bk = pid // n_sub
    b = bk // n_sel
    k = tl.load(sel_ptr + bk % n_sel)
    KD = K * Dm
    n = tl.arange(0, NP)
    nmask = n < N
    tloc = tl.arange(0, TS)
    t = j * TS + tloc
    tmask = t < L
    idx = _tokens(t, k, L, H, W, dirs_ptr, orders_ptr, MODE)
    idx1 = _tokens(t + 1, k, L, H, W, dirs_ptr, orders_ptr, MODE)  # next step, for a_{t+1}
    next_in = (tloc < TS - 1) & (t + 1 < L)
    lastt = tloc == TS - 1
    brow = ((b * K + k) * N + n).to(tl.int64) * L
    bm = nmask[:, None] & tmask[None, :]
    Bv = tl.load(B_ptr + brow[:, None] + idx[None, :], mask=bm, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + brow[:, None] + idx[None, :], mask=bm, other=0.0).to(tl.float32)
    gB = tl.zeros([NP, TS], dtype=tl.float32)
    gC = tl.zeros([NP, TS], dtype=tl.float32)
    for dblk in range(n_dblk):
        d = dblk * BD + tl.arange(0, BD)
        dmask = d < Dm
        c = k * Dm + d
        A2, bias, Dv = _channel_params(A_ptr, D_ptr, bias_ptr, c, dmask, n, nmask, N, HAS_D, HAS_BIAS, BD)
        rows, drow, urow = _channel_rows(b, c, d, KD, Dm, L, SHARED_U)
        srow = rows[None, :] * NP + n[:, None]
        smask = nmask[:, None] & dmask[None, :]
        m2 = tmask[:, None] & dmask[None, :]
        x, dt = _load_dt(delta_ptr, drow, idx, m2, bias, SOFTPLUS, FIRST_FAST)
        _, dt1 = _load_dt(delta_ptr, drow, idx1, next_in[:, None] & dmask[None, :], bias, SOFTPLUS, FIRST_FAST)
        uu = _load_tc(u_ptr, urow, idx, m2, FIRST_FAST)
        gy = _load_tc(gy_ptr, drow, idx, m2, FIRST_FAST)
        h0 = tl.load(states_ptr + srow * n_save + j, mask=smask, other=0.0)
        # Carry from the right: a_{s'} * dL/dh_{s'} at the first step s' of sub-tile j + 1.
        gr = tl.load(gin_ptr + srow * stride + (j + 1), mask=smask & (srow * 0 + j + 1 < n_sub), other=0.0)
        du = dt * uu
        a = tl.exp2(A2[:, None, :] * dt[None, :, :])
        bx = du[None, :, :] * Bv[:, :, None]
        Pc, Hc = tl.associative_scan((a, bx), 1, _linear_combine)
        hs = Hc + Pc * h0[:, None, :]
        # dL/dh_t = gy_t C_t + a_{t+1} dL/dh_{t+1}: a reverse scan; the right carry enters at the end.
        a1 = tl.exp2(A2[:, None, :] * dt1[None, :, :])
        cvec = gy[None, :, :] * Cv[:, :, None] + tl.where(lastt[None, :, None], gr[:, None, :], 0.0)
        _, gh = tl.associative_scan((a1, cvec), 1, _linear_combine, reverse=True)
        gC += tl.sum(gy[None, :, :] * hs, axis=2)
        gB += tl.sum(gh * du[None, :, :], axis=2)
        gdu = tl.sum(gh * Bv[:, :, None], axis=0)
        # dL/d(dt*A) = dL/dh_t * a_t * h_{t-1} = dL/dh_t * (h_t - b_t)
        gl = gh * (hs - bx)
        gdt = tl.sum(gl * A2[:, None, :], axis=0) / LOG2E + gdu * uu
        gA_part = tl.sum(gl * dt[None, :, :], axis=1)
        if SOFTPLUS:
            gx = gdt * tl.where(x > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-x)))
        else:
            gx = gdt
        gx = tl.where(m2, gx, 0.0)
        gu = gdu * dt + Dv[None, :] * gy
        # (Bt, K*Dm, L); with a shared u the host sums the K directions.
        _store_tc(gu_ptr, drow, idx, gu, m2, FIRST_FAST)
        _store_tc(gdelta_ptr, drow, idx, gx, m2, FIRST_FAST)
        prow = ((b * n_sub + j) * KD + c).to(tl.int64)  # partials (Bt, n_sub, KD[, NP])
        tl.store(gA_ptr + prow[None, :] * NP + n[:, None], gA_part, mask=smask)
        if HAS_D:
            tl.store(gD_ptr + prow, tl.sum(gy * uu, axis=0), mask=dmask)
        if HAS_BIAS:
            tl.store(gbias_ptr + prow, tl.sum(gx, axis=0), mask=dmask)
    tl.store(gB_ptr + brow[:, None] + idx[None, :], gB.to(gB_ptr.dtype.element_ty), mask=bm)
    tl.store(gC_ptr + brow[:, None] + idx[None, :], gC.to(gC_ptr.dtype.element_ty), mask=bm)


# ---- forward, "lines" variant --------------------------------------------------------
# A program steps through TC scan positions one at a time for G chunks x BD channels, with
# the state [NP, BD, G] in registers (no scan primitive at all). The G chunks are the same
# piece of G adjacent scan lines (image columns for the column directions), so at every
# step the G tokens read are adjacent in memory; G sits on the lanes, channels and states
# in-thread. lines_ptr holds per direction (pieces per line, number of lines); when a
# direction's lines are not a multiple of TC long, each chunk is its own "line".


@triton.jit
def _fwd_lines(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dirs_ptr, orders_ptr, lines_ptr, sel_ptr,
               hin_ptr, y_ptr, states_ptr, hsum_ptr, dtsum_ptr,
               L, H, W, K, Dm, N, n_dblk, n_work, n_chunks, n_save, TC, n_sel,
               NP: tl.constexpr, BD: tl.constexpr, G: tl.constexpr, MODE: tl.constexpr,
               SHARED_U: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
               SUMMARY: tl.constexpr, SAVE_EVERY: tl.constexpr, FIRST_FAST: tl.constexpr = False):
    """SUMMARY: end state of each chunk from zero + sum(dt) (-> hsum, dtsum); else y (and states).

    Runs the n_sel directions listed in sel_ptr (all K, or the column directions of "hybrid").
    FIRST_FAST (Triton before 3.9): gather the carried-in state lines-first (see below).
    """
    pid = tl.program_id(0)
    dblk = pid % n_dblk
    rest = pid // n_dblk
    w = rest % n_work
    bk = rest // n_work
    b = bk // n_sel
    k = tl.load(sel_ptr + bk % n_sel)
    KD = K * Dm
    ppl = tl.load(lines_ptr + 2 * k)
    n_lines = tl.load(lines_ptr + 2 * k + 1)
    line = (w // ppl) * G + tl.arange(0, G)
    gmask = line < n_lines
    chunk = line * ppl + w % ppl  # [G] chunk ids, in scan order
    d = dblk * BD + tl.arange(0, BD)
    dmask = d < Dm
    c = k * Dm + d
    n = tl.arange(0, NP)
    nmask = n < N
    A2, bias, Dv = _channel_params(A_ptr, D_ptr, bias_ptr, c, dmask, n, nmask, N, HAS_D, HAS_BIAS, BD)
    rows, drow, urow = _channel_rows(b, c, d, KD, Dm, L, SHARED_U)
    brow = ((b * K + k) * N + n).to(tl.int64) * L
    srow = rows[None, :, None] * NP + n[:, None, None]  # [NP, BD, 1]
    smask = nmask[:, None, None] & dmask[None, :, None] & gmask[None, None, :]
    if SUMMARY:
        h = tl.zeros([NP, BD, G], dtype=tl.float32)
        tot = tl.zeros([BD, G], dtype=tl.float32)
    elif FIRST_FAST:
        # Loaded as [G, NP, BD] and permuted: Triton 3.6 lays a gather out with its first axis
        # fastest, and the lines belong on the lanes (loaded as [NP, BD, G] it put the states
        # there and compiled the loop into 3x the instructions; 3.9 does better the plain way).
        offs = (rows[None, None, :] * NP + n[None, :, None]) * n_chunks + (chunk[:, None, None] - 1)
        hmask = gmask[:, None, None] & nmask[None, :, None] & dmask[None, None, :] & (chunk[:, None, None] > 0)
        h = tl.permute(tl.load(hin_ptr + offs, mask=hmask, other=0.0), (1, 2, 0))
    else:
        h = tl.load(hin_ptr + srow * n_chunks + (chunk[None, None, :] - 1),
                    mask=smask & (chunk[None, None, :] > 0), other=0.0)
    t0 = chunk * TC
    for s in range(TC):
        t = t0 + s
        tmask = gmask & (t < L)
        idx = _tokens(t, k, L, H, W, dirs_ptr, orders_ptr, MODE)
        m2 = dmask[:, None] & tmask[None, :]
        x = tl.load(delta_ptr + drow[:, None] + idx[None, :], mask=m2, other=0.0).to(tl.float32) + bias[:, None]
        if SOFTPLUS:
            dt = _softplus(x)
        else:
            dt = x
        dt = tl.where(m2, dt, 0.0)
        uu = tl.load(u_ptr + urow[:, None] + idx[None, :], mask=m2, other=0.0).to(tl.float32)
        bm = nmask[:, None] & tmask[None, :]
        Bv = tl.load(B_ptr + brow[:, None] + idx[None, :], mask=bm, other=0.0).to(tl.float32)
        if SAVE_EVERY > 0:  # (only in the output pass)
            keep = smask & (t[None, None, :] % SAVE_EVERY == 0) & (t[None, None, :] < L)
            tl.store(states_ptr + srow * n_save + t[None, None, :] // SAVE_EVERY, h, mask=keep)
        a = tl.exp2(A2[:, :, None] * dt[None, :, :])
        h = a * h + (dt * uu)[None, :, :] * Bv[:, None, :]
        if SUMMARY:
            tot += dt
        else:
            Cv = tl.load(C_ptr + brow[:, None] + idx[None, :], mask=bm, other=0.0).to(tl.float32)
            y = tl.sum(h * Cv[:, None, :], axis=0) + Dv[:, None] * uu
            tl.store(y_ptr + drow[:, None] + idx[None, :], y.to(y_ptr.dtype.element_ty), mask=m2)
    if SUMMARY:
        tl.store(hsum_ptr + srow * n_chunks + chunk[None, None, :], h,
                 mask=(n < NP)[:, None, None] & dmask[None, :, None] & gmask[None, None, :])
        tl.store(dtsum_ptr + rows[:, None] * n_chunks + chunk[None, :], tot, mask=dmask[:, None] & gmask[None, :])


# ---- forward, row directions of "hybrid" ------------------------------------------------
# For a scan along image rows (row, row_rev, or no orders = one row of length L), consecutive
# scan steps are consecutive in memory. A program takes one row segment of SUB * GT tokens
# (one chunk of the two-level scan) and, one channel after the other (BD of them), walks it in
# sub-tiles of GT tokens carrying the state [NP]. Tiles are 2-D [NP, GT], tokens contiguous,
# so loads vectorise and tl.associative_scan runs in-thread first and then across lanes only;
# B and C of the segment are re-read per channel from cache. REV (row_rev) scans each sub-tile
# backwards and walks the sub-tiles from the segment's end. Column directions go to
# _fwd_lines, where adjacent columns sit on the lanes; together they are the "hybrid" forward.


@triton.jit
def _fwd_rows(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, sel_ptr,
              hin_ptr, y_ptr, states_ptr, hsum_ptr, dtsum_ptr,
              L, NL, LL, LS, PS, K, Dm, N, n_dblk, n_seg, n_chunks, n_save, n_sel,
              NP: tl.constexpr, BD: tl.constexpr, GT: tl.constexpr, SUB: tl.constexpr, REV: tl.constexpr,
              SHARED_U: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
              SUMMARY: tl.constexpr, SAVE: tl.constexpr):
    """SUMMARY: end state of each row segment from zero + sum(dt); else y.

    SAVE: also store the state entering every sub-tile, at slot (row, sub-tile in memory order)
    of the states buffer (n_save slots per channel and state), where _bwd_rows restarts.
    """
    pid = tl.program_id(0)
    dblk = pid % n_dblk
    b, k, ln, seg, j = _segment_coords(pid // n_dblk, n_seg, NL, sel_ptr, n_sel, REV)
    KD = K * Dm
    n = tl.arange(0, NP)
    nmask = n < N
    lane = tl.arange(0, GT)
    if REV:
        end = lane == 0
    else:
        end = lane == GT - 1
    brow = ((b * K + k) * N + n).to(tl.int64) * L
    for dd in range(BD):
        d = dblk * BD + dd
        live = n * 0 + d < Dm  # [NP]; the scalar condition as a tensor (see _tokens)
        c = k * Dm + d
        A2 = tl.load(A_ptr + c * N + n, mask=nmask & live, other=0.0) * LOG2E
        if HAS_BIAS:
            bias = tl.load(bias_ptr + c + n * 0, mask=live, other=0.0)
        else:
            bias = tl.zeros([NP], dtype=tl.float32)
        if HAS_D:
            Dv = tl.sum(tl.where(n == 0, tl.load(D_ptr + c + n * 0, mask=live, other=0.0), 0.0), axis=0)
        else:
            Dv = 0.0
        bias0 = tl.sum(tl.where(n == 0, bias, 0.0), axis=0)
        row, drow, urow = _channel_rows(b, c, d, KD, Dm, L, SHARED_U)
        srow = row * NP + n  # [NP] rows of the (Bt, KD, NP, chunks) buffers
        smask = nmask & live
        if SUMMARY:
            h = tl.zeros([NP], dtype=tl.float32)
            tot = tl.zeros([GT], dtype=tl.float32)
        else:
            h = tl.load(hin_ptr + srow * n_chunks + (j - 1), mask=smask & (n * 0 + j > 0), other=0.0)
        for i in range(SUB):
            if REV:
                i_mem = SUB - 1 - i
            else:
                i_mem = i
            pos = seg * (SUB * GT) + i_mem * GT + lane
            if SAVE:
                tl.store(states_ptr + srow * n_save + (ln * n_seg + seg) * SUB + i_mem, h, mask=smask)
            tmask = (pos < LL) & (lane * 0 + d < Dm)
            idx = ln * LS + pos * PS  # raster index (contiguous along the tile when PS == 1)
            x = tl.load(delta_ptr + drow + idx, mask=tmask, other=0.0).to(tl.float32) + bias0
            if SOFTPLUS:
                dt = _softplus(x)
            else:
                dt = x
            dt = tl.where(tmask, dt, 0.0)
            uu = tl.load(u_ptr + urow + idx, mask=tmask, other=0.0).to(tl.float32)
            bm = nmask[:, None] & tmask[None, :]
            Bv = tl.load(B_ptr + brow[:, None] + idx[None, :], mask=bm, other=0.0).to(tl.float32)
            a = tl.exp2(A2[:, None] * dt[None, :])  # [NP, GT]; masked tokens: a = 1, b = 0
            bx = (dt * uu)[None, :] * Bv
            Pc, Hc = tl.associative_scan((a, bx), 1, _linear_combine, reverse=REV)
            hs = Hc + Pc * h[:, None]
            if SUMMARY:
                tot += dt
            else:
                Cv = tl.load(C_ptr + brow[:, None] + idx[None, :], mask=bm, other=0.0).to(tl.float32)
                y = tl.sum(hs * Cv, axis=0) + Dv * uu
                tl.store(y_ptr + drow + idx, y.to(y_ptr.dtype.element_ty), mask=tmask)
            h = tl.sum(tl.where(end[None, :], hs, 0.0), axis=1)
        if SUMMARY:
            tl.store(hsum_ptr + srow * n_chunks + j, h, mask=(n < NP) & live)
            tl.store(dtsum_ptr + row * n_chunks + j + n * 0, tl.sum(tot, axis=0) + n * 0.0, mask=(n == 0) & live)


# ---- backward, row directions of "hybrid" -----------------------------------------------
# The mirror of _fwd_rows: the same row segments are the chunks of the two-level reverse scan,
# tiles [NP, GT] with contiguous tokens on the lanes. _bwd_rows_summary gives each segment's
# G = sum_t exp(A * dt summed over the segment up to t) * gy_t * C_t (what it sends left);
# _carry runs over segments in reverse; _bwd_rows then walks its segment's sub-tiles from the
# last scan step back, every channel of the direction in turn, so dL/dB and dL/dC (sums over
# channels) stay in registers: no cross-lane channel sums and no atomics.


@triton.jit
def _bwd_rows_summary(delta_ptr, A_ptr, C_ptr, bias_ptr, sel_ptr, gy_ptr, gsum_ptr, dtsum_ptr,
                      L, NL, LL, LS, PS, K, Dm, N, n_dblk, n_seg, stride, n_sel,
                      NP: tl.constexpr, BD: tl.constexpr, GT: tl.constexpr, SUB: tl.constexpr,
                      REV: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    pid = tl.program_id(0)
    dblk = pid % n_dblk
    b, k, ln, seg, j = _segment_coords(pid // n_dblk, n_seg, NL, sel_ptr, n_sel, REV)
    n = tl.arange(0, NP)
    nmask = n < N
    lane = tl.arange(0, GT)
    brow = ((b * K + k) * N + n).to(tl.int64) * L
    for dd in range(BD):
        d = dblk * BD + dd
        live = n * 0 + d < Dm
        c = k * Dm + d
        A2 = tl.load(A_ptr + c * N + n, mask=nmask & live, other=0.0) * LOG2E
        if HAS_BIAS:
            bias0 = tl.sum(tl.where(n == 0, tl.load(bias_ptr + c + n * 0, mask=live, other=0.0), 0.0), axis=0)
        else:
            bias0 = 0.0
        row = (b * (K * Dm) + c).to(tl.int64)
        srow = row * NP + n
        g = tl.zeros([NP], dtype=tl.float32)
        before = tl.zeros([GT], dtype=tl.float32)  # dt summed over the segment's earlier scan steps
        for i in range(SUB):
            if REV:
                pos = seg * (SUB * GT) + (SUB - 1 - i) * GT + lane
            else:
                pos = seg * (SUB * GT) + i * GT + lane
            tmask = (pos < LL) & (lane * 0 + d < Dm)
            idx = ln * LS + pos * PS
            x = tl.load(delta_ptr + row * L + idx, mask=tmask, other=0.0).to(tl.float32) + bias0
            if SOFTPLUS:
                dt = _softplus(x)
            else:
                dt = x
            dt = tl.where(tmask, dt, 0.0)
            gy = tl.load(gy_ptr + row * L + idx, mask=tmask, other=0.0).to(tl.float32)
            Cv = tl.load(C_ptr + brow[:, None] + idx[None, :], mask=nmask[:, None] & tmask[None, :],
                         other=0.0).to(tl.float32)
            cs = before + tl.cumsum(dt, axis=0, reverse=REV)  # inclusive, in scan order
            w = tl.exp2(A2[:, None] * cs[None, :])
            g += tl.sum(w * (gy[None, :] * Cv), axis=1)
            before += tl.sum(dt, axis=0)
        tot = tl.sum(tl.where(lane == 0, before, 0.0), axis=0)
        tl.store(gsum_ptr + srow * stride + j, g, mask=(n < NP) & live)
        tl.store(dtsum_ptr + row * stride + j + n * 0, tot + n * 0.0, mask=(n == 0) & live)


@triton.jit
def _bwd_rows(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, sel_ptr, gy_ptr, states_ptr, gin_ptr,
              gu_ptr, gdelta_ptr, gB_ptr, gC_ptr, gA_ptr, gD_ptr, gbias_ptr,
              L, NL, LL, LS, PS, K, Dm, N, n_seg, stride, n_save, n_chunks, n_sel,
              NP: tl.constexpr, DMP: tl.constexpr, GT: tl.constexpr, SUB: tl.constexpr, REV: tl.constexpr,
              SHARED_U: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """One program per (batch, direction, row segment), every channel: all gradients of the segment.

    Per channel, the gradient entering the current sub-tile from the right and the dA / dD /
    d(delta_bias) sums live in [NP, DMP] / [DMP] registers (a channel's column picked with
    tl.where), so no thread reads what another wrote to global memory in the same launch.
    gA/gD/gbias: per-(segment, channel) partials (Bt, n_chunks, K*Dm[, NP]) summed on the host.
    """
    b, k, ln, seg, j = _segment_coords(tl.program_id(0), n_seg, NL, sel_ptr, n_sel, REV)
    KD = K * Dm
    if REV:
        first = tl.arange(0, GT) == GT - 1  # the first scan step of a sub-tile (memory order is reversed)
        last = tl.arange(0, GT) == 0
    else:
        first = tl.arange(0, GT) == 0
        last = tl.arange(0, GT) == GT - 1
    n = tl.arange(0, NP)
    nmask = n < N
    lane = tl.arange(0, GT)
    brow = ((b * K + k) * N + n).to(tl.int64) * L
    dcol = tl.arange(0, DMP)
    grs = tl.zeros([NP, DMP], dtype=tl.float32)  # per channel: what enters the sub-tile from the right
    gAs = tl.zeros([NP, DMP], dtype=tl.float32)
    gDs = tl.zeros([DMP], dtype=tl.float32)
    gbs = tl.zeros([DMP], dtype=tl.float32)
    for i0 in range(SUB):  # sub-tiles from the segment's last scan step back
        if REV:
            i_mem = i0
        else:
            i_mem = SUB - 1 - i0
        pos = seg * (SUB * GT) + i_mem * GT + lane
        tmask = pos < LL
        idx = ln * LS + pos * PS
        # The next scan step's token, when it lies in this sub-tile and in the image. Tokens past the
        # row's end pass the gradient through (a1 = 1) to the last real one; the sub-tile's last scan
        # step gets a1 = 0 and the carry from the right instead.
        if REV:
            nxt = idx - PS
            next_ok = (lane > 0) & (pos - 1 < LL)
        else:
            nxt = idx + PS
            next_ok = (lane < GT - 1) & (pos + 1 < LL)
        bm = nmask[:, None] & tmask[None, :]
        Bv = tl.load(B_ptr + brow[:, None] + idx[None, :], mask=bm, other=0.0).to(tl.float32)
        Cv = tl.load(C_ptr + brow[:, None] + idx[None, :], mask=bm, other=0.0).to(tl.float32)
        gB = tl.zeros([NP, GT], dtype=tl.float32)
        gC = tl.zeros([NP, GT], dtype=tl.float32)
        for d in range(Dm):
            c = k * Dm + d
            A2 = tl.load(A_ptr + c * N + n, mask=nmask, other=0.0) * LOG2E
            if HAS_BIAS:
                bias0 = tl.sum(tl.where(n == 0, tl.load(bias_ptr + c + n * 0), 0.0), axis=0)
            else:
                bias0 = 0.0
            if HAS_D:
                Dv = tl.sum(tl.where(n == 0, tl.load(D_ptr + c + n * 0), 0.0), axis=0)
            else:
                Dv = 0.0
            row, drow, urow = _channel_rows(b, c, d, KD, Dm, L, SHARED_U)
            srow = row * NP + n
            x = tl.load(delta_ptr + drow + idx, mask=tmask, other=0.0).to(tl.float32) + bias0
            x1 = tl.load(delta_ptr + drow + nxt, mask=next_ok, other=0.0).to(tl.float32) + bias0
            if SOFTPLUS:
                dt = _softplus(x)
                dt1 = _softplus(x1)
            else:
                dt = x
                dt1 = x1
            dt = tl.where(tmask, dt, 0.0)
            uu = tl.load(u_ptr + urow + idx, mask=tmask, other=0.0).to(tl.float32)
            gy = tl.load(gy_ptr + drow + idx, mask=tmask, other=0.0).to(tl.float32)
            h0 = tl.load(states_ptr + srow * n_save + (ln * n_seg + seg) * SUB + i_mem, mask=nmask, other=0.0)
            this = dcol[None, :] == d
            if i0 == 0:  # from the segment to the right, by the reverse carry
                gr = tl.load(gin_ptr + srow * stride + (j + 1), mask=nmask & (n * 0 + j + 1 < n_chunks), other=0.0)
            else:
                gr = tl.sum(tl.where(this, grs, 0.0), axis=1)
            du = dt * uu
            a = tl.exp2(A2[:, None] * dt[None, :])
            bx = du[None, :] * Bv
            Pc, Hc = tl.associative_scan((a, bx), 1, _linear_combine, reverse=REV)
            hs = Hc + Pc * h0[:, None]
            # dL/dh_t = gy_t C_t + a_{t+1} dL/dh_{t+1}, against the scan order; the carry enters at its last step.
            a1 = tl.where(next_ok[None, :], tl.exp2(A2[:, None] * dt1[None, :]), tl.where(last[None, :], 0.0, 1.0))
            cvec = gy[None, :] * Cv + tl.where(last[None, :], gr[:, None], 0.0)
            if REV:  # against the scan order = increasing memory index
                _, gh = tl.associative_scan((a1, cvec), 1, _linear_combine, reverse=False)
            else:
                _, gh = tl.associative_scan((a1, cvec), 1, _linear_combine, reverse=True)
            gC += gy[None, :] * hs
            gB += gh * du[None, :]
            gdu = tl.sum(gh * Bv, axis=0)
            gl = gh * (hs - bx)  # dL/d(dt * A) = dL/dh_t * a_t * h_{t-1}
            gdt = tl.sum(gl * A2[:, None], axis=0) / LOG2E + gdu * uu
            if SOFTPLUS:
                gx = gdt * tl.where(x > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-x)))
            else:
                gx = gdt
            gx = tl.where(tmask, gx, 0.0)
            tl.store(gu_ptr + drow + idx, (gdu * dt + Dv * gy).to(gu_ptr.dtype.element_ty), mask=tmask)
            tl.store(gdelta_ptr + drow + idx, gx.to(gdelta_ptr.dtype.element_ty), mask=tmask)
            # what enters the previous sub-tile from the right: a_s * dL/dh_s at this one's first step s
            g_left = tl.sum(tl.where(first[None, :], a * gh, 0.0), axis=1)
            grs = tl.where(this, g_left[:, None], grs)
            gAs += tl.where(this, tl.sum(gl * dt[None, :], axis=1)[:, None], 0.0)
            if HAS_D:
                gDs += tl.where(dcol == d, tl.sum(gy * uu, axis=0), 0.0)
            if HAS_BIAS:
                gbs += tl.where(dcol == d, tl.sum(gx, axis=0), 0.0)
        tl.store(gB_ptr + brow[:, None] + idx[None, :], gB.to(gB_ptr.dtype.element_ty), mask=bm)
        tl.store(gC_ptr + brow[:, None] + idx[None, :], gC.to(gC_ptr.dtype.element_ty), mask=bm)
    prow = ((b * n_chunks + j) * KD + k * Dm + dcol).to(tl.int64)  # [DMP] partial rows of this segment
    live = dcol < Dm
    tl.store(gA_ptr + prow[None, :] * NP + n[:, None], gAs, mask=live[None, :] & (n < NP)[:, None])
    if HAS_D:
        tl.store(gD_ptr + prow, gDs, mask=live)
    if HAS_BIAS:
        tl.store(gbias_ptr + prow, gbs, mask=live)
