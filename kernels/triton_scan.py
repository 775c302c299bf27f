"""Triton selective scan: ``diffmf_core.ops.selective_scan(..., backend="triton")`` on CUDA.

Fused and chunked (see triton_scan_kernels.py): u, delta, B and C are read in place
through token indices, the state stays in registers in float32, and L is cut into
chunks so that thousands of programs run at once. The four grid directions of
``diffmf_core.ops.scan_orders`` are recognised once per orders tensor and then indexed by
arithmetic; any other permutation is read through an int32 table.

Runs under the Triton interpreter (``TRITON_INTERPRET=1``) on CPU tensors too, which is
how it is tested on machines without a GPU.
"""

from __future__ import annotations

import functools
import os
import weakref
from dataclasses import dataclass, replace

import torch

from diffmf_core.ops import check_scan_shapes, is_token_major

MODE_IDENTITY, MODE_GRID, MODE_TABLE = 0, 1, 2
DIRECTION_CODES = {"row": 0, "col": 1, "row_rev": 2, "col_rev": 3}  # bit 0 column-major, bit 1 reversed


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason() -> str | None:
    """None when Triton imports and can run here (a CUDA device, or the interpreter)."""
    try:
        import triton  # noqa: F401

        from . import triton_scan_kernels  # noqa: F401
    except Exception as exc:  # ImportError, or a Triton too old for the kernels
        return f"triton does not import ({exc})"
    if interpreting():
        return None
    if not torch.cuda.is_available():
        return "needs a CUDA device (torch.cuda.is_available() is False)"
    return None


