"""Native CPU selective scan: ``diffmf_core.ops.selective_scan(..., backend="cpu")``.

The C++ kernel (csrc/selective_scan_cpu.cpp) is compiled on first use (a few seconds,
cached per machine, see native_build.py) and called through ctypes; this module wraps
it in an autograd.Function. State is float32 (float64 for float64 inputs). bfloat16 is
read natively; float16 inputs are widened to float32 first. Without a C++ compiler
``unavailable_reason()`` says so and the dispatcher falls back to the reference.

Token-major u and delta ((Bt, channels, L) views of (Bt, L, channels) memory, as a channels-last model has
them) are read in place, and y and the gradients of u and delta come back alike: a token's 16 channel lanes
are then one contiguous load in every scan direction, where channel-major columns gather lane by lane.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from diffmf_core.ops import as_token_major, check_scan_shapes, is_token_major
from diffmf_core.ops.reduce import sum_slices

from .native_build import BuildError, build_library

SOURCE = Path(__file__).resolve().parent / "csrc" / "selective_scan_cpu.cpp"
_F32, _BF16, _F64 = 0, 1, 2  # dtype codes of the C ABI
_INT64 = ctypes.c_int64
_PTR = ctypes.c_void_p


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    try:
        path, _ = build_library(SOURCE, "selective_scan_cpu")
        lib = ctypes.CDLL(str(path))
    except (BuildError, OSError) as exc:
        return None, str(exc)
    common = [_PTR] * 8  # u, delta, A, B, C, D, bias, orders
    sizes = [_INT64] * 5 + [ctypes.c_int, ctypes.POINTER(_INT64), ctypes.c_int]  # Bt..L, flags, B/C strides, threads
    lib.diffmf_scan_fwd.argtypes = [ctypes.c_int, *common, _PTR, _PTR, *sizes]
    lib.diffmf_scan_fwd.restype = ctypes.c_int
    lib.diffmf_scan_bwd.argtypes = [ctypes.c_int, *common, ctypes.POINTER(_PTR), *sizes]
    lib.diffmf_scan_bwd.restype = ctypes.c_int
    lib.diffmf_scan_chunk.restype = _INT64
    lib.diffmf_scan_lanes.restype = _INT64
    return lib, None


def unavailable_reason() -> str | None:
    """None when the native kernel is built and loaded (building it now if needed)."""
    return _load()[1]


def _lib() -> ctypes.CDLL:
    lib, reason = _load()
    if lib is None:
        raise RuntimeError(f"native CPU scan unavailable: {reason}")
    return lib


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(u, delta, A, B, C, D, delta_bias, orders) -> tuple[int, int, int, int, int]:
    """The contract's shapes, plus what only the C++ code needs: CPU tensors, orders in range."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D),
                    ("delta_bias", delta_bias), ("orders", orders)):
        if t is not None and t.device.type != "cpu":
            raise ValueError(f"cpu scan: {name} is on {t.device}, expected cpu")
    bt, K, dm, N, L = check_scan_shapes(u, delta, A, B, C, D, delta_bias, orders, who="cpu scan")
    if orders is not None and orders.numel() and (int(orders.min()) < 0 or int(orders.max()) >= L):
        raise ValueError(f"cpu scan: orders must index tokens 0..{L - 1}")
    return bt, K, dm, N, L


def _flags(softplus: bool, token_major: bool) -> int:
    """The C ABI's flags: bit 0 softplus, bit 1 token-major u, delta, y (and gy, gu, gdelta)."""
    return int(softplus) | 2 * int(token_major)


def _dtypes(u, delta, A, B, C) -> tuple[int, torch.dtype, torch.dtype]:
    """(C ABI code, dtype the kernel reads u/delta/B/C in, accumulation dtype)."""
    if any(t.dtype == torch.float64 for t in (u, delta, A, B, C)):
        return _F64, torch.float64, torch.float64
    if all(t.dtype == torch.bfloat16 for t in (u, delta, B, C)):
        return _BF16, torch.bfloat16, torch.float32
    return _F32, torch.float32, torch.float32


def prefers_token_major(needs_grad: bool) -> bool:
    """The kernel reads token-major u/delta in place, forward and backward (ops/scan_layout.py)."""
    return True


def _layout(t: torch.Tensor, dtype: torch.dtype, token_major: bool) -> torch.Tensor:
    t = t.to(dtype)
    return as_token_major(t) if token_major else t.contiguous()


