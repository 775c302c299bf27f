"""The native CPU scan (diffmf_kernels.cpu_scan) against the float64 reference."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from diffmf_kernels import cpu_scan
from scan_cases import Case, make_inputs, max_rel, projection_view, projection_views, reference

from diffmf_core.ops import as_token_major, is_token_major, selective_scan

pytestmark = pytest.mark.skipif(cpu_scan.unavailable_reason() is not None,
                                reason=f"native CPU scan unavailable: {cpu_scan.unavailable_reason()}")

# L never a multiple of the kernel's 64-step chunk or its 16-channel lane block; N in {1, 4, 8, 16}
# (8 and 16 run the kernel's unrolled instantiations and in-register lane sums, the rest its generic code).
CASES = [
    Case(2, 4, 3, 4, 5, 7, "grid"),
    Case(1, 4, 17, 16, 9, 15, "grid"),
    Case(1, 4, 19, 8, 7, 11, "grid"),
    Case(2, 2, 5, 1, 3, 43, "perm"),
    Case(1, 1, 16, 16, 1, 130, "none"),
    Case(2, 2, 3, 4, 1, 77, "none", softplus=False, with_D=False, with_bias=False),
    Case(1, 3, 20, 16, 11, 13, "perm", with_bias=False),
]
# dtype -> (forward, gradient) tolerance on max|error| / max|reference|
TOLERANCE = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 2e-4)}


def _grads(y: torch.Tensor, xs: list, grad_out: torch.Tensor) -> list:
    live = [t for t in xs if t is not None]
    g = iter(torch.autograd.grad(y, live, grad_out.to(y.dtype)))
    return [None if t is None else next(g) for t in xs]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_gradients_match_reference(case: Case, dtype: torch.dtype) -> None:
    xs, orders = make_inputs(case, dtype)
    xs = [None if t is None else t.requires_grad_() for t in xs]
    y = cpu_scan.selective_scan(*xs, case.softplus, orders)
    assert y.dtype == dtype and y.shape == (case.bt, case.K * case.dm, case.L)
    grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y_ref, g_ref = reference(xs, orders, case.softplus, grad_out)
    fwd_tol, grad_tol = TOLERANCE[dtype]
    assert max_rel(y, y_ref) < fwd_tol
    names = ("u", "delta", "A", "B", "C", "D", "delta_bias")
    for name, g, r, x in zip(names, _grads(y, xs, grad_out), g_ref, xs):
        if x is None:
            continue
        assert g.dtype == x.dtype and g.shape == x.shape, name
        assert max_rel(g, r) < grad_tol, f"d{name}: {max_rel(g, r):.2e}"


@pytest.mark.parametrize("case", CASES[:4], ids=str)
def test_bfloat16_inputs_keep_float32_state(case: Case) -> None:
    xs, orders = make_inputs(case, torch.float32)
    # Activations in bf16, parameters in fp32 (the model's mixed-precision layout).
    xs = [t.bfloat16() if i in (0, 1, 3, 4) else t for i, t in enumerate(xs)]
    xs = [None if t is None else t.requires_grad_() for t in xs]
    y = cpu_scan.selective_scan(*xs, case.softplus, orders)
    assert y.dtype == torch.bfloat16
    grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # The reference sees the same bf16-rounded inputs, so only the output rounding remains.
    y_ref, g_ref = reference(xs, orders, case.softplus, grad_out.bfloat16().double())
    assert max_rel(y, y_ref) < 1e-2
    for g, r in zip(_grads(y, xs, grad_out.bfloat16()), g_ref):
        if r is not None:
            assert max_rel(g, r) < 2e-2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["fp64", "fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_token_major_and_strided_inputs_give_identical_results(case: Case, dtype: torch.dtype) -> None:
    """Token-major u/delta and strided B/C are read in place: the same sums in the same order, so equal bits.

    B and C as adjacent slices of one projection (SS2D's layout; at N=8 the kernel loads a token's B and C states
    as one vector) and as slices of two."""
    xs, orders = make_inputs(case, torch.float32 if dtype == torch.bfloat16 else dtype)
    xs = [t.to(dtype) if dtype == torch.bfloat16 and i in (0, 1, 3, 4) else t for i, t in enumerate(xs)]
    laid = [as_token_major(t) if i < 2 else t for i, t in enumerate(xs)]
    laid[3], laid[4] = projection_views(xs[3], xs[4])
    assert not laid[3].is_contiguous() and laid[4].data_ptr() == laid[3].data_ptr() + case.N * laid[3].element_size()
    apart = [*laid[:3], projection_view(xs[3]), projection_view(xs[4]), *laid[5:]]
    grad_out = torch.randn(case.bt, case.K * case.dm, case.L, generator=torch.Generator().manual_seed(3)).to(dtype)
    mixed = [laid[0], *xs[1:]]  # only u token-major: delta is laid out alike, B and C stay contiguous
    results = []
    for inputs, gy in ((xs, grad_out), (laid, as_token_major(grad_out)), (laid, grad_out), (apart, grad_out),
                       (mixed, grad_out)):
        inputs = [None if t is None else t.detach().requires_grad_() for t in inputs]
        y = cpu_scan.selective_scan(*inputs, case.softplus, orders)
        results.append((y, _grads(y, inputs, gy)))
    (y, grads), *others = results
    token_major = case.dm * case.K > 1  # otherwise both layouts are one
    for y_tm, grads_tm in others:
        assert torch.equal(y_tm, y) and is_token_major(y_tm) == token_major
        for name, g, g_tm in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), grads, grads_tm):
            assert (g is None) == (g_tm is None), name
            if g is not None:
                assert torch.equal(g_tm, g), name
        assert is_token_major(grads_tm[1]) == token_major and is_token_major(grads_tm[0]) == (case.dm > 1)


@pytest.mark.parametrize("token_major", [False, True], ids=["channel-major", "token-major"])
def test_softplus_of_delta_matches_torch_value_by_value(token_major: bool) -> None:
    """One-step scans with u = B = C = 1 and no D give y = softplus(delta): checked value by value over both sides
    of torch's threshold (20) and far below zero, where softplus is tiny and must keep its relative accuracy."""
    delta64 = torch.linspace(-60.0, 40.0, 4 * 256, dtype=torch.float64).view(4, 256, 1).float().double()
    delta = delta64.float().requires_grad_()
    u = torch.ones(4, 256, 1)
    if token_major:
        u, delta_in = as_token_major(u), as_token_major(delta)
    else:
        delta_in = delta
    ones = torch.ones(4, 1, 1, 1)
    y = cpu_scan.selective_scan(u, delta_in, -torch.ones(256, 1), ones, ones, None, None, True, None)
    (g,) = torch.autograd.grad(y.sum(), delta)
    ref = torch.nn.functional.softplus(delta64)
    assert float(((y.detach().double() - ref).abs() / ref).max()) < 1e-6
    assert float(((g.double() - torch.sigmoid(delta64)).abs() / torch.sigmoid(delta64)).max()) < 1e-6