@dataclass(frozen=True)
class ScanConfig:
    """Tile sizes (powers of two, except ``chunk``).

    forward="tiles" (default): a program runs ``sub`` sub-tiles of ``ts`` steps x ``bd``
    channels with tl.associative_scan (chunk = ts * sub). Measured on an H100 (bench/RESULTS.md,
    2026-11-26): 4.0 ms bf16 at 640x512, K=4, Dm=64, N=16 against 11.0 ms for "lines", and the
    tiny model at 640x512 in 7.0 ms against 14.8 ms.
    forward="auto": time the candidates of triton_autotune.CANDIDATES at the first call for each
    device and problem, and use the fastest (see triton_autotune.py).
    forward="lines": a program steps through ``chunk`` positions for ``lines`` chunks (the
    same piece of adjacent scan lines, on the lanes) x ``bd_lines`` channels.
    forward="hybrid": row directions (and no orders) by ``rows_kernel``: "rows" = _fwd_rows, a
    program per row segment of ``rows_sub`` sub-tiles of ``rows_gt`` tokens (contiguous, on the
    lanes) for ``rows_bd`` channels in turn, or "tiles"; column directions by ``cols_kernel``:
    "lines", or "rows" (_fwd_rows along the columns); orders read through a table fall back to
    "tiles". The backward follows: "rows" parts by _bwd_rows, the others by _bwd_output.
    grad_forward: the variant a forward runs when autograd will need gradients (its plan picks
    the backward kernels); "same" = ``forward``. A spec that sets ``forward`` without ``grad_forward``
    means both. Default "reorder": copy u, delta, B, C into scan order (triton_orders, one coalesced
    pass each; for grid orders, else "hybrid"), run every direction by the rows kernels as one
    contiguous line, copy y back; autograd goes through the copies. On an H100 at 640x512 bf16
    (bench/RESULTS.md, 2026-11-26 18:48Z) its backward took 14.3 ms against 36.4 for "hybrid" and
    57.5 for "tiles", bit-identical forward output.
    tiles_rows: how the tiles forward finds a grid row direction's tokens. "index": the direction's
    index arithmetic, as for columns (the compiler cannot see that a sub-tile's tokens are adjacent:
    2-byte loads and stores); "contiguous": one branch per program on the direction, then adjacent
    tokens in memory order (vector loads and stores; a reversed row's tiles flipped in registers).
    Offline SASS and the interpreter only so far (docs/kernels.md), so not the default.
    tiles_stages: software-pipelining depth of the tiles forward's sub-tile loops (tl.range num_stages;
    1 = none). Offline under Triton 3.6, 2 turns the contiguous rows' u and delta loads into cp.async
    prefetches of the next sub-tile (the index path's 2-byte loads cannot be); untimed, so 1.
    tiles_prefetch: 1 = the tiles forward's loops load the next sub-tile's u, delta, B, C into registers before
    this one's arithmetic (any index mode and load width; Nsight Compute found half the output kernel's stall
    cycles waiting on loads). Offline SASS only so far (docs/kernels.md), so 0.
    tiles_fold: 1 = the tiles output kernel folds the state entering a sub-tile into its first step (b_0 + a_0 h)
    instead of adding running product x state after the scan; 2 = also the summary kernel, which then runs that
    recurrence in scan order instead of weighting steps by exp(A x later dt). Offline under Triton 3.6 at
    N=16, Dm=64: output 1005 -> 876, summary 717 -> 665 instructions per loop (the tiny model's N=8, 32
    channels: 1329 -> 1167, 1037 -> 934); with channels filling less than a warp (N=8, Dm=8: steps spread over
    lanes) the summary's recurrence costs more shuffles, 334 -> 545. Same recurrence, other rounding; untimed,
    so 0.
    tiles_tm_loads: how the tiles forward reads and writes token-major u, delta and y (inference on a channels-last
    model's tensors). "lanes": one channel per lane, as the arithmetic holds them, coalesced across the warp;
    "vector": as the compiler picks when it sees adjacent channels, 4 per thread (8-byte bf16 loads), moved to
    and from one channel per lane through shared memory every sub-tile. Offline under Triton 3.6 (sm_90, bf16,
    N=16, 640x512), instructions / barriers / shared-memory accesses per loop and registers: output 990 / 4 / 18,
    144 "lanes" against 913 / 10 / 31, 148 "vector"; summary 734 / 2 / 9, 116 against 720 / 11 / 31, 168 — "lanes"
    has the channel-major kernels' barrier and shared-memory counts (output 1005 / 4 / 18, 128; summary 717 / 2 /
    9, 116), "vector" costs the summary 2 of its 8 resident programs per SM. Token-major on a GPU is opt-in and
    untimed; "lanes" is its default on those counts.
    tiles_maxnreg: a register cap for the tiles forward kernels (ptxas .maxnreg; 0 = the compiler's choice).
    Offline under Triton 3.6 the default output kernel takes 128 registers (8 two-warp programs per SM),
    with tiles_prefetch / tiles_fold 138-144 (7); 128 keeps 8 at a few spilled accesses per loop. Untimed, so 0.
    Backward program: ``ts_bwd`` steps, looping over channel blocks of ``bd_bwd``; the
    forward saves the state every ``ts_bwd`` steps for it.
    """

    forward: str = "tiles"
    chunk: int = 128
    lines: int = 32
    bd_lines: int = 8
    warps_lines: int = 2
    ts: int = 4
    sub: int = 64
    bd: int = 64
    warps: int = 2
    ts_bwd: int = 32
    bd_bwd: int = 16
    warps_bwd: int = 2
    carry_rows: int = 8  # 512 programs at 640x512 (64 rows: 64 programs, 98 -> 19 us on an H100)
    carry_tile: int = 128
    rows_gt: int = 64  # with rows_warps=1: the fewest instructions per element under Triton 3.6 and 3.9
    rows_sub: int = 4
    rows_bd: int = 2
    rows_warps: int = 1
    rows_kernel: str = "rows"
    cols_kernel: str = "lines"
    grad_forward: str = "reorder"
    tiles_rows: str = "index"
    tiles_stages: int = 1
    tiles_prefetch: int = 0
    tiles_fold: int = 0
    tiles_maxnreg: int = 0
    tiles_tm_loads: str = "lanes"

    def with_spec(self, spec: str) -> ScanConfig:
        """'chunk=256,forward=tiles' -> this config with those fields changed (ValueError naming a bad one)."""
        try:
            pairs = [kv.split("=", 1) for kv in spec.split(",") if kv.strip()]
            fields = {k.strip(): v.strip() for k, v in pairs}
        except ValueError as exc:
            raise ValueError(f"ScanConfig spec must be name=value[,name=value...], got {spec!r}") from exc
        unknown = sorted(set(fields) - set(self.__dataclass_fields__))
        if unknown:
            raise ValueError(f"ScanConfig has no field {unknown[0]!r} (spec {spec!r})")
        if "forward" in fields:
            fields.setdefault("grad_forward", "same")
        return replace(self, **{k: int(v) if v.lstrip("-").isdigit() else v for k, v in fields.items()})

    def __post_init__(self) -> None:
        if self.forward not in ("lines", "tiles", "hybrid", "auto"):
            raise ValueError(f"ScanConfig.forward must be 'lines', 'tiles', 'hybrid' or 'auto', got {self.forward!r}")
        if self.rows_kernel not in ("rows", "tiles"):
            raise ValueError(f"ScanConfig.rows_kernel must be 'rows' or 'tiles', got {self.rows_kernel!r}")
        if self.grad_forward not in ("same", "lines", "tiles", "hybrid", "auto", "reorder"):
            raise ValueError("ScanConfig.grad_forward must be 'same', 'lines', 'tiles', 'hybrid', 'auto' or "
                             f"'reorder', got {self.grad_forward!r}")
        if self.tiles_rows not in ("index", "contiguous"):
            raise ValueError(f"ScanConfig.tiles_rows must be 'index' or 'contiguous', got {self.tiles_rows!r}")
        if self.tiles_tm_loads not in ("vector", "lanes"):
            raise ValueError(f"ScanConfig.tiles_tm_loads must be 'vector' or 'lanes', got {self.tiles_tm_loads!r}")
        if self.tiles_prefetch not in (0, 1):
            raise ValueError(f"ScanConfig.tiles_prefetch must be 0 or 1, got {self.tiles_prefetch!r}")
        if self.tiles_fold not in (0, 1, 2):
            raise ValueError(f"ScanConfig.tiles_fold must be 0, 1 or 2, got {self.tiles_fold!r}")
        if self.tiles_maxnreg and not 24 <= self.tiles_maxnreg <= 255:
            raise ValueError(f"ScanConfig.tiles_maxnreg must be 0 (no cap) or 24..255, got {self.tiles_maxnreg!r}")
        if self.cols_kernel not in ("lines", "rows"):
            raise ValueError(f"ScanConfig.cols_kernel must be 'lines' or 'rows', got {self.cols_kernel!r}")
        if self.chunk < 1 or self.rows_sub < 1 or self.tiles_stages < 1:
            raise ValueError("ScanConfig.chunk, rows_sub and tiles_stages must be positive, got "
                             f"{self.chunk}, {self.rows_sub}, {self.tiles_stages}")
        for name in ("lines", "bd_lines", "ts", "sub", "bd", "ts_bwd", "bd_bwd", "carry_rows", "carry_tile",
                     "rows_gt", "rows_bd"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"ScanConfig.{name} must be a power of two, got {v}")
        if self.ts_bwd % self.ts or (self.ts * self.sub) % self.ts_bwd:
            raise ValueError(f"ScanConfig: ts_bwd={self.ts_bwd} must be a multiple of ts={self.ts} "
                             f"and divide the chunk ts*sub={self.ts * self.sub}")


