"""The 'mamba' backend: mamba-ssm's compiled selective_scan_cuda behind our contract.

Everywhere: the adapter (argument order, dtypes, gather/scatter of token orders, which
gradient goes where) is checked against a stand-in module that keeps mamba-ssm's calling
convention and checks its preconditions, computing with the float64 reference. On a CUDA
machine where the real module loads, the ``gpu`` tests run it against the reference.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from diffmf_kernels import mamba_scan
from scan_cases import GPU_CASES, Case, assert_within, check_scan, make_inputs, reference

from diffmf_core.ops import ScanBackendError, resolve_backend, scan_orders
from diffmf_core.ops.scan_reference import gather_orders, scatter_orders, selective_scan_reference


def _standin_module() -> types.SimpleNamespace:
    """fwd/bwd with selective_scan_cuda's signatures and TORCH_CHECKs, computed by the reference."""

    def check(u, delta, A, B, C, D, z, delta_bias):
        assert z is None
        assert u.dtype in (torch.float32, torch.float16, torch.bfloat16)
        assert delta.dtype == B.dtype == C.dtype == u.dtype, "u, delta, B, C must share one dtype"
        assert A.dtype == torch.float32 and A.is_contiguous()
        for t in (D, delta_bias):
            assert t is None or (t.dtype == torch.float32 and t.dim() == 1)
        for t in (u, delta):
            assert t.stride(-1) == 1 and t.shape == delta.shape, "u and delta must be (batch, K*Dm, L)"
        assert B.dim() == 4 and B.shape[-1] == u.shape[-1] and B.stride(-1) == 1 and C.stride(-1) == 1

    def run(u, delta, A, B, C, D, delta_bias, softplus):
        x64 = [None if t is None else t.detach().double().requires_grad_() for t in (u, delta, A, B, C, D, delta_bias)]
        return x64, selective_scan_reference(*x64, softplus)

    def fwd(u, delta, A, B, C, D, z, delta_bias, softplus):
        check(u, delta, A, B, C, D, z, delta_bias)
        _, y = run(u, delta, A, B, C, D, delta_bias, softplus)
        return [y.detach().to(u.dtype), torch.zeros(1)]  # the second item stands for its saved chunk states

    def bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, softplus, recompute_out_z):
        check(u, delta, A, B, C, D, z, delta_bias)
        assert x is not None and out is None and dz is None and recompute_out_z is False
        with torch.enable_grad():  # a Function's backward runs with grad mode off
            x64, y = run(u, delta, A, B, C, D, delta_bias, softplus)
            live = [t for t in x64 if t is not None]
            grads = iter(torch.autograd.grad(y, live, dout.double()))
        like = (u, delta, A, B, C, D, delta_bias)
        return [None if t is None else next(grads).to(ref.dtype) for t, ref in zip(x64, like)]

    return types.SimpleNamespace(fwd=fwd, bwd=bwd)


ADAPTER_CASES = [Case(2, 4, 3, 4, 5, 7, "grid"), Case(1, 2, 5, 1, 3, 11, "perm"),
                 Case(2, 2, 3, 4, 1, 9, "none", softplus=False, with_D=False, with_bias=False)]


