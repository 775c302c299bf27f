"""Fusion metrics: known cases, and agreement with the reference values in ../shared/data/reference_metrics.json."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from diffmf_training import metrics as M
from diffmf_training.evaluate import read_gray

RNG = np.random.default_rng(1234)
H, W = 64, 80


def _natural_pair():
    """Two smooth, textured 0..255 sources and a max-rule fused image (integer grey levels)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    a = np.round(127 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0) + RNG.normal(0, 6, (H, W)))
    b = np.round(90 + 60 * np.cos((x + y) / 9.0) + RNG.normal(0, 6, (H, W)))
    a, b = np.clip(a, 0, 255), np.clip(b, 0, 255)
    return np.maximum(a, b), a, b


# --------------------------------------------------------------------------- single-image metrics


def test_constant_image_has_zero_entropy_sd_sf_ag():
    c = np.full((H, W), 77.0)
    assert M.entropy(c) == 0.0
    assert M.standard_deviation(c) == 0.0
    assert M.spatial_frequency(c) == 0.0
    assert M.average_gradient(c) == 0.0


def test_entropy_counts_bits_of_the_grey_histogram():
    two = np.zeros((H, W))
    two[:, : W // 2] = 200  # two equally frequent levels: 1 bit
    assert M.entropy(two) == pytest.approx(1.0)
    every_level = np.arange(256.0).reshape(16, 16)  # 256 equally frequent levels: 8 bits
    assert M.entropy(every_level) == pytest.approx(8.0)


def test_sd_sf_ag_on_patterns_with_known_values():
    stripes = np.zeros((H, W))
    stripes[:, 1::2] = 10.0  # every horizontal neighbour differs by 10, vertical ones by 0
    assert M.spatial_frequency(stripes) == pytest.approx(10.0)
    assert M.standard_deviation(stripes) == pytest.approx(5.0)
    ramp = np.tile(2.0 * np.arange(W), (H, 1))  # Gx = 2 everywhere (also one-sided at borders), Gy = 0
    assert M.average_gradient(ramp) == pytest.approx(math.sqrt(2.0))


# --------------------------------------------------------------------------- two-image statistics


def test_mutual_information_is_symmetric_and_equals_entropy_for_identical_images():
    f, a, b = _natural_pair()
    assert M.mutual_information(f, a) == pytest.approx(M.mutual_information(a, f), rel=1e-12)
    assert M.mutual_information_sum(f, a, b) == pytest.approx(M.mutual_information_sum(f, b, a), rel=1e-12)
    # MI(x, x) = H(x); in nats.
    assert M.mutual_information(a, a) == pytest.approx(M.entropy(a) * math.log(2.0), rel=1e-9)


def test_mutual_information_of_unrelated_images_is_small_and_non_float_levels_work():
    x = RNG.integers(0, 4, (200, 200)).astype(np.float64)
    y = RNG.integers(0, 4, (200, 200)).astype(np.float64)
    assert 0.0 <= M.mutual_information(x, y) < 1e-3
    k = np.repeat(np.array([0.25, 1.5, 2.75, 3.125]), 50).reshape(20, 10)  # 4 equiprobable non-integer values
    assert M.mutual_information(k, k) == pytest.approx(math.log(4.0))


def test_psnr_and_mse():
    f, a, b = _natural_pair()
    assert M.psnr(a, a, a) == math.inf  # identical images: no error, infinite PSNR
    shifted = np.clip(a + 10.0, 0, 265)
    assert M.mse(shifted, a, a) == pytest.approx(100.0)
    assert M.psnr(shifted, a, a) == pytest.approx(10 * math.log10(shifted.max() ** 2 / 100.0))
    assert M.mse(f, a, b) == pytest.approx((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2)


def test_cc_and_scd():
    f, a, b = _natural_pair()
    assert M.correlation_coefficient(a, a, a) == pytest.approx(1.0)
    assert M.correlation_coefficient(2 * a + 3, a, a) == pytest.approx(1.0)
    assert M.correlation_coefficient(-a, a, a) == pytest.approx(-1.0)
    assert M.scd(f, a, b) == pytest.approx(M.scd(f, b, a))
    assert math.isnan(M.correlation_coefficient(np.full((H, W), 5.0), a, b))  # undefined, not a crash


# --------------------------------------------------------------------------- SSIM, VIF, Qabf, Nabf


def test_ssim_of_an_image_with_itself_is_one_per_source():
    f, a, b = _natural_pair()
    assert M.ssim(a, a, 2.0) == pytest.approx(1.0)
    assert M.ssim_sum(a, a, a) == pytest.approx(2.0)  # the primary column sums the two sources
    assert M.ssim_avg255(a, a, a) == pytest.approx(1.0)  # the variant averages them
    assert M.ssim_sum(f, a, b) == pytest.approx(M.ssim_sum(f, b, a))
    assert M.ssim_avg255(f, a, b) < 1.0


def test_vif_of_an_undistorted_image_is_one_per_source():
    f, a, b = _natural_pair()
    assert M.vifp(a, a) == pytest.approx(1.0, abs=1e-8)
    assert M.vif(a, a, a) == pytest.approx(2.0, abs=1e-8)
    assert M.vif(f, a, b) == pytest.approx(M.vif(f, b, a))
    assert 0.0 < M.vifp(a, (a + b) / 2) < 1.0
    # A reference with no detail at any scale counts as 1.0 (the reference code's NaN rule).
    assert M.vifp(np.full((H, W), 9.0), a) == 1.0


def test_vif_rejects_images_smaller_than_its_windows():
    small = np.zeros((M.MIN_SIDE - 1, 60))
    with pytest.raises(ValueError, match="at least"):
        M.vifp(small, small)


def test_qabf_is_high_for_perfect_preservation_and_symmetric():
    f, a, b = _natural_pair()
    assert M.qabf(a, a, a) > 0.95
    assert M.qabf(f, a, b) == pytest.approx(M.qabf(f, b, a), rel=1e-6)
    assert M.qabf(np.full((H, W), 128.0), a, b) < 0.2  # all edges lost
    assert 0.0 <= M.qabf(f, a, b) <= 1.0


def test_qabf_keeps_the_matlab_quirk_for_equal_edge_strengths():
    """Where source and fused strengths are equal the ratio is the fused strength itself, not 1."""
    g = np.array([0.4, 3.0], dtype=np.float32)
    angle = np.zeros(2, dtype=np.float32)
    q = M._qabf_preservation(g, angle, g, angle)
    orient_term = 0.9879 / (1 + math.exp(-22 * (1.0 - 0.8)))
    assert q[0] == pytest.approx(0.9994 / (1 + math.exp(-15 * (0.4 - 0.5))) * orient_term, rel=1e-5)
    assert q[1] == pytest.approx(0.9994 / (1 + math.exp(-15 * (3.0 - 0.5))) * orient_term, rel=1e-5)


def test_nabf_is_zero_without_artifacts_and_grows_with_them():
    f, a, b = _natural_pair()
    assert M.nabf(a, a, a) == 0.0  # no fused edge is stronger than both sources
    noisy = np.clip(f + RNG.normal(0, 25, f.shape), 0, 255)
    assert M.nabf(noisy, a, b) > M.nabf(f, a, b) >= 0.0
    assert M.nabf(noisy, a, b) == pytest.approx(M.nabf(noisy, b, a))


def test_fusion_metrics_returns_every_column_and_checks_inputs():
    f, a, b = _natural_pair()
    values = M.fusion_metrics(f, a, b)
    assert tuple(values) == M.METRIC_COLUMNS
    assert M.METRIC_COLUMNS[:12] == (
        "EN",
        "SD",
        "SF",
        "AG",
        "MI",
        "SCD",
        "VIF",
        "Qabf",
        "SSIM",
        "PSNR",
        "CC",
        "Nabf",
    )
    assert all(math.isfinite(v) for v in values.values())
    assert values["MI_bits"] == pytest.approx(values["MI"] / math.log(2))
    assert values["VIF"] == pytest.approx(M.vif(f, a, b))
    assert values["PSNR"] == pytest.approx(M.psnr(f, a, b))
    with pytest.raises(ValueError, match="shape mismatch"):
        M.fusion_metrics(f[:, :-1], a, b)
    with pytest.raises(ValueError, match="2-D"):
        M.fusion_metrics(np.stack([f, f, f], -1), a, b)


# --------------------------------------------------------------------------- reference values

# From the file's own how_to_read: relative ~1e-4; 1e-3 for Qabf and SSIM (across libraries).
REL_TOL = 1e-4
REL_TOL_LOOSE = {"Qabf": 1e-3, "SSIM": 1e-3, "SSIM_avg255": 1e-3}
ABS_FLOOR = 1e-9  # values like Nabf of the mean rule are ~1e-7


def _expected(entry: dict) -> dict[str, float]:
    """Every value of one entry that our columns (or per-source terms) reproduce."""
    exp = {k: v for k, v in entry["metrics_cddfuse"].items()}
    var = entry["variants"]
    exp["MI_bits"] = var["MI_in_bits__derived_MI_div_ln2"]
    exp["SSIM_avg255"] = var["SSIM_data_range_255__IF-FILM"] / 2.0  # IF-FILM sums; our variant averages
    exp["MI_ir"], exp["MI_vi"] = var["MI_ir_nats"], var["MI_vi_nats"]
    exp["SSIM_ir"], exp["SSIM_vi"] = var["SSIM_ir"], var["SSIM_vi"]
    matlab = entry.get("metrics_matlab_tang_current__octave", {})
    if "Nabf_declared_argument_order" in matlab:
        exp["Nabf"] = matlab["Nabf_declared_argument_order"]
    return exp


def _check_entry(root: str, entry: dict) -> list[str]:
    """Mismatch messages for one entry (empty when every value is within tolerance)."""
    root = Path(root)
    f = read_gray(root / entry["evaluated_image"])
    a = read_gray(root / entry["ir"])
    b = read_gray(root / entry["vi"])
    got = M.fusion_metrics(f, a, b)
    got["MI_ir"], got["MI_vi"] = M.mutual_information(f, a), M.mutual_information(f, b)
    got["SSIM_ir"], got["SSIM_vi"] = M.ssim(f, a, 2.0), M.ssim(f, b, 2.0)
    bad = []
    for key, want in _expected(entry).items():
        tol = REL_TOL_LOOSE.get(key, REL_TOL)
        if not math.isclose(got[key], want, rel_tol=tol, abs_tol=ABS_FLOOR):
            bad.append(f"{entry['evaluated_image']} {key}: got {got[key]:.10g}, reference {want:.10g}")
    return bad


def _load_entries(shared_data: Path) -> list[dict]:
    return json.loads((shared_data / "reference_metrics.json").read_text())["entries"]


def _spread(entries: list[dict]) -> list[dict]:
    """First entry of every (dataset, fused method) group, plus every entry carrying a Nabf reference."""
    chosen: OrderedDict[tuple, dict] = OrderedDict()
    for e in entries:
        chosen.setdefault((e["dataset"], e["fusion"]), e)
        if "Nabf_declared_argument_order" in e.get("metrics_matlab_tang_current__octave", {}):
            chosen.setdefault((e["dataset"], e["fusion"], e["pair"]), e)
    return list(chosen.values())


@pytest.mark.shared_data
def test_reference_values_on_a_spread_of_entries(shared_data):
    entries = _load_entries(shared_data)
    spread = _spread(entries)
    assert {e["dataset"] for e in spread} == {e["dataset"] for e in entries}
    assert {e["fusion"] for e in spread} == {e["fusion"] for e in entries}
    assert any("Nabf" in _expected(e) for e in spread)
    bad = [msg for e in spread for msg in _check_entry(str(shared_data), e)]
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:20])


@pytest.mark.shared_data
@pytest.mark.slow
def test_reference_values_on_every_entry(shared_data):
    entries = _load_entries(shared_data)
    workers = max(1, min(4, os.cpu_count() or 1))
    # "spawn": forking this process (cv2 and torch thread pools already running) can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_check_entry, [str(shared_data)] * len(entries), entries, chunksize=4))
    bad = [msg for msgs in results for msg in msgs]
    assert not bad, f"{len(bad)} mismatches over {len(entries)} entries:\n" + "\n".join(bad[:20])


def test_metrics_without_any_edge_are_defined_where_the_reference_defines_them():
    black = np.zeros((H, W))
    assert math.isnan(M.qabf(black, black, black))  # 0/0: no source edge to preserve
    flat = np.full((H, W), 40.0)
    assert 0.9 < M.qabf(flat, flat, flat) < 1.0  # zero padding: a non-zero constant has border edges
    assert M.nabf(flat, flat, flat) == 0.0
    assert M.vif(flat, flat, flat) == 2.0  # each source counts as 1.0
