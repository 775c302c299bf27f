"""Model benchmark: parameters, MACs per megapixel, ms per frame, and how cost scales with pixels.

    python bench/model.py [--presets tiny base] [--device cpu|cuda] [--out DIR]

Times the FusionEngine's model call on device tensors (CUDA: bf16 + captured graph, as the
node runs it; CPU: float32), median of repeated runs after warm-up; `fuse()` adds the
host<->device copies and colour handling and is timed separately. MACs are counted by
torch's FlopCounterMode for convolutions/linears/einsums plus the selective scan's own
recurrence (3 multiply-adds per channel, state and token), which FlopCounterMode cannot see.
The scaling slope is the exponent b of time ~ pixels^b fitted from 256^2 to 1024^2
(1.0 = linear in pixels, the paper's claim).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from diffmf_core import FusionEngine, build_model
from diffmf_core.modules import ssd, vss


class ScanCounter:
    """Counts the selective scan's multiply-adds by wrapping the op where the modules call it."""

    def __init__(self) -> None:
        self.macs = 0

    def __enter__(self):
        self._saved = (vss.selective_scan, ssd.selective_scan)
        real = self._saved[0]

        def counted(u, delta, A, B, *args, **kwargs):
            self.macs += 3 * delta.shape[0] * delta.shape[1] * delta.shape[2] * A.shape[1]
            return real(u, delta, A, B, *args, **kwargs)

        vss.selective_scan = ssd.selective_scan = counted
        return self

    def __exit__(self, *exc):
        vss.selective_scan, ssd.selective_scan = self._saved