@pytest.mark.parametrize("case", ADAPTER_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_adapter_matches_reference_through_the_module_convention(case: Case, dtype: torch.dtype) -> None:
    ops = _standin_module()
    errors = check_scan(lambda *a: mamba_scan.scan_with(ops, *a).to(a[0].dtype), case, dtype, "cpu")
    assert_within(errors, dtype)


def test_module_location_errors_name_the_problem(tmp_path, monkeypatch) -> None:
    with pytest.raises(ImportError, match="no selective_scan_cuda"):
        mamba_scan.load_module(tmp_path)
    with pytest.raises(ImportError, match="does not exist"):
        mamba_scan.load_module(tmp_path / "missing.so")
    monkeypatch.setenv(mamba_scan.MODULE_ENV, str(tmp_path))
    mamba_scan._module.cache_clear()
    try:
        _, reason = mamba_scan._module()
        assert "DIFFMF_MAMBA_SCAN_MODULE" in reason and "no selective_scan_cuda" in reason
    finally:
        mamba_scan._module.cache_clear()


def test_backend_is_refused_on_cpu_tensors() -> None:
    with pytest.raises(ScanBackendError, match="'mamba' runs on cuda tensors"):
        resolve_backend("mamba", torch.device("cpu"))


def _real_module_or_skip():
    reason = mamba_scan.unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_real_module_matches_reference_on_cuda(case: Case, dtype: torch.dtype) -> None:
    _real_module_or_skip()
    assert_within(check_scan(mamba_scan.selective_scan, case, dtype, "cuda"), dtype)


@pytest.mark.gpu
def test_cuda_prefers_mamba_when_it_loads() -> None:
    _real_module_or_skip()
    os.environ.pop("DIFFMF_SCAN_BACKEND", None)
    assert resolve_backend(None, torch.device("cuda")).name == "mamba"


def test_adapter_runs_under_inference_mode() -> None:
    """The engine fuses under torch.inference_mode: the Function must not insist on a graph there."""
    case = ADAPTER_CASES[0]
    xs, orders = make_inputs(case, torch.float32)
    with torch.inference_mode():
        y = mamba_scan.scan_with(_standin_module(), *xs, case.softplus, orders)
    torch.testing.assert_close(y.double(), reference(xs, orders, case.softplus)[0], rtol=1e-5, atol=1e-6)


ORDER_CASES = [  # (h, w, batch, channels, N, directions, shared u, dtype)
    (5, 70, 2, 3, 4, ("row", "col", "row_rev", "col_rev"), True, "float32"),  # W beyond one tile
    (33, 3, 1, 2, 1, ("col_rev", "row"), False, "bfloat16"),  # H beyond one tile, a u per direction
    (1, 9, 1, 2, 3, ("row", "row_rev"), True, "float16"),
]


def _check_grid_copies(h, w, b, dm, N, dirs, shared, dtype, device) -> None:
    """triton_orders' copies equal torch's gather/scatter, and so do their gradients."""
    from diffmf_kernels import triton_orders, triton_scan  # needs Triton: not at the top of the module

    g = torch.Generator().manual_seed(1)
    K, L, dt = len(dirs), h * w, getattr(torch, dtype)
    orders = scan_orders(h, w, device, dirs)
    order = triton_scan.describe_orders(orders, torch.device(device))
    assert order.mode == triton_scan.MODE_GRID

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device, dt).requires_grad_()

    u, delta, B, C, y = rnd(b, dm if shared else K * dm, L), rnd(b, K * dm, L), rnd(b, K, N, L), rnd(b, K, N, L), \
        rnd(b, K * dm, L)
    if shared:
        want = gather_orders(u, delta, B, C, orders)
    else:  # torch's way for a u per direction: the delta path (a gather within each direction)
        want = (gather_orders(u[:, :dm], u, B, C, orders)[1],) + gather_orders(u[:, :dm], delta, B, C, orders)[1:]
    got = triton_orders.gather(u, delta, B, C, order)
    outs_want, outs_got = (*want, scatter_orders(y, orders)), (*got, triton_orders.scatter(y, order, K))
    for w_, g_ in zip(outs_want, outs_got):
        assert w_.shape == g_.shape and torch.equal(w_, g_)
    weights = [torch.randn(t.shape, generator=g).to(device) for t in outs_want]
    grads = [torch.autograd.grad(sum((o.float() * wt).sum() for o, wt in zip(outs, weights)), [u, delta, B, C, y])
             for outs in (outs_want, outs_got)]
    tol = 1e-6 if dt == torch.float32 else 2e-2  # the shared u's gradient sums K terms in its dtype
    for a, c in zip(*grads):
        torch.testing.assert_close(c.float(), a.float(), rtol=tol, atol=tol)


def test_grid_copies_in_the_interpreter_match_torch() -> None:
    """The Triton copies of the grid orders (and the adapter using them), under TRITON_INTERPRET=1 on CPU."""
    pytest.importorskip("triton", reason="triton is not installed (the dev extra brings it on Linux x86_64)")
    script = textwrap.dedent("""
        import torch, test_kernels_mamba as t
        from diffmf_kernels import mamba_scan
        from scan_cases import Case, check_scan
        assert mamba_scan._grid_copies(t.scan_orders(2, 3, "cpu"), torch.device("cpu")) is not None
        from diffmf_kernels import triton_orders
        for target in (triton_orders.TARGET_PROGRAMS, 1):  # 1: several channels per program, partial blocks
            triton_orders.TARGET_PROGRAMS = target
            for case in t.ORDER_CASES:
                t._check_grid_copies(*case, "cpu")
        ops = t._standin_module()
        for dtype in (torch.float32, torch.bfloat16):
            errors = check_scan(lambda *a: mamba_scan.scan_with(ops, *a).to(a[0].dtype), Case(2, 4, 3, 4, 5, 7, "grid"),
                                dtype, "cpu")
            t.assert_within(errors, dtype)
        print("CHECKED")
    """)
    tests_dir = Path(__file__).resolve().parent
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(tests_dir), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tests_dir,
                          timeout=300)
    assert done.returncode == 0 and "CHECKED" in done.stdout, done.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.parametrize("case", ORDER_CASES, ids=str)
def test_grid_copies_match_torch_on_cuda(case) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    _check_grid_copies(*case, "cuda")
