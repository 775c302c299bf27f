"""The Triton scan (diffmf_kernels.triton_scan) against the float64 reference.

On a CUDA machine the ``gpu`` tests run the compiled kernels; everywhere, a small case
runs under Triton's interpreter (in a subprocess, since TRITON_INTERPRET is read when the
kernels are defined) and the recognition of the grid scan orders is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffmf_kernels import triton_scan
from scan_cases import (
    GPU_CASES,
    LOW_PRECISION,
    TOLERANCE,
    Case,
    assert_within,
    check_triton,
    make_inputs,
    max_rel,
    reference,
)

from diffmf_core.ops import resolve_backend, scan_orders, selective_scan


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
def test_float32_matches_reference_on_cuda(case: Case) -> None:
    assert_within(check_triton(case, torch.float32, "cuda"), torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "case"), LOW_PRECISION, ids=lambda p: str(p).replace("torch.", ""))
def test_half_precision_inputs_keep_float32_state(dtype: torch.dtype, case: Case) -> None:
    assert_within(check_triton(case, dtype, "cuda"), dtype)


VARIANTS = ["forward=lines", "forward=hybrid", "forward=hybrid,rows_kernel=tiles", "forward=hybrid,cols_kernel=rows",
            "forward=hybrid,rows_gt=32,rows_sub=3", "forward=auto", "forward=tiles",
            "forward=tiles,ts_bwd=16,bd_bwd=32,warps_bwd=1", "grad_forward=reorder", "tiles_rows=contiguous",
            "tiles_rows=contiguous,tiles_stages=2", "tiles_prefetch=1", "tiles_rows=contiguous,tiles_prefetch=1",
            "tiles_prefetch=1,tiles_maxnreg=128", "grad_forward=reorder,rows_gt=256,rows_warps=8", "tiles_fold=1",
            "tiles_fold=2,tiles_prefetch=1", "tiles_rows=contiguous,tiles_fold=2,tiles_prefetch=1",
            "tiles_tm_loads=vector"]


@pytest.mark.gpu
@pytest.mark.parametrize("spec", VARIANTS)
@pytest.mark.parametrize("case", [GPU_CASES[2], GPU_CASES[3]], ids=str)
def test_kernel_variants_match_reference_on_cuda(spec: str, case: Case) -> None:
    cfg = triton_scan.config_for(case.N, case.dm, case.L, spec)
    assert_within(check_triton(case, torch.float32, "cuda", cfg), torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("spec", [*VARIANTS[1:4], *VARIANTS[-10:]])
def test_kernel_variants_in_bfloat16_on_cuda(spec: str) -> None:
    case = GPU_CASES[3]
    cfg = triton_scan.config_for(case.N, case.dm, case.L, spec)
    assert_within(check_triton(case, torch.bfloat16, "cuda", cfg), torch.bfloat16)


@pytest.mark.gpu
def test_cuda_picks_a_cuda_backend_automatically() -> None:
    from diffmf_kernels import mamba_scan

    os.environ.pop("DIFFMF_SCAN_BACKEND", None)
    want = "mamba" if mamba_scan.unavailable_reason() is None else "triton"
    assert resolve_backend(None, torch.device("cuda")).name == want
    case = GPU_CASES[0]
    xs, orders = make_inputs(case, torch.float32, "cuda")
    y = selective_scan(*xs, case.softplus, orders=orders)
    assert max_rel(y, reference(xs, orders, case.softplus)[0]) < TOLERANCE[torch.float32][0]


def test_grid_orders_are_read_by_arithmetic() -> None:
    h, w = 6, 10
    order = triton_scan.describe_orders(scan_orders(h, w), torch.device("cpu"))
    assert order.mode == triton_scan.MODE_GRID and (h, w) == (order.H, order.W)
    assert order.table.tolist() == [0, 1, 2, 3]
    sub = scan_orders(h, w, directions=("col_rev", "row"))
    assert triton_scan.describe_orders(sub, torch.device("cpu")).table.tolist() == [3, 0]
    perm = torch.stack([torch.randperm(h * w), torch.arange(h * w)])
    assert triton_scan.describe_orders(perm, torch.device("cpu")).mode == triton_scan.MODE_TABLE
    assert triton_scan.describe_orders(None, torch.device("cpu")).mode == triton_scan.MODE_IDENTITY
    with pytest.raises(ValueError, match="orders must index tokens"):
        triton_scan.describe_orders(perm + 1, torch.device("cpu"))


def test_kernels_in_the_interpreter_match_reference() -> None:
    """Every index mode and kernel variant, with gradients, under TRITON_INTERPRET=1 on CPU.

    The cases run in two interpreter processes at once (each is single-threaded Python).
    """
    triton = pytest.importorskip("triton", reason="triton is not installed (the dev extra brings it on Linux x86_64)")
    if tuple(int(v) for v in triton.__version__.split(".")[:2]) < (3, 9):
        # 3.6's interpreter cannot take a runtime loop bound (range(0, n_chunks, CT)); it compiles them fine.
        pytest.skip(f"Triton {triton.__version__}'s CPU interpreter cannot run these kernels (checked: 3.9 can, "
                    "3.6 cannot); the gpu tests run them compiled")
    script = textwrap.dedent("""
        import json, sys, torch
        from scan_cases import Case, check_triton
        from diffmf_kernels.triton_scan import ScanConfig
        small = dict(ts=4, sub=4, bd=2, warps=1, ts_bwd=8, bd_bwd=2, warps_bwd=1, carry_rows=8, carry_tile=4,
                     chunk=4, lines=4, bd_lines=2, warps_lines=1, rows_gt=4, rows_sub=2, rows_bd=2, rows_warps=1,
                     grad_forward="same")
        tiles, lines, hybrid = (ScanConfig(forward=f, **small) for f in ("tiles", "lines", "hybrid"))
        hybrid_tiles = ScanConfig(forward="hybrid", rows_kernel="tiles", **small)
        all_rows = ScanConfig(forward="hybrid", cols_kernel="rows", **small)
        runs = [(Case(1, 4, 3, 4, 4, 8, "grid"), lines),  # "lines" following image lines
                (Case(1, 4, 3, 4, 3, 7, "grid"), tiles),
                # rows read contiguously (a reversed row's tiles flipped), a partial last sub-tile
                (Case(1, 4, 3, 4, 5, 11, "grid"),
                 ScanConfig(forward="tiles", tiles_rows="contiguous", tiles_stages=2, **small)),
                # the next sub-tile's inputs loaded during this one's arithmetic, columns by index, rows contiguous
                (Case(1, 4, 3, 4, 5, 11, "grid"),
                 ScanConfig(forward="tiles", tiles_rows="contiguous", tiles_prefetch=1, **small)),
                # the state folded into each sub-tile's first step: output and summary (in scan order), output only
                (Case(1, 4, 3, 4, 5, 11, "grid"),
                 ScanConfig(forward="tiles", tiles_rows="contiguous", tiles_prefetch=1, tiles_fold=2, **small)),
                (Case(1, 2, 3, 1, 1, 23, "perm"), ScanConfig(forward="tiles", tiles_fold=1, **small)),
                # token-major inputs (check_triton reads them in place) through the compiler's vector loads
                (Case(1, 4, 3, 4, 3, 7, "grid"), ScanConfig(forward="tiles", tiles_tm_loads="vector", **small)),
                (Case(1, 4, 3, 4, 5, 11, "grid"), hybrid),  # rows not a whole number of segments
                (Case(2, 4, 3, 3, 8, 8, "grid"), hybrid),  # columns a whole number of chunks
                (Case(1, 4, 3, 2, 5, 6, "grid"), hybrid_tiles),
                (Case(2, 4, 3, 3, 9, 6, "grid"), all_rows),  # columns by the rows kernels, partial segments
                (Case(2, 1, 2, 2, 1, 19, "none", softplus=False, with_bias=False), hybrid),
                (Case(1, 2, 3, 1, 1, 23, "perm"), hybrid),  # no grid: falls back to "tiles"
                (Case(1, 2, 3, 1, 1, 23, "perm"), None),
                (Case(2, 1, 2, 2, 1, 19, "none", softplus=False, with_bias=False), None),
                # the default split: tiles forward without gradients, hybrid (even row segments) with them
                (Case(1, 4, 3, 2, 5, 9, "grid"), ScanConfig(**dict(small, grad_forward="hybrid"))),
                # gradients through inputs copied into scan order (one line per direction)
                (Case(2, 4, 3, 2, 5, 9, "grid"), ScanConfig(**dict(small, grad_forward="reorder")))]
        from diffmf_kernels import triton_autotune, triton_scan_forward
        triton_autotune.REPEAT = 1
        if int(sys.argv[1]) == 1:  # the kernels' other load layout (FIRST_FAST: Triton < 3.9)
            triton_scan_forward.FIRST_AXIS_FAST = not triton_scan_forward.first_axis_fast()
        runs.append((Case(1, 4, 2, 3, 3, 5, "grid"), ScanConfig(forward="auto", **small)))  # then the fastest
        part, parts = int(sys.argv[1]), int(sys.argv[2])
        print("ERRORS", json.dumps([check_triton(c, torch.float32, "cpu", cfg) for c, cfg in runs[part::parts]]))
    """)
    tests_dir = Path(__file__).resolve().parent
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(tests_dir), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i), "2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tests_dir) for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    checked = 0
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
        for errors in json.loads(stdout.split("ERRORS")[1]):
            assert_within(errors, torch.float32)
            checked += 1
    assert checked == 18


def test_config_overrides_from_environment_and_spec(monkeypatch) -> None:
    base = triton_scan.default_config(16, 64, 512 * 640)
    monkeypatch.delenv(triton_scan.CONFIG_ENV, raising=False)
    assert triton_scan.config_for(16, 64, 512 * 640) == base
    monkeypatch.setenv(triton_scan.CONFIG_ENV, "forward=hybrid, rows_gt=256")
    cfg = triton_scan.config_for(16, 64, 512 * 640, "rows_gt=64,rows_kernel=tiles")
    assert (cfg.forward, cfg.rows_gt, cfg.rows_kernel, cfg.ts) == ("hybrid", 64, "tiles", base.ts)
    bad = [("tile=3", "no field 'tile'"), ("forward", "name=value"), ("forward=fast", "forward must be"),
           ("grad_forward=fast", "grad_forward must be"), ("tiles_prefetch=2", "tiles_prefetch must be 0 or 1"),
           ("tiles_fold=-1", "tiles_fold must be 0, 1 or 2"), ("tiles_maxnreg=300", "tiles_maxnreg must be 0"),
           ("tiles_tm_loads=wide", "tiles_tm_loads must be 'vector' or 'lanes'")]
    for spec, message in bad:
        with pytest.raises(ValueError, match=message):
            base.with_spec(spec)
    assert base.with_spec("tiles_prefetch=1,tiles_maxnreg=128").tiles_maxnreg == 128


def test_default_chunks_are_short_enough_to_fill_the_gpu() -> None:
    """Long chunks where the problem fills the GPU anyway, shorter ones where few lines would leave it idle."""
    def elements(cfg, N, Dm, L, lines):  # tile elements the programs work on at once
        return lines * -(-Dm // cfg.bd) * cfg.bd * cfg.ts * N * -(-L // (cfg.ts * cfg.sub))

    big = triton_scan.default_config(16, 64, 512 * 640, lines=4)
    assert big.ts * big.sub == 256  # the measured default at 640x512
    # the tiny model's commonest scan at 640x512 (N=8, 32 channels per direction, a 160x128 map)
    tiny_map = triton_scan.default_config(8, 32, 128 * 160, lines=4)
    fill = triton_scan.FILL_ELEMENTS
    assert tiny_map.ts * tiny_map.sub < 256 and elements(tiny_map, 8, 32, 128 * 160, 4) >= fill
    doubled = replace(tiny_map, sub=tiny_map.sub * 2)  # the longest chunk that still fills it
    assert tiny_map.sub == tiny_map.ts_bwd // tiny_map.ts or elements(doubled, 8, 32, 128 * 160, 4) < fill
    assert triton_scan.default_config(16, 64, 128 * 160, lines=4).sub == big.sub  # 64 channels fill it already
    batch = triton_scan.default_config(8, 32, 128 * 160, lines=64)
    assert batch.sub > tiny_map.sub and elements(batch, 8, 32, 128 * 160, 64) >= fill
    floor = triton_scan.default_config(8, 8, 64, lines=1)  # never shorter than one backward step block
    assert floor.ts * floor.sub == floor.ts_bwd


def test_gradients_run_the_grad_forward_variant() -> None:
    """Default: "tiles" without gradients; with them "reorder" on grid orders, else "hybrid" with its rows cut
    into even segments."""
    base = triton_scan.default_config(16, 64, 512 * 640)
    assert (base.forward, base.grad_forward) == ("tiles", "reorder")
    grid = triton_scan.describe_orders(scan_orders(512, 640), torch.device("cpu"))
    train = triton_scan._for_gradients(base, grid, 512 * 640)
    assert (train.forward, train.grad_forward, train.rows_sub) == ("hybrid", "same", 5)  # 10 tiles of 64: 2 x 5
    crop = triton_scan.describe_orders(scan_orders(32, 32), torch.device("cpu"))  # a 128-pixel crop at stride 4
    small_map = triton_scan._for_gradients(base, crop, 1024)
    assert (small_map.rows_gt, small_map.rows_sub) == (32, 1)
    # a spec that names the forward means it for both, unless it names grad_forward too
    assert base.with_spec("forward=lines").grad_forward == "same"
    assert triton_scan._for_gradients(base.with_spec("forward=lines"), grid, 512 * 640).forward == "lines"
    assert base.with_spec("forward=lines,grad_forward=tiles").grad_forward == "tiles"
    # inside the kernels' Function (no grid order: reorder copies only those) "reorder" runs "hybrid"
    assert triton_scan._for_gradients(base, grid, 512 * 640).forward == "hybrid"
    assert triton_scan._for_gradients(base.with_spec("grad_forward=hybrid"), grid, 512 * 640) == train
    auto = replace(base, forward="auto")  # the autotune times the backward itself
    assert triton_scan._for_gradients(auto, grid, 512 * 640) is auto


def test_autotune_picks_the_fastest_candidate_once_and_skips_failures(caplog) -> None:
    from diffmf_kernels import triton_autotune as tune

    tune.clear()
    ticks = iter(range(10_000))
    cost = {"a": 5, "b": 2, "c": 9}
    calls = []

    def clock():  # each run advances the clock by its candidate's cost
        return float(next(ticks))

    def run(cand):
        calls.append(cand)
        if cand == "broken":
            raise RuntimeError("no such kernel\nmore")
        for _ in range(cost[cand] - 1):
            next(ticks)

    with caplog.at_level("INFO", logger="diffmf_kernels.autotune"):
        assert tune.choose("k1", ["a", "broken", "b", "c"], run, clock=clock, repeat=2) == "b"
    assert "broken failed (RuntimeError: no such kernel); skipped" in caplog.text
    assert "scan autotune for k1: b" in caplog.text
    n = len(calls)
    assert tune.choose("k1", ["a", "b", "c"], run, clock=clock) == "b" and len(calls) == n  # cached
    with pytest.raises(RuntimeError, match="no candidate"):
        tune.choose("k2", ["broken"], run, clock=clock)
    tune.clear()
