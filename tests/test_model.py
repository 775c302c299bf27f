"""The network: shapes, range, gradients, and that each exchange really exchanges."""

import pytest
import torch

from diffmf_core import DiffMF, build_model, get_config
from diffmf_core.model import (
    ChannelExchangeModule,
    CrossModalScanning,
    deinterleave_columns,
    interleave_columns,
    pad_to_multiple,
    split_halves,
)

SMALL = dict(dim=8, stem_dim=4, d_state=4, ce_d_state=4, ce_heads=2)


@pytest.mark.parametrize("preset,size", [("tiny", (37, 53)), ("tiny", (5, 3)), ("base", (19, 22))])
def test_output_shape_and_range_for_odd_sizes(preset, size):
    torch.manual_seed(0)
    overrides = SMALL if preset == "base" else {}
    model = build_model(preset, **overrides).eval()
    ir, vi = torch.rand(2, 1, *size), torch.rand(2, 1, *size)
    with torch.no_grad():
        out = model(ir, vi)
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


def test_direct_head_is_in_unit_range_too():
    model = build_model("tiny", output_head="direct", **SMALL).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 20, 24), torch.rand(1, 1, 20, 24))
    assert out.shape == (1, 1, 20, 24) and out.min() >= 0 and out.max() <= 1


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_model("tiny", **SMALL)
    # Break the zero-initialised output head so gradients flow past it.
    torch.nn.init.normal_(model.decoder.head.weight, std=0.1)
    out = model(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reaches: {missing}"


def test_mismatched_inputs_are_refused():
    model = build_model("tiny", **SMALL)
    with pytest.raises(ValueError, match="must both be"):
        model(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))


def test_channel_exchange_mixes_modalities():
    """Changing the IR features changes the VI branch after the exchange (through swapped B/C), and vice versa."""
    torch.manual_seed(0)
    cem = ChannelExchangeModule(get_config("tiny", **SMALL)).eval()
    e_ir, e_vi = torch.randn(1, 8, 6, 7), torch.randn(1, 8, 6, 7)
    with torch.no_grad():
        base_ir, base_vi = cem(e_ir, e_vi)
        _, vi_after_ir_change = cem(e_ir + torch.randn_like(e_ir), e_vi)
        ir_after_vi_change, _ = cem(e_ir, e_vi + torch.randn_like(e_vi))
        # The SSM alone (omega aside) must carry the other modality: B and C come from it.
        y_ir, y_vi = cem.ssd(e_ir, e_vi)
        _, y_vi2 = cem.ssd(e_ir + torch.randn_like(e_ir), e_vi)  # (a constant shift would vanish in LayerNorm)
    assert not torch.allclose(base_vi, vi_after_ir_change)
    assert not torch.allclose(base_ir, ir_after_vi_change)
    assert not torch.allclose(y_vi, y_vi2)


@pytest.mark.parametrize("branch", ["column", "row", "concat"])
def test_each_spatial_scan_mixes_modalities(branch):
    """In each of the three cross-modal scans, the VI half of the output depends on the IR input."""
    torch.manual_seed(0)
    level = CrossModalScanning(get_config("tiny", **SMALL)).eval()
    a, b = torch.randn(1, 8, 4, 5), torch.randn(1, 8, 4, 5)
    vss = getattr(level, branch)
    w = a.shape[-1]

    def vi_half(a_in):
        if branch == "column":
            return deinterleave_columns(vss(interleave_columns(a_in, b)))[:, 8:]
        if branch == "row":
            return vss(torch.cat([a_in, b], -1))[..., w:]
        return vss(torch.cat([a_in, b], 1))[:, 8:]

    with torch.no_grad():
        assert not torch.allclose(vi_half(a), vi_half(a + torch.randn_like(a)))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_interleave_and_halves_round_trip_keep_the_layout(fmt):
    a, b = (torch.randn(2, 3, 4, 5).contiguous(memory_format=fmt) for _ in range(2))
    x = interleave_columns(a, b)
    assert torch.equal(x[..., 0::2], a) and torch.equal(x[..., 1::2], b)
    stacked = torch.cat([a, b], 1)
    halves = split_halves(torch.cat([a, b], -1))
    for out in (x, deinterleave_columns(x), halves):
        assert out.is_contiguous(memory_format=fmt)
    assert torch.equal(deinterleave_columns(x), stacked) and torch.equal(halves, stacked)


def test_reflect_padding_to_stride():
    x = torch.arange(35.0).view(1, 1, 5, 7)
    p = pad_to_multiple(x, 4)
    assert p.shape[-2:] == (8, 8)
    assert torch.equal(p[..., :5, :7], x)
    assert torch.equal(p[..., 5, :7], x[..., 3, :])  # reflection, not repetition
    assert pad_to_multiple(torch.rand(1, 1, 2, 2), 16).shape[-2:] == (16, 16)  # too small to reflect


def test_presets_and_config_validation():
    assert get_config("tiny").stride == 16
    assert get_config("base").stride == 4
    with pytest.raises(ValueError, match="unknown DIFF-MF preset"):
        get_config("huge")
    with pytest.raises(ValueError, match="unknown DIFF-MF config field"):
        get_config("tiny", widht=3)
    with pytest.raises(ValueError, match="ce_heads"):
        get_config("tiny", ce_heads=3)
    assert isinstance(DiffMF(), DiffMF)
