"""The pure-PyTorch scan (the oracle) against a plain step-by-step recurrence in float64."""

import math

import pytest
import torch

from diffmf_core.ops import ScanBackendError, scan_orders, selective_scan
from diffmf_core.ops.scan_reference import selective_scan_reference


def naive_scan(u, delta, A, B, C, D, delta_bias, softplus):
    """Scalar loops, float64, straight from the recurrence's definition."""
    b, kd, L = u.shape
    K, N = B.shape[1], A.shape[1]
    y = torch.zeros(b, kd, L, dtype=torch.float64)
    for bi in range(b):
        for c in range(kd):
            k = c // (kd // K)
            h = [0.0] * N
            for t in range(L):
                dt = float(delta[bi, c, t]) + (float(delta_bias[c]) if delta_bias is not None else 0.0)
                if softplus:
                    dt = math.log1p(math.exp(dt))
                acc = 0.0
                for n in range(N):
                    h[n] = math.exp(dt * float(A[c, n])) * h[n] + dt * float(B[bi, k, n, t]) * float(u[bi, c, t])
                    acc += float(C[bi, k, n, t]) * h[n]
                y[bi, c, t] = acc + (float(D[c]) * float(u[bi, c, t]) if D is not None else 0.0)
    return y


def random_inputs(b, K, dm, N, L, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, K * dm, L, generator=g, dtype=dtype)
    delta = torch.randn(b, K * dm, L, generator=g, dtype=dtype) * 0.5
    A = -torch.rand(K * dm, N, generator=g, dtype=dtype) * 2 - 0.1
    B = torch.randn(b, K, N, L, generator=g, dtype=dtype)
    C = torch.randn(b, K, N, L, generator=g, dtype=dtype)
    D = torch.randn(K * dm, generator=g, dtype=dtype)
    bias = torch.randn(K * dm, generator=g, dtype=dtype) * 0.3
    return u, delta, A, B, C, D, bias


@pytest.mark.parametrize("b,K,dm,N,L", [(1, 1, 2, 1, 7), (2, 2, 3, 4, 13), (1, 4, 2, 16, 9)])
@pytest.mark.parametrize("softplus", [True, False])
def test_reference_matches_step_by_step_recurrence(b, K, dm, N, L, softplus):
    u, delta, A, B, C, D, bias = random_inputs(b, K, dm, N, L)
    if not softplus:
        delta = delta.abs()
    got = selective_scan_reference(u, delta, A, B, C, D, bias, softplus)
    want = naive_scan(u, delta, A, B, C, D, bias, softplus)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_reference_without_optional_terms():
    u, delta, A, B, C, _, _ = random_inputs(1, 2, 2, 3, 11, seed=3)
    got = selective_scan_reference(u, delta, A, B, C, None, None, True)
    torch.testing.assert_close(got, naive_scan(u, delta, A, B, C, None, None, True), rtol=1e-10, atol=1e-10)


def test_orders_mode_equals_materialised_cross_scan():
    """Scanning by index permutation gives what scanning flipped / transposed copies gives."""
    h, w, dm, N, b = 3, 5, 2, 4, 2
    L, K = h * w, 4
    g = torch.Generator().manual_seed(1)
    u = torch.randn(b, dm, L, generator=g, dtype=torch.float64)
    delta = torch.randn(b, K * dm, L, generator=g, dtype=torch.float64)
    A = -torch.rand(K * dm, N, generator=g, dtype=torch.float64)
    B = torch.randn(b, K, N, L, generator=g, dtype=torch.float64)
    C = torch.randn(b, K, N, L, generator=g, dtype=torch.float64)
    orders = scan_orders(h, w)
    got = selective_scan(u, delta, A, B, C, None, None, True, backend="reference", orders=orders)

    def to_direction(x, k):  # (b, ch, L) raster -> direction k's scan order, by explicit copies
        m = x.view(b, -1, h, w)
        seq = m.flatten(2) if k % 2 == 0 else m.transpose(2, 3).flatten(2)
        return seq.flip(-1) if k >= 2 else seq

    for k in range(K):
        sl = slice(k * dm, (k + 1) * dm)
        yk = naive_scan(to_direction(u, k), to_direction(delta[:, sl], k), A[sl],
                        to_direction(B[:, k], k).unsqueeze(1), to_direction(C[:, k], k).unsqueeze(1),
                        None, None, True)
        # back to raster order: invert the permutation
        back = torch.empty_like(yk)
        back[:, :, orders[k]] = yk
        torch.testing.assert_close(got[:, sl], back, rtol=1e-10, atol=1e-10)


def test_entry_point_rejects_bad_shapes_and_unknown_backend():
    u, delta, A, B, C, D, bias = random_inputs(1, 2, 2, 3, 5)
    with pytest.raises(ValueError, match="delta must be"):
        selective_scan(u, delta[:, :, :4], A, B, C, D, bias)
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(u, delta, A[:, :2], B, C, D, bias)
    with pytest.raises(ScanBackendError, match="unknown scan backend"):
        selective_scan(u, delta, A, B, C, D, bias, backend="fastest")
    with pytest.raises(ScanBackendError, match="mamba"):
        selective_scan(u, delta, A, B, C, D, bias, backend="mamba")


def test_reference_gradients_match_finite_differences():
    u, delta, A, B, C, D, bias = random_inputs(1, 2, 2, 3, 6, seed=5)
    inputs = [t.clone().requires_grad_(True) for t in (u, delta, A, B, C, D, bias)]
    assert torch.autograd.gradcheck(lambda *x: selective_scan_reference(*x, True), inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_orders_first_built_under_inference_mode_still_train(backend: str) -> None:
    """A node or an evaluation may build the cached orders first; training afterwards must still work."""
    h, w = 7, 3  # a shape no other test caches
    with torch.inference_mode():
        scan_orders(h, w)
    u, delta, A, B, C, D, bias = random_inputs(1, 4, 2, 3, h * w, seed=7)
    u = u[:, :2].clone().requires_grad_()
    y = selective_scan(u, delta, A, B, C, D, bias, backend=backend, orders=scan_orders(h, w))
    (grad,) = torch.autograd.grad(y.sum(), u)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