def test_dispatcher_runs_the_native_kernel() -> None:
    case = CASES[0]
    xs, orders = make_inputs(case, torch.float32)
    y = selective_scan(*xs, case.softplus, backend="cpu", orders=orders)
    assert max_rel(y, reference(xs, orders, case.softplus)[0]) < TOLERANCE[torch.float32][0]


def test_out_of_range_orders_are_refused() -> None:
    case = CASES[0]
    xs, orders = make_inputs(case, torch.float32)
    bad = orders.clone()
    bad[0, 0] = case.L
    with pytest.raises(ValueError, match="orders must index tokens"):
        cpu_scan.selective_scan(*xs, case.softplus, bad)


def test_without_a_compiler_the_dispatcher_falls_back_with_one_warning(tmp_path) -> None:
    """Fresh cache + a compiler that does not exist: one warning, then reference results."""
    script = textwrap.dedent("""
        import logging, torch
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
        from diffmf_core.ops import as_token_major, is_token_major, selective_scan
        from diffmf_core.ops.scan_reference import selective_scan_reference
        from diffmf_core.ops import scan_orders
        g = torch.Generator().manual_seed(0)
        u, delta = torch.randn(1, 3, 20, generator=g), torch.randn(1, 12, 20, generator=g)
        A = -torch.rand(12, 4, generator=g) - 0.1
        B, C = torch.randn(1, 4, 4, 20, generator=g), torch.randn(1, 4, 4, 20, generator=g)
        o = scan_orders(4, 5)
        for _ in range(3):
            y = selective_scan(u, delta, A, B, C, orders=o)
        ref = selective_scan_reference(u, delta, A, B, C, orders=o)
        print("MAXDIFF", float((y - ref).abs().max()))
    """)
    env = dict(os.environ, DIFFMF_KERNELS_CXX=str(tmp_path / "no-such-c++"),
               DIFFMF_KERNELS_CACHE=str(tmp_path / "cache"), DIFFMF_SCAN_BACKEND="")
    env.pop("DIFFMF_SCAN_BACKEND")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, out.stderr
    assert "reference" in warnings[0] and "no C++ compiler" in warnings[0]
    assert float(out.stdout.split("MAXDIFF")[1]) == 0.0
