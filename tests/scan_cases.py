"""Random selective-scan problems and checks shared by the kernel tests (and usable without pytest)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffmf_core.ops import as_token_major, is_token_major, scan_orders
from diffmf_core.ops.scan_reference import selective_scan_reference


@dataclass(frozen=True)
class Case:
    bt: int
    K: int
    dm: int
    N: int
    h: int
    w: int
    orders: str  # "none" | "grid" (scan_orders) | "perm" (random permutations)
    softplus: bool = True
    with_D: bool = True
    with_bias: bool = True

    @property
    def L(self) -> int:
        return self.h * self.w

    def __str__(self) -> str:
        extra = "".join(f"-{k}" for k, on in (("nosoftplus", not self.softplus), ("noD", not self.with_D),
                                              ("nobias", not self.with_bias)) if on)
        return f"b{self.bt}K{self.K}d{self.dm}N{self.N}L{self.h}x{self.w}-{self.orders}{extra}"


def make_inputs(case: Case, dtype: torch.dtype = torch.float64, device: str = "cpu",
                seed: int = 0) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
    """[u, delta, A, B, C, D, delta_bias] (float64 values, cast to dtype) and the orders tensor."""
    g = torch.Generator().manual_seed(seed)
    bt, K, dm, N, L = case.bt, case.K, case.dm, case.N, case.L
    kd = K * dm

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    u = rnd(bt, dm if case.orders != "none" else kd, L)
    delta = rnd(bt, kd, L, scale=0.5)
    if not case.softplus:  # delta is dt itself then: keep it positive, as softplus would
        delta = delta.abs() * 0.2 + 0.01
    A = -(torch.rand(kd, N, generator=g, dtype=torch.float64) * 2 + 0.1)
    B, C = rnd(bt, K, N, L), rnd(bt, K, N, L)
    D = rnd(kd) if case.with_D else None
    bias = rnd(kd, scale=0.3) if case.with_bias else None
    if case.orders == "grid":
        orders = scan_orders(case.h, case.w, device)[:K]
    elif case.orders == "perm":
        orders = torch.stack([torch.randperm(L, generator=g) for _ in range(K)]).to(device)
    else:
        orders = None
    xs = [None if t is None else t.to(device=device, dtype=dtype) for t in (u, delta, A, B, C, D, bias)]
    return xs, orders


def reference(xs: list[torch.Tensor | None], orders, softplus: bool, grad_out: torch.Tensor | None = None):
    """float64 reference output, and gradients of <y, grad_out> for every tensor input."""
    x64 = [None if t is None else t.detach().double().requires_grad_() for t in xs]
    y = selective_scan_reference(*x64, softplus, orders)
    if grad_out is None:
        return y.detach(), None
    live = [t for t in x64 if t is not None]
    grads = iter(torch.autograd.grad(y, live, grad_out.double()))
    return y.detach(), [None if t is None else next(grads) for t in x64]


def projection_view(t: torch.Tensor) -> torch.Tensor:
    """(Bt, K, N, L) values as a token-major slice of a wider (Bt, L, K, N + 3) buffer, the way SS2D hands B and C
    over (views of its x_proj output); two such views share strides."""
    bt, k, n, L = t.shape
    view = torch.zeros(bt, L, k, n + 3, dtype=t.dtype, device=t.device)[..., 1:n + 1].permute(0, 2, 3, 1)
    return view.copy_(t)


def projection_views(B: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B and C ((Bt, K, N, L) each) as adjacent token-major slices of one (Bt, L, K, 2N + 3) buffer, C's states
    right after B's: how SS2D's x_proj output holds them (its dt ranks first)."""
    bt, k, n, L = B.shape
    buf = torch.zeros(bt, L, k, 2 * n + 3, dtype=B.dtype, device=B.device)
    views = [buf[..., 1 + i * n:1 + (i + 1) * n].permute(0, 2, 3, 1) for i in range(2)]
    return views[0].copy_(B), views[1].copy_(C)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (the scale of the quantity)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")
# dtype -> (forward, gradient) tolerance on max|error| / max|reference|
TOLERANCE = {torch.float32: (1e-4, 1e-3), torch.bfloat16: (1.5e-2, 3e-2), torch.float16: (5e-3, 1e-2)}

