"""Token-major scan tensors: the layout rule, and SS2D / the SSD exchange giving the same results either way."""

from __future__ import annotations

import pytest
import torch

import diffmf_core.modules.ssd as ssd_module
import diffmf_core.modules.vss as vss_module
from diffmf_core.modules.scan_io import sum_directions
from diffmf_core.modules.ssd import CrossModalSSD
from diffmf_core.modules.vss import SS2D
from diffmf_core.ops import LAYOUT_ENV, as_token_major, is_token_major, resolve_backend, scan_token_major
from diffmf_core.ops.reduce import sum_slices

CPU = torch.device("cpu")


def test_token_major_is_a_transposed_view_of_channels_last_memory() -> None:
    x = torch.randn(2, 5, 7)
    tm = as_token_major(x)
    assert torch.equal(tm, x) and is_token_major(tm) and not is_token_major(x)
    assert tm.transpose(1, 2).is_contiguous()
    assert as_token_major(tm) is tm
    assert not is_token_major(torch.randn(2, 7, 5)[:, :, :3].transpose(1, 2).contiguous())


def test_layout_follows_the_environment_then_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAYOUT_ENV, "token_major")
    assert scan_token_major(CPU, "reference")
    monkeypatch.setenv(LAYOUT_ENV, "channel_major")
    assert not scan_token_major(CPU, "cpu")
    monkeypatch.setenv(LAYOUT_ENV, "auto")
    assert not scan_token_major(CPU, "reference")  # the reference reads either; it asks for nothing
    if resolve_backend(None, CPU).name == "cpu":
        assert scan_token_major(CPU) and scan_token_major(CPU, needs_grad=True)
    monkeypatch.setenv(LAYOUT_ENV, "rows")
    with pytest.raises(ValueError, match=LAYOUT_ENV):
        scan_token_major(CPU)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_sum_slices_is_sum_with_its_gradient(dim: int) -> None:
    t = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    out = sum_slices(t, dim)
    assert torch.allclose(out, t.sum(dim)) and out.is_contiguous()
    (g,) = torch.autograd.grad(out, t, torch.ones_like(out))
    assert torch.equal(g, torch.ones_like(t))
    assert sum_slices(t[:1], 0).shape == (4, 5)


def test_sum_directions_is_the_same_sum_in_either_layout() -> None:
    y = torch.randn(2, 4 * 6, 35)
    expected = y.view(2, 4, 6, 35).sum(1).transpose(1, 2)
    for laid in (y, as_token_major(y)):
        out = sum_directions(laid, 4)
        assert out.shape == (2, 35, 6) and torch.allclose(out, expected, atol=1e-6)
    assert sum_directions(as_token_major(y), 4).is_contiguous()


def _run_both_layouts(monkeypatch, module_under_test, scan_module, make_inputs, backend: str):
    """Outputs, input gradients and parameter gradients under each layout, and the layouts the scan was handed."""
    seen, real = [], scan_module.selective_scan

    def spy(u, delta, *args, **kwargs):
        y = real(u, delta, *args, **kwargs)
        seen.append((is_token_major(u), is_token_major(delta), is_token_major(y)))
        return y

    monkeypatch.setattr(scan_module, "selective_scan", spy)
    results = {}
    for layout in ("channel_major", "token_major"):
        monkeypatch.setenv(LAYOUT_ENV, layout)
        module_under_test.zero_grad()
        inputs = [t.clone().requires_grad_() for t in make_inputs()]
        out = module_under_test(*inputs)
        outs = out if isinstance(out, tuple) else (out,)
        sum(o.square().sum() for o in outs).backward()
        params = {n: p.grad.clone() for n, p in module_under_test.named_parameters() if p.grad is not None}
        results[layout] = (outs, [t.grad for t in inputs], params, list(seen))
        seen.clear()
    return results


def _assert_same(results, backend: str) -> None:
    (outs_c, grads_c, params_c, seen_c), (outs_t, grads_t, params_t, seen_t) = results.values()
    assert seen_c and all(s == (False, False, False) for s in seen_c)
    # The CPU kernel hands y back token-major; the reference returns its own (contiguous) layout.
    assert seen_t and all(s[:2] == (True, True) for s in seen_t)
    if backend == "cpu":
        assert all(s[2] for s in seen_t)
    for a, b in zip(outs_c + tuple(grads_c), outs_t + tuple(grads_t)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), float((a - b).abs().max())
    assert params_c.keys() == params_t.keys() and params_c
    for name in params_c:
        a, b = params_c[name], params_t[name]
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max())), name


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_ss2d_is_the_same_in_either_layout(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    if backend == "cpu" and resolve_backend(None, CPU).name != "cpu":
        pytest.skip("native CPU scan unavailable")
    torch.manual_seed(0)
    block = SS2D(8, d_state=4, scan_backend=backend)
    x = torch.randn(2, 5, 7, 8)
    _assert_same(_run_both_layouts(monkeypatch, block, vss_module, lambda: [x], backend), backend)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_ssd_exchange_is_the_same_in_either_layout(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    if backend == "cpu" and resolve_backend(None, CPU).name != "cpu":
        pytest.skip("native CPU scan unavailable")
    torch.manual_seed(0)
    block = CrossModalSSD(8, 2.0, 4, 2, True, 3, backend)
    f_ir, f_vi = torch.randn(1, 8, 6, 5), torch.randn(1, 8, 6, 5)
    _assert_same(_run_both_layouts(monkeypatch, block, ssd_module, lambda: [f_ir, f_vi], backend), backend)


@pytest.mark.gpu
def test_ss2d_on_triton_reads_token_major_in_place_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inference through the Triton tiles forward on token-major u/delta (what DIFFMF_SCAN_LAYOUT=token_major
    asks of the model on a GPU) against the channel-major default."""
    torch.manual_seed(0)
    block = SS2D(32, d_state=16, scan_backend="triton").cuda().eval()
    x = torch.randn(1, 40, 48, 32, device="cuda")
    seen, real = [], vss_module.selective_scan

    def spy(u, delta, *args, **kwargs):
        y = real(u, delta, *args, **kwargs)
        seen.append(is_token_major(y))
        return y

    monkeypatch.setattr(vss_module, "selective_scan", spy)
    outs = {}
    for layout in ("channel_major", "token_major"):
        monkeypatch.setenv(LAYOUT_ENV, layout)
        with torch.inference_mode():
            outs[layout] = block(x)
    assert seen == [False, True]
    assert torch.allclose(outs["channel_major"], outs["token_major"], rtol=1e-4, atol=1e-5)
