"""Random selective-scan problems shared by the kernel tests (CPU and Triton)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffmf_core.ops import scan_orders
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


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (the scale of the quantity)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