def count_macs(preset: str, h: int = 512, w: int = 640, device: str = "cpu") -> tuple[float, float]:
    """(dense MACs, scan MACs) per megapixel, counted in one float32 forward at h x w."""
    model = build_model(preset).eval().to(device)
    x = torch.rand(1, 1, h, w, device=device), torch.rand(1, 1, h, w, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as flops, ScanCounter() as scan:
        model(*x)
    mp = h * w / 1e6
    return flops.get_total_flops() / 2 / mp, scan.macs / mp


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_call(fn, device, repeat: int, budget_s: float) -> float:
    """Median ms of fn() over up to `repeat` runs (fewer if it blows the time budget)."""
    fn()
    sync(device)
    times = []
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def bench_preset(preset: str, device: str | None, dtype: str | None, sizes, repeat: int, budget_s: float,
                 profile: bool = False) -> dict:
    engine = FusionEngine(preset=preset, device=device, dtype=dtype)
    engine_untrained = engine.checkpoint is None
    dev = engine.device
    rows = []
    for h, w in sizes:
        ir = torch.rand(1, 1, h, w, device=dev)
        vi = torch.rand(1, 1, h, w, device=dev)
        with torch.inference_mode():
            model_ms = time_call(lambda ir=ir, vi=vi: engine._forward(ir, vi), dev, repeat, budget_s)
        ir_np = (np.random.default_rng(0).random((h, w)) * 255).astype(np.uint8)
        vi_np = (np.random.default_rng(1).random((h, w, 3)) * 255).astype(np.uint8)
        fuse_ms = time_call(lambda a=ir_np, b=vi_np: engine.fuse(a, b), dev, max(3, repeat // 2), budget_s)
        rows.append({"h": h, "w": w, "model_ms": model_ms, "fuse_ms": fuse_ms})
        print(f"  {preset:5s} {w}x{h}: model {model_ms:9.2f} ms   fuse() {fuse_ms:9.2f} ms", flush=True)
    res = {"preset": preset, "info": engine.info(), "untrained_weights": engine_untrained, "rows": rows}
    if profile and dev.type == "cuda":
        res["profile"] = scan_share(engine, 512, 640)
    return res


SCAN_KERNELS = ("_fwd_", "_carry", "_bwd_", "_grid_copy")  # Triton's; mamba-ssm's kernels name selective_scan


def scan_share(engine: FusionEngine, h: int, w: int) -> dict:
    """GPU time of one eager model call at h x w by kernel (torch.profiler), and the selective scan's share: how
    much of a frame a faster scan could win. Eager, so that each kernel is seen (the graph replays the same)."""
    from scan import kernel_profile  # bench/scan.py

    ir, vi = (torch.rand(1, 1, h, w, device=engine.device, dtype=engine.dtype) for _ in range(2))
    with torch.inference_mode():
        rows = kernel_profile(lambda: engine.model(ir, vi), calls=3)
    total = sum(us for _, _, us in rows)
    scan = sum(us for name, _, us in rows if name.startswith(SCAN_KERNELS) or "selective_scan" in name)
    return {"h": h, "w": w, "gpu_us": total, "scan_us": scan, "top": rows[:8]}


def render_share(preset: str, share: dict) -> list[str]:
    lines = ["", f"GPU time of one eager {preset} call at {share['w']}x{share['h']} (torch.profiler): "
             f"{share['gpu_us'] / 1e3:.2f} ms, of which the selective scan {share['scan_us'] / 1e3:.2f} ms "
             f"({100 * share['scan_us'] / max(share['gpu_us'], 1e-9):.0f} %)", "",
             "| kernel | launches | µs |", "|---|---:|---:|"]
    return lines + [f"| {name} | {n} | {us:.0f} |" for name, n, us in share["top"]]


def slope(rows) -> float:
    xs = [math.log(r["h"] * r["w"]) for r in rows]
    ys = [math.log(r["model_ms"]) for r in rows]
    return float(np.polyfit(xs, ys, 1)[0]) if len(rows) > 1 else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--dtype", default=None, help="float32 / bfloat16 / float16 (default: engine's choice)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per size before stopping repeats")
    ap.add_argument("--scaling", nargs="+", type=int, default=[256, 512, 768, 1024],
                    help="square sizes for the scaling slope")
    ap.add_argument("--skip-base-above", type=int, default=None,
                    help="on slow machines: largest side the base preset is timed at")
    ap.add_argument("--out", type=Path, default=None, help="folder for model.md and model.json")
    ap.add_argument("--profile", action="store_true",
                    help="CUDA: also the GPU time per kernel of one 640x512 call and the scan's share of it")
    args = ap.parse_args(argv)

    results = []
    for preset in args.presets:
        dense, scan = count_macs(preset, device="cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
        params = sum(p.numel() for p in build_model(preset).parameters())
        print(f"{preset}: {params:,} parameters, {dense / 1e9:.2f} G dense MACs/MP + {scan / 1e9:.2f} G scan MACs/MP",
              flush=True)
        sizes = [(256, 320), (512, 640)] + [(s, s) for s in args.scaling]
        if preset == "base" and args.skip_base_above:
            sizes = [s for s in sizes if max(s) <= args.skip_base_above]
        res = bench_preset(preset, args.device, args.dtype, sizes, args.repeat, args.budget, args.profile)
        res.update(params=params, dense_gmacs_per_mp=dense / 1e9, scan_gmacs_per_mp=scan / 1e9,
                   slope=slope([r for r in res["rows"] if r["h"] == r["w"]]))
        results.append(res)

    lines = [f"### Model benchmark — {results[0]['info']['device']}, {datetime.date.today()}", "",
             "| preset | params | GMACs/MP (dense + scan) | dtype | scan | 320x256 ms | 640x512 ms | fuse() 640x512 ms"
             " | slope 256²→1024² |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        by = {(x["h"], x["w"]): x for x in r["rows"]}
        small, big = by.get((256, 320)), by.get((512, 640))
        fmt = lambda row, key: f"{row[key]:.2f}" if row else "—"  # noqa: E731
        macs = f"{r['dense_gmacs_per_mp']:.2f} + {r['scan_gmacs_per_mp']:.2f}"
        lines.append(f"| {r['preset']} | {r['params']:,} | {macs} "
                     f"| {r['info']['dtype']} | {r['info']['scan_backend']}, {r['info']['scan_layout']} "
                     f"| {fmt(small, 'model_ms')} | "
                     f"{fmt(big, 'model_ms')} | {fmt(big, 'fuse_ms')} | {r['slope']:.2f} |")
    lines += ["", "Scaling (model ms): " + "; ".join(
        f"{r['preset']}: " + ", ".join(f"{x['w']}²={x['model_ms']:.1f}" for x in r["rows"] if x["h"] == x["w"])
        for r in results)]
    for r in results:
        if "profile" in r:
            lines += render_share(r["preset"], r["profile"])
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "model.md").write_text(table + "\n")
        (args.out / "model.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
