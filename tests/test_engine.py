"""FusionEngine on gray, RGB and 16-bit inputs of odd sizes."""

import numpy as np
import pytest
import torch

from diffmf_core import FusionEngine, build_model, save_checkpoint
from diffmf_core.colour import rgb_to_ycbcr

SMALL = dict(dim=8, stem_dim=4, d_state=4, ce_d_state=4, ce_heads=2)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.manual_seed(0)
    path = save_checkpoint(build_model("tiny", **SMALL), tmp_path_factory.mktemp("w") / "small.safetensors")
    return FusionEngine(checkpoint=path, device="cpu")


def test_defaults_on_cpu(engine):
    assert engine.device.type == "cpu" and engine.dtype == torch.float32
    info = engine.info()
    assert info["scan_backend"] in ("reference", "cpu") and info["parameters"] > 0


def test_token_major_layout_runs_channels_last_with_the_same_result(tmp_path, monkeypatch):
    """DIFFMF_SCAN_LAYOUT picks the engine's memory format; both layouts fuse alike (float rounding only)."""
    torch.manual_seed(0)
    path = save_checkpoint(build_model("tiny", **SMALL), tmp_path / "small.safetensors")
    rng = np.random.default_rng(3)
    ir, vi = rng.random((33, 47)).astype(np.float32), rng.random((33, 47)).astype(np.float32)
    fused = {}
    for layout, fmt in (("channel_major", torch.contiguous_format), ("token_major", torch.channels_last)):
        monkeypatch.setenv("DIFFMF_SCAN_LAYOUT", layout)
        eng = FusionEngine(checkpoint=path, device="cpu")
        assert eng.memory_format == fmt
        name = layout.replace("_", "-")
        assert eng.info()["scan_layout"] == name and f"({name})" in eng.describe()
        fused[layout] = eng.fuse(ir, vi).astype(int)
    assert np.abs(fused["channel_major"] - fused["token_major"]).max() <= 1


def test_gray_uint8(engine):
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (29, 41), dtype=np.uint8)
    vi = rng.integers(0, 256, (29, 41), dtype=np.uint8)
    out = engine.fuse(ir, vi)
    assert out.shape == (29, 41) and out.dtype == np.uint8


def test_rgb_visible_returns_rgb_with_visible_chroma(engine):
    rng = np.random.default_rng(1)
    ir = rng.integers(0, 256, (24, 30), dtype=np.uint8)
    vi = (rng.random((24, 30, 3)) * 120 + 60).astype(np.uint8)
    out = engine.fuse(ir, vi)
    assert out.shape == (24, 30, 3) and out.dtype == np.uint8
    chroma_out = rgb_to_ycbcr(out / 255.0)[..., 1:]
    chroma_vi = rgb_to_ycbcr(vi / 255.0)[..., 1:]
    inside = (out > 5).all(-1) & (out < 250).all(-1)  # where no channel clipped
    np.testing.assert_allclose(chroma_out[inside], chroma_vi[inside], atol=0.02)


def test_uint16_and_float_inputs_give_the_same_result(engine):
    rng = np.random.default_rng(2)
    ir16 = rng.integers(0, 65536, (17, 23), dtype=np.uint16)
    vi = rng.random((17, 23)).astype(np.float32)
    a = engine.fuse(ir16, vi)
    b = engine.fuse(ir16.astype(np.float32) / 65535.0, vi)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_bad_inputs_say_what_is_wrong(engine):
    with pytest.raises(ValueError, match="differ in size"):
        engine.fuse(np.zeros((10, 12), np.uint8), np.zeros((10, 13), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        engine.fuse(np.zeros((0, 12), np.uint8), np.zeros((0, 12), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        engine.fuse(np.full((4, 4), np.nan, np.float32), np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="unsupported image dtype"):
        engine.fuse(np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError, match="CUDA is not available"):
        if not torch.cuda.is_available():
            FusionEngine(device="cuda")
        else:
            raise ValueError("CUDA is not available (skipped: it is)")


def test_warmup_and_describe(engine):
    assert engine.warmup(32, 48, iterations=1) > 0
    assert "scan=" in engine.describe()


@pytest.mark.gpu
def test_cuda_engine_matches_cpu_within_bf16_tolerance(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(build_model("tiny"), tmp_path / "t.safetensors")
    cpu = FusionEngine(checkpoint=path, device="cpu")
    gpu = FusionEngine(checkpoint=path, device="cuda")
    rng = np.random.default_rng(3)
    ir = rng.integers(0, 256, (120, 160), dtype=np.uint8)
    vi = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    a, b = cpu.fuse(ir, vi).astype(int), gpu.fuse(ir, vi).astype(int)
    b2 = gpu.fuse(ir, vi).astype(int)  # replayed CUDA graph gives the same frame
    assert np.array_equal(b, b2)
    assert np.abs(a - b).mean() < 2.0