GPU_CASES = [
    Case(2, 4, 3, 4, 5, 7, "grid"),
    Case(2, 2, 5, 1, 3, 43, "perm"),
    Case(2, 2, 3, 4, 1, 77, "none", softplus=False, with_D=False, with_bias=False),
    Case(1, 4, 64, 16, 24, 40, "grid"),  # the model's channel count; several chunks
]
LOW_PRECISION = [(torch.bfloat16, GPU_CASES[3]), (torch.bfloat16, GPU_CASES[1]), (torch.float16, GPU_CASES[3])]


def check_scan(scan, case: Case, dtype: torch.dtype, device: str, token_major: bool = True) -> dict[str, float]:
    """``scan(u, delta, A, B, C, D, delta_bias, softplus, orders)`` forward + backward on one case.

    Activations (u, delta, B, C) in ``dtype``, parameters in float32; returns the max relative
    error of y (computed for autograd, and under inference_mode as a node runs it: a backend may
    take another path there; with ``token_major`` also on u and delta given token-major) and of every
    gradient against the float64 reference.
    """
    xs, orders = make_inputs(case, torch.float32, device)
    if dtype != torch.float32:
        xs = [t.to(dtype) if i in (0, 1, 3, 4) else t for i, t in enumerate(xs)]
    xs = [None if t is None else t.requires_grad_() for t in xs]
    y = scan(*xs, case.softplus, orders)
    if y.dtype != xs[0].dtype or y.shape != (case.bt, case.K * case.dm, case.L):
        raise AssertionError(f"output is {y.dtype} {tuple(y.shape)}")
    grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    y_ref, g_ref = reference(xs, orders, case.softplus, grad_out)
    live = [t for t in xs if t is not None]
    grads = iter(torch.autograd.grad(y, live, grad_out))
    with torch.inference_mode():
        y_infer = scan(*xs, case.softplus, orders)
        if token_major:  # u and delta as (Bt, channels, L) views of (Bt, L, channels) memory (channels-last),
            # B and C as slices of one projection: how the model lays them out when the scan reads token-major
            tm = [as_token_major(t) if i < 2 else t for i, t in enumerate(xs)]
            tm[3], tm[4] = projection_views(xs[3], xs[4])
            y_tm = scan(*tm, case.softplus, orders)
    errors = {"y": max_rel(y, y_ref), "y_inference": max_rel(y_infer, y_ref)}
    if token_major:
        errors["y_token_major"] = max_rel(y_tm, y_ref)
    for name, x, r in zip(NAMES, xs, g_ref):
        if x is not None:
            g = next(grads)
            if g.dtype != x.dtype or g.shape != x.shape:
                raise AssertionError(f"d{name} is {g.dtype} {tuple(g.shape)}, input {x.dtype} {tuple(x.shape)}")
            errors["d" + name] = max_rel(g, r)
    return errors


def check_triton(case: Case, dtype: torch.dtype, device: str, config=None) -> dict[str, float]:
    """check_scan on the Triton backend with an optional ScanConfig."""
    from diffmf_kernels import triton_scan

    cfg = config or triton_scan.config_for(case.N, case.dm, case.L, lines=case.bt * case.K)
    in_place = cfg.forward == "tiles" and cfg.tiles_rows == "index"  # inference reads token-major u, delta as given
    outputs, b_strides, launch = [], [], triton_scan.forward

    def scan(*a):
        y = triton_scan.selective_scan(*a, config)
        if torch.is_inference_mode_enabled() and is_token_major(a[0]):
            outputs.append(y)
        return y

    def forward_seen(u, delta, A, B, *rest):  # the B the kernels get
        b_strides.append(B.stride())
        return launch(u, delta, A, B, *rest)

    # Other configurations copy token-major inputs (checked once in check_scan's other callers).
    triton_scan.forward = forward_seen
    try:
        errors = check_scan(scan, case, dtype, device, token_major=in_place)
    finally:
        triton_scan.forward = launch
    if in_place and not (len(outputs) == 1 and is_token_major(outputs[0])):
        raise AssertionError("token-major inputs read in place should give a token-major y")
    if in_place and not any(s[2] == 1 for s in b_strides):
        raise AssertionError(f"B given as projection slices should reach the kernels in place; saw {b_strides}")
    return errors


def assert_within(errors: dict[str, float], dtype: torch.dtype) -> None:
    fwd, grad = TOLERANCE[dtype]
    bad = {k: v for k, v in errors.items() if not v < (fwd if k == "y" else grad)}  # NaN is bad too
    if bad:
        raise AssertionError(f"errors over tolerance: {bad} (all: {errors})")