def _pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


CONFIG_ENV = "DIFFMF_TRITON_SCAN_CONFIG"


def config_for(N: int, Dm: int, L: int, spec: str | None = None, lines: int = 1) -> ScanConfig:
    """default_config, then ``$DIFFMF_TRITON_SCAN_CONFIG``, then ``spec`` (both 'name=value,...').

    ``lines``: scan lines per call (batch x directions), which the default's chunk length depends on."""
    return _config_for(N, Dm, L, lines, os.environ.get(CONFIG_ENV) or None, spec)


@functools.lru_cache(maxsize=256)
def _config_for(N: int, Dm: int, L: int, lines: int, env: str | None, spec: str | None) -> ScanConfig:
    """Cached: every scan call asks, and parsing the overrides each time is wasted per-frame work."""
    cfg = default_config(N, Dm, L, lines)
    for extra in (env, spec):
        if extra:
            cfg = cfg.with_spec(extra)
    return cfg


# Tile elements (channels x states x steps) a tiles forward should work on at once across its programs. With
# fewer, a frame waits on the sequential sub-tiles of a few long chunks: the tiny model (32-64 channels per
# direction, N=8, maps of 160x128 down to 40x32 tokens at 640x512) ran 12-320 programs of 512-step chunks per
# scan, 0.05-0.65 M elements, and took 6.8 ms per frame on an H100; 4.4 ms with this rule's chunks (128 steps
# on the 160x128 maps, 32-256 elsewhere; 0.66-1.3 M elements), which also took 320x256 from 4.9 to 2.2 ms
# (bench/RESULTS.md, 2026-11-26). A 64-channel, N=16 scan on the 160x128 map (1.3 M elements at 256-step
# chunks) gained nothing from shorter ones.
FILL_ELEMENTS = 1 << 20