def _b_and_c(B: torch.Tensor, C: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    """B and C as they are (any strides, e.g. slices of one projection) when they share strides, else contiguous."""
    B, C = B.to(dtype), C.to(dtype)
    return [B, C] if B.stride() == C.stride() else [B.contiguous(), C.contiguous()]


def _strides(t: torch.Tensor):
    return (_INT64 * 4)(*t.stride())


class _CpuScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, orders, delta_softplus, grad_enabled):
        bt, K, dm, N, L = _check(u, delta, A, B, C, D, delta_bias, orders)
        code, in_dt, acc = _dtypes(u, delta, A, B, C)
        tm = is_token_major(u) or is_token_major(delta)  # then both, and y, go token-major
        ins = [_layout(t, in_dt, tm and i < 2) for i, t in enumerate((u, delta))] + _b_and_c(B, C, in_dt)
        par = [None if t is None else t.to(acc).contiguous().view(-1) for t in (A, D, delta_bias)]
        ords = None if orders is None else orders.to(torch.int64).contiguous()
        lib = _lib()
        chunk, blocks = lib.diffmf_scan_chunk(), -(-dm // lib.diffmf_scan_lanes())
        y = torch.empty(bt, L, K * dm, dtype=acc).transpose(1, 2) if tm else torch.empty(bt, K * dm, L, dtype=acc)
        # needs_input_grad stays True under no_grad for inputs that require grad; grad mode is off in here
        needs_grad = grad_enabled and any(ctx.needs_input_grad[:7])
        ckpt = torch.empty(bt, K * dm, -(-L // chunk), N, dtype=acc) if needs_grad else None
        rc = lib.diffmf_scan_fwd(code, _ptr(ins[0]), _ptr(ins[1]), _ptr(par[0]), _ptr(ins[2]), _ptr(ins[3]),
                                 _ptr(par[1]), _ptr(par[2]), _ptr(ords), _ptr(y), _ptr(ckpt),
                                 bt, K, dm, N, L, _flags(delta_softplus, tm), _strides(ins[2]), torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"cpu scan forward failed (code {rc})")
        if needs_grad:
            ctx.save_for_backward(*ins, *par, ords, ckpt)
            ctx.meta = (code, acc, bt, K, dm, N, L, blocks, bool(delta_softplus), tm)
            ctx.like = tuple(None if t is None else (t.dtype, t.shape) for t in (u, delta, A, B, C, D, delta_bias))
        return y.to(u.dtype)

    @staticmethod
    def backward(ctx, gy):
        u, delta, B, C, A, D, bias, ords, ckpt = ctx.saved_tensors
        code, acc, bt, K, dm, N, L, blocks, softplus, tm = ctx.meta
        kd = K * dm
        gy = _layout(gy, acc, tm)
        new = functools.partial(torch.empty, dtype=acc)
        gu, gdelta = (new(bt, L, kd).transpose(1, 2) for _ in range(2)) if tm else (new(bt, kd, L) for _ in range(2))
        gA = new(bt, kd, N)
        gbc = new(blocks, bt, K, L, 2 * N)  # token-major, B's states then C's (the kernel's layout)
        gB, gC = gbc[..., :N], gbc[..., N:]
        gD = new(bt, kd) if D is not None else None
        gbias = new(bt, kd) if bias is not None else None
        out = (_PTR * 9)(*[_ptr(t) for t in (gy, ckpt, gu, gdelta, gA, gB, gC, gD, gbias)])
        rc = _lib().diffmf_scan_bwd(code, _ptr(u), _ptr(delta), _ptr(A), _ptr(B), _ptr(C), _ptr(D), _ptr(bias),
                                    _ptr(ords), out, bt, K, dm, N, L, _flags(softplus, tm), _strides(B),
                                    torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"cpu scan backward failed (code {rc})")
        if ords is not None:  # u is shared by the K directions: sum theirs, keeping the layout
            gu = sum_slices(gu.transpose(1, 2).view(bt, L, K, dm), 2).transpose(1, 2) if tm else \
                sum_slices(gu.view(bt, K, dm, L), 1)
        gbc = sum_slices(gbc, 0).transpose(2, 3)  # (bt, K, 2N, L) view
        grads = [gu, gdelta, sum_slices(gA, 0), gbc[:, :, :N], gbc[:, :, N:],
                 *(None if g is None else sum_slices(g, 0) for g in (gD, gbias))]
        grads = [None if g is None or not need else g.to(like[0]).view(like[1])
                 for g, need, like in zip(grads, ctx.needs_input_grad, ctx.like)]
        return (*grads, None, None, None)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                   delta_softplus: bool = True, orders: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as :func:`diffmf_core.ops.scan_reference.selective_scan_reference` (CPU tensors)."""
    return _CpuScan.apply(u, delta, A, B, C, D, delta_bias, orders, delta_softplus, torch.is_grad_enabled())