def default_config(N: int, Dm: int, L: int, lines: int = 1) -> ScanConfig:
    """Channels or lines on the lanes, ~64 (forward) / ~128 (backward) tile elements per thread; chunks short
    enough that ``lines`` scan lines of ``L`` steps keep the GPU busy (FILL_ELEMENTS)."""
    if interpreting():
        return ScanConfig(chunk=4, lines=4, bd_lines=2, warps_lines=1, ts=4, sub=4, bd=2, warps=1, ts_bwd=8,
                          bd_bwd=2, warps_bwd=1, carry_rows=8, carry_tile=4, rows_gt=4, rows_sub=2, rows_bd=2,
                          rows_warps=1)
    np2 = _pow2(N)
    bd = max(1, min(_pow2(Dm), 64))
    ts = max(1, min(64, 64 // np2))
    ts_bwd = max(ts, 32)
    warps = max(1, min(4, bd // 32))
    sub = max(ts_bwd // ts, min(64, _pow2(-(-L // ts))))
    per_chunk = lines * _cdiv(Dm, bd) * bd * ts * np2  # tile elements per chunk position
    while sub > ts_bwd // ts and per_chunk * _cdiv(L, ts * sub) < FILL_ELEMENTS:
        sub //= 2
    bd_bwd = max(1, min(_pow2(Dm), 256 // np2))
    return ScanConfig(chunk=min(128, max(16, _pow2(L // 512))), bd_lines=max(1, min(_pow2(Dm), 128 // max(np2, 8))),
                      ts=ts, sub=sub, bd=bd, warps=warps, ts_bwd=ts_bwd, bd_bwd=bd_bwd,
                      warps_bwd=max(1, min(4, bd_bwd * ts_bwd * np2 // 4096)))


@dataclass(frozen=True)
class TokenOrder:
    """How a kernel finds raster token idx(k, t): identity, grid arithmetic, or a table."""

    mode: int
    H: int = 1
    W: int = 1
    table: torch.Tensor | None = None  # MODE_GRID: (K,) int32 direction codes; MODE_TABLE: (K, L) int32
    codes: tuple[int, ...] = ()  # MODE_GRID: the direction codes on the host


def _grid_codes(orders: torch.Tensor) -> tuple[list[int], int, int] | None:
    """Direction codes if every row is one of the 4 grid scans of one H x W map, else None."""
    K, L = orders.shape
    ar = torch.arange(L, dtype=torch.int64)
    codes, hw = [], None
    for row in orders:
        if torch.equal(row, ar):
            codes.append(DIRECTION_CODES["row"])
            continue
        if torch.equal(row, ar.flip(0)):
            codes.append(DIRECTION_CODES["row_rev"])
            continue
        found = False
        for code, seq in ((DIRECTION_CODES["col"], row), (DIRECTION_CODES["col_rev"], row.flip(0))):
            w = int(seq[1]) if L > 1 else 0
            fits = 2 <= w < L and L % w == 0 and (hw is None or hw == (L // w, w))
            if fits and torch.equal(seq, ar.view(L // w, w).t().reshape(-1)):
                codes.append(code)
                hw = (L // w, w)
                found = True
                break
        if not found:
            return None
    h, w = hw if hw is not None else (1, L)
    return codes, h, w


_order_cache: dict[int, tuple[weakref.ref, int, str, TokenOrder]] = {}


def _version(t: torch.Tensor) -> int:
    """In-place version of a tensor; inference tensors (made under inference_mode) have none and cannot change."""
    return -1 if t.is_inference() else t._version


def describe_orders(orders: torch.Tensor | None, device: torch.device) -> TokenOrder:
    """Recognise ``orders`` (once per tensor object: a host copy and compare) -> TokenOrder."""
    if orders is None:
        return TokenOrder(MODE_IDENTITY)
    key = id(orders)
    hit = _order_cache.get(key)
    if hit is not None and hit[0]() is orders and hit[1] == _version(orders) and hit[2] == str(device):
        return hit[3]
    host = orders.detach().to("cpu", torch.int64)
    L = host.shape[1]
    if host.numel() and (int(host.min()) < 0 or int(host.max()) >= L):
        raise ValueError(f"triton scan: orders must index tokens 0..{L - 1}")
    grid = _grid_codes(host)
    if grid is not None:
        codes, h, w = grid
        desc = TokenOrder(MODE_GRID, h, w, torch.tensor(codes, dtype=torch.int32, device=device), tuple(codes))
    else:
        desc = TokenOrder(MODE_TABLE, table=host.to(torch.int32).contiguous().to(device))
    if len(_order_cache) > 64:
        _order_cache.clear()
    _order_cache[key] = (weakref.ref(orders), _version(orders), str(device), desc)
    return desc


def _check(u, delta, A, B, C, D, delta_bias, orders) -> tuple[int, int, int, int, int]:
    """The contract's shapes, plus one device for every tensor."""
    dims = check_scan_shapes(u, delta, A, B, C, D, delta_bias, orders, who="triton scan")
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.device != u.device:
            raise ValueError(f"triton scan: {name} is on {t.device}, u on {u.device}")
    return dims


_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _as_input(t: torch.Tensor) -> torch.Tensor:
    """Inputs are read in their own dtype when the kernels know it (fp32/fp16/bf16)."""
    return (t if t.dtype in _FLOATS else t.float()).contiguous()


def _shares_strides(B: torch.Tensor, C: torch.Tensor) -> bool:
    return B.dtype == C.dtype and B.dtype in _FLOATS and B.stride() == C.stride()


def _param(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float().contiguous().view(-1)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def forward(u, delta, A, B, C, D, delta_bias, softplus, order: TokenOrder, cfg: ScanConfig,
            save_states: bool, token_major: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the forward kernels (triton_scan_forward.py); y and (if asked) the state every ts_bwd steps."""
    from .triton_scan_forward import run_forward

    return run_forward(u, delta, A, B, C, D, delta_bias, softplus, order, cfg, save_states, token_major)


def token_major(u: torch.Tensor, delta: torch.Tensor, cfg: ScanConfig, needs_grad: bool) -> bool:
    """Whether this call reads u and delta (and writes y) token-major, in place.

    Channel-major buffers put a warp's lanes (adjacent channels) a whole scan line apart, so every 2-byte
    element the tiles forward reads or writes takes its own 32-byte sector (Nsight Compute, H100: 83.9 M sectors
    written for 83.9 M bf16 outputs; the kernels wait on L1/L2). Token-major, the lanes' elements are adjacent
    in every scan direction. Inference through the tiles forward only (training copies into scan order
    anyway); both u and delta must be token-major, else both are made contiguous as usual."""
    return (not needs_grad and cfg.forward == "tiles" and cfg.tiles_rows == "index"
            and u.dtype in _FLOATS and delta.dtype in _FLOATS and is_token_major(u) and is_token_major(delta))


def _carry(tk, summ, dtsum, A, n_rows, n_chunks, np2, N, kd, cfg: ScanConfig, reverse: bool) -> torch.Tensor:
    """Inclusive scan of chunk summaries over chunks (backwards for the gradient)."""
    out = torch.empty_like(summ)
    tk._carry[(_cdiv(n_rows, cfg.carry_rows),)](summ, dtsum, A, out, kd, N, n_rows, n_chunks,
                                                NP=np2, R=cfg.carry_rows, CT=cfg.carry_tile, REVERSE=reverse)
    return out


def backward(gy, u, delta, A, B, C, D, delta_bias, softplus, order: TokenOrder, cfg: ScanConfig,
             states: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Launch the backward kernels (triton_scan_backward.py); gradients in float32 or the inputs' dtypes."""
    from .triton_scan_backward import run_backward

    return run_backward(gy, u, delta, A, B, C, D, delta_bias, softplus, order, cfg, states)


@functools.cache
def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def _even_rows(cfg: ScanConfig, order: TokenOrder, L: int) -> ScanConfig:
    """"hybrid" with row segments of at most 8 sub-tiles, as even as they come (640 wide: 2 x 5, not 4 + 4 + 2),
    and sub-tiles no longer than a row (32-token rows of a 128-pixel training crop: 32, not 64 half masked)."""
    if cfg.forward != "hybrid":
        return cfg
    line = order.W if order.mode == MODE_GRID else L
    gt = min(cfg.rows_gt, max(16, _pow2(line)))
    tiles_per_line = _cdiv(line, gt)
    return replace(cfg, rows_gt=gt, rows_sub=_cdiv(tiles_per_line, _cdiv(tiles_per_line, 8)))


def _for_gradients(cfg: ScanConfig, order: TokenOrder, L: int) -> ScanConfig:
    """The config of a forward whose states the backward will use: ``grad_forward``'s variant."""
    if cfg.grad_forward in ("same", cfg.forward) or cfg.forward == "auto":  # auto times the backward itself
        return cfg
    # "reorder" reaches here only for orders it does not copy (identity, tables): "hybrid" then
    target = "hybrid" if cfg.grad_forward == "reorder" else cfg.grad_forward
    return _even_rows(replace(cfg, forward=target, grad_forward="same"), order, L)


def _autotuned(base: ScanConfig, ins: list[torch.Tensor], par: list[torch.Tensor | None], softplus: bool,
               order: TokenOrder, needs_grad: bool) -> ScanConfig:
    """forward=auto: the fastest candidate of triton_autotune.CANDIDATES for this device and problem."""
    from . import triton_autotune as tune

    u, delta, B, C = ins
    K, N = B.shape[1], par[0].numel() // delta.shape[1]
    key = (_device_name(u.device), base, tuple(u.shape), tuple(delta.shape), K, N, u.dtype, delta.dtype, B.dtype,
           order.mode, order.H, order.W, order.codes, softplus, par[1] is None, par[2] is None, needs_grad)
    chosen = tune.chosen(key)
    if chosen is not None:  # every call after the first for this problem
        return chosen[1]
    cands = [(spec, _even_rows(base.with_spec(spec), order, delta.shape[-1]))
             for spec in tune.CANDIDATES + (tune.BACKWARD_CANDIDATES if needs_grad else ())]
    if tune.capturing():
        return cands[0][1]
    A = par[0].view(delta.shape[1], N)
    gy = torch.randn(delta.shape, device=u.device, dtype=u.dtype) if needs_grad else None

    def run(cand):
        y, states = forward(u, delta, A, B, C, par[1], par[2], softplus, order, cand[1], needs_grad)
        if needs_grad:
            backward(gy, u, delta, A, B, C, par[1], par[2], softplus, order, cand[1], states)

    return tune.choose(key, cands, run, describe=lambda cand: cand[0])[1]


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, orders, delta_softplus, config, grad_enabled):
        bt, K, dm, N, L = _check(u, delta, A, B, C, D, delta_bias, orders)
        order = describe_orders(orders, u.device)
        cfg = config or config_for(N, dm, L, lines=bt * K)
        # needs_input_grad stays True under no_grad / inference_mode for inputs that require grad (a model's
        # parameters); grad mode is off inside forward, so the caller says whether it was on.
        needs_grad = grad_enabled and any(ctx.needs_input_grad[:7])
        tm = token_major(u, delta, cfg, needs_grad)
        # token-major: u and delta as given; B and C too when they share strides (the model's projection slices)
        ins = [u, delta] if tm else [_as_input(u), _as_input(delta)]
        ins += [B, C] if tm and _shares_strides(B, C) else [_as_input(B), _as_input(C)]
        par = [_param(t) for t in (A, D, delta_bias)]
        if needs_grad:
            cfg = _for_gradients(cfg, order, L)
        if cfg.forward == "auto":
            cfg = _autotuned(cfg, ins, par, bool(delta_softplus), order, needs_grad)
        y, states = forward(ins[0], ins[1], par[0].view(K * dm, N), ins[2], ins[3], par[1], par[2],
                            delta_softplus, order, cfg, needs_grad, tm)
        if needs_grad:
            ctx.save_for_backward(*ins, *par, states)
            ctx.meta = (order, cfg, bool(delta_softplus), K * dm, N)
            ctx.like = tuple(None if t is None else (t.dtype, t.shape) for t in (u, delta, A, B, C, D, delta_bias))
        return y.to(u.dtype)

    @staticmethod
    def backward(ctx, gy):
        u, delta, B, C, A, D, bias, states = ctx.saved_tensors
        order, cfg, softplus, kd, N = ctx.meta
        grads = backward(gy.contiguous(), u, delta, A.view(kd, N), B, C, D, bias, softplus, order, cfg, states)
        grads = [None if g is None or not need else g.to(like[0]).view(like[1])
                 for g, need, like in zip(grads, ctx.needs_input_grad, ctx.like)]
        return (*grads, None, None, None, None)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                   delta_softplus: bool = True, orders: torch.Tensor | None = None,
                   config: ScanConfig | None = None) -> torch.Tensor:
    """Same contract as :func:`diffmf_core.ops.scan_reference.selective_scan_reference`; CUDA tensors."""
    if orders is not None and torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (u, delta, A, B, C, D, delta_bias)):
        bt, K, dm, N, L = _check(u, delta, A, B, C, D, delta_bias, orders)
        cfg = config or config_for(N, dm, L, lines=bt * K)
        if cfg.grad_forward == "reorder" and cfg.forward != "auto":
            order = describe_orders(orders, u.device)
            if order.mode == MODE_GRID:
                return _reordered(u, delta, A, B, C, D, delta_bias, delta_softplus, order, cfg)
    return _TritonScan.apply(u, delta, A, B, C, D, delta_bias, orders, delta_softplus, config, torch.is_grad_enabled())


def _reordered(u, delta, A, B, C, D, delta_bias, delta_softplus, order: TokenOrder, cfg: ScanConfig) -> torch.Tensor:
    """grad_forward="reorder": the scan on inputs copied into scan order, every direction one line."""
    from . import triton_orders

    us, ds, bs, cs = triton_orders.gather(u, delta, B, C, order)
    lines = _even_rows(replace(cfg, forward="hybrid", grad_forward="same"), TokenOrder(MODE_IDENTITY), ds.shape[-1])
    y = _TritonScan.apply(us, ds, A, bs, cs, D, delta_bias, None, delta_softplus, lines, torch.is_grad_enabled())
    return triton_orders.scatter(y, order, B.shape[1])
