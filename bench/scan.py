"""Selective-scan benchmark: ms per call, GB/s and the share of the memory-bandwidth floor, per backend.

The problem is the model's: K=4 grid directions (diffmf_core.ops.scan_orders) over an
H x W map, u shared by the directions, Dm channels per direction, N states, batch 1.
The floor counts u, delta, B and C read once and y written once in the input dtype;
"floor GB/s" = those bytes / time, and "of peak" compares that with the device's memory
bandwidth (nominal, and a measured device copy). Not a test: it only measures.

GPU (default sizes 640x512 and 320x256, fp32 and bf16):
    python bench/scan.py --out out/bench [--mamba-module .gpu/mamba_build]
CPU (sizes as in issue 3: L = 16384, K*Dm = 64 and K=4 x Dm=64):
    python bench/scan.py --device cpu --out out/bench_cpu

Writes scan_bench.md (a markdown section) and scan_bench.json under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential_scan import selective_scan_sequential  # noqa: E402

from diffmf_core.ops import as_token_major, scan_orders  # noqa: E402
from diffmf_core.ops.scan_reference import gather_orders, scatter_orders, selective_scan_reference  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Nominal HBM bandwidth (GB/s) by device name, when torch does not report clock and bus width.
NOMINAL_GBS = {"H100 80GB HBM3": 3352, "H100 PCIe": 2039, "H100 NVL": 3938, "H200": 4800, "A100-SXM4-80GB": 2039,
               "A100-SXM4-40GB": 1555}


@dataclass(frozen=True)
class Problem:
    h: int
    w: int
    K: int = 4
    dm: int = 64
    N: int = 16
    bt: int = 1
    lines: str = "all"  # "all": row, col, row_rev, col_rev; "rows" / "cols": only that kind (a diagnostic)
    # u and delta (Bt, C, L) views of (Bt, L, C) memory, B and C slices of one (Bt, L, K, 2N) projection: the
    # layout SS2D hands the scan when the backend reads token-major tensors (ops.scan_token_major)
    token_major: bool = False

    @property
    def directions(self) -> tuple[str, ...]:
        kinds = {"all": ("row", "col", "row_rev", "col_rev"), "rows": ("row", "row_rev"), "cols": ("col", "col_rev")}
        base = kinds[self.lines]
        return tuple(base[i % len(base)] for i in range(self.K))

    @property
    def L(self) -> int:
        return self.h * self.w

    def floor_bytes(self, dtype: torch.dtype) -> int:
        """u, delta, B, C read once + y written once, in the input dtype (u shared by directions)."""
        e = torch.tensor([], dtype=dtype).element_size()
        kd = self.K * self.dm
        return e * self.bt * self.L * (self.dm + kd + 2 * self.K * self.N + kd)

    def __str__(self) -> str:
        lines = "" if self.lines == "all" else f" {self.lines} only"
        layout = " token-major" if self.token_major else ""
        return f"{self.h}x{self.w} K={self.K} Dm={self.dm} N={self.N}{lines}{layout}"


@dataclass
class Row:
    backend: str
    problem: str
    dtype: str
    fwd_ms: float | None = None
    bwd_ms: float | None = None
    floor_gbs: float | None = None
    max_rel_diff: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def make_inputs(p: Problem, dtype: torch.dtype, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    kd = p.K * p.dm

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    u = rnd(p.bt, p.dm, p.L).to(dtype)
    delta = rnd(p.bt, kd, p.L, scale=0.5).to(dtype)
    if p.token_major:
        u, delta = as_token_major(u), as_token_major(delta)
    A = -(torch.rand(kd, p.N, generator=g) + 0.5).to(device)
    B, C = rnd(p.bt, p.K, p.N, p.L).to(dtype), rnd(p.bt, p.K, p.N, p.L).to(dtype)
    if p.token_major:
        proj = torch.empty(p.bt, p.L, p.K, 2 * p.N, dtype=dtype, device=device)
        B = proj[..., :p.N].permute(0, 2, 3, 1).copy_(B)
        C = proj[..., p.N:].permute(0, 2, 3, 1).copy_(C)
    D, bias = rnd(kd), rnd(kd, scale=0.1) - 2.0
    orders = scan_orders(p.h, p.w, device, p.directions)
    return [u, delta, A, B, C, D, bias], orders


def timed(fn: Callable[[], object], device: str, repeat: int) -> float:
    """Median milliseconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def autograd_backend(fn: Callable) -> Callable:
    """(inputs, orders) -> (forward thunk, backward thunk, output) for an autograd-capable scan."""

    def run(xs, orders, device, repeat, with_bwd):
        fwd_ms = timed(lambda: fn(*xs, True, orders), device, repeat)
        y = bwd_ms = None
        if with_bwd:
            leaves = [x.detach().requires_grad_() for x in xs]
            y = fn(*leaves, True, orders)
            gy = torch.randn_like(y)
            bwd_ms = timed(lambda: torch.autograd.grad(y, leaves, gy, retain_graph=True), device, repeat)
        with torch.no_grad():
            y = fn(*xs, True, orders)
        return fwd_ms, bwd_ms, y

    run.forward = lambda xs, orders: fn(*xs, True, orders)  # for --profile
    return run


def load_mamba(module_dir: Path | None):
    """mamba-ssm's compiled selective_scan_cuda: from --mamba-module, else installed, else None."""
    from diffmf_kernels import mamba_scan

    try:
        return mamba_scan.load_module(module_dir)
    except ImportError as exc:
        if module_dir is not None:
            raise SystemExit(f"--mamba-module: {exc}") from exc
        return None


def mamba_backend(mod) -> Callable:
    """Its kernels on inputs already gathered into its (B, K*Dm, L) layout: its best case."""

    def run(xs, orders, device, repeat, with_bwd):
        u, delta, A, B, C, D, bias = xs
        us, ds, bs, cs = (t.contiguous() for t in gather_orders(u, delta, B, C, orders))
        fwd_ms = timed(lambda: mod.fwd(us, ds, A, bs, cs, D, None, bias, True), device, repeat)
        out, x = mod.fwd(us, ds, A, bs, cs, D, None, bias, True)[:2]
        bwd_ms = None
        if with_bwd:
            dout = torch.randn_like(out)
            bwd_ms = timed(lambda: mod.bwd(us, ds, A, bs, cs, D, None, bias, dout, x, None, None, True, False),
                           device, repeat)
        return fwd_ms, bwd_ms, scatter_orders(out, orders)

    return run


def sequential_backend(xs, orders, device, repeat, with_bwd):
    """The one-step-per-token loop, on inputs gathered to its layout beforehand (forward only)."""
    u, delta, A, B, C, D, bias = xs
    us, ds, bs, cs = gather_orders(u, delta, B, C, orders)
    fwd_ms = timed(lambda: selective_scan_sequential(us, ds, A, bs, cs, D, bias, True), device, repeat)
    return fwd_ms, None, scatter_orders(selective_scan_sequential(us, ds, A, bs, cs, D, bias, True), orders)


def copy_gbs(device: str) -> float:
    """Measured device-to-device copy bandwidth (read + write) of a 512 MiB buffer."""
    x = torch.empty(128 * 2**20, dtype=torch.float32, device=device)
    ms = timed(lambda: x.clone(), device, 5)
    return 2 * x.numel() * 4 / ms / 1e6


def device_info(device: str) -> dict:
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["device"] = props.name
        clock, bus = getattr(props, "memory_clock_rate", None), getattr(props, "memory_bus_width", None)
        nominal = 2 * clock * 1e3 * bus / 8 / 1e9 if clock and bus else None
        if nominal is None:
            nominal = next((v for k, v in NOMINAL_GBS.items() if k in props.name), None)
        info["nominal_gbs"] = nominal
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            pass
    else:
        info["device"] = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
        info["nominal_gbs"] = None
    info["copy_gbs"] = copy_gbs(device)
    return info


def _config(scan_args, spec: str):
    """The problem's default Triton config with ``spec`` applied (u, delta, A, B, ... in scan_args)."""
    from diffmf_kernels import triton_scan

    u, delta, A = scan_args[:3]
    N, L = A.shape[1], delta.shape[-1]
    batch, K = scan_args[3].shape[:2]
    return triton_scan.config_for(N, delta.shape[1] // K, L, spec, lines=batch * K)


def backends_for(device: str, args) -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    if device == "cuda":
        from diffmf_kernels import triton_scan

        reason = triton_scan.unavailable_reason()
        if reason is None:
            out["triton"] = autograd_backend(triton_scan.selective_scan)
            for spec in args.triton_config:
                triton_scan.ScanConfig().with_spec(spec)  # a typo fails here, before any timing
                out[f"triton[{spec}]"] = autograd_backend(
                    lambda *a, _spec=spec: triton_scan.selective_scan(*a, config=_config(a, _spec)))
        else:
            print(f"triton backend skipped: {reason}", file=sys.stderr)
        mod = load_mamba(args.mamba_module)
        if mod is not None:
            from diffmf_kernels import mamba_scan

            out["mamba-ssm"] = mamba_backend(mod)  # its kernel alone, inputs gathered beforehand
            out["mamba"] = autograd_backend(lambda *a, _m=mod: mamba_scan.scan_with(_m, *a))  # our backend
        else:
            print("mamba-ssm peer skipped: selective_scan_cuda not importable (see --mamba-module)", file=sys.stderr)
    else:
        from diffmf_kernels import cpu_scan

        reason = cpu_scan.unavailable_reason()
        if reason is None:
            out["cpu"] = autograd_backend(cpu_scan.selective_scan)
        else:
            print(f"cpu backend skipped: {reason}", file=sys.stderr)
    if args.reference or device == "cpu":
        out["reference"] = autograd_backend(selective_scan_reference)
    if device == "cpu":
        out["sequential"] = sequential_backend
    return out


def kernel_profile(fn: Callable[[], object], calls: int = 5) -> list[tuple[str, int, float]]:
    """(kernel, launches per call, GPU µs per call) for fn(), slowest first, by torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    stats: dict[str, list] = {}
    for evt in prof.events():
        if evt.device_type.name != "CUDA":
            continue
        rec = stats.setdefault(evt.name[:60], [0, 0.0])
        rec[0] += 1
        rec[1] += evt.time_range.elapsed_us()
    return sorted(((k, n // calls, us / calls) for k, (n, us) in stats.items()), key=lambda r: -r[2])


def compiled_kernels() -> list[dict]:
    """Every Triton scan kernel this process compiled, as the JIT specialised it here: registers, spill stack,
    shared memory (bench/triton_sass.py's cuobjdump report on the cubin it loaded), warps and tile constants.
    The offline report guesses the JIT's specialisation; this is what ran."""
    import triton
    from diffmf_kernels import triton_orders, triton_scan_kernels
    from triton_sass import cubin_usage

    out = []
    for mod in (triton_scan_kernels, triton_orders):
        for name, fn in vars(mod).items():
            if not isinstance(fn, triton.runtime.JITFunction):
                continue
            for cache in getattr(fn, "device_caches", {}).values():
                for k in cache[0].values():
                    src = getattr(k, "src", None)
                    consts = getattr(src, "constants", {}) or {}
                    names = getattr(getattr(src, "fn", None), "arg_names", [])
                    tiles = " ".join(f"{names[key[0]]}={v}" for key, v in consts.items()
                                     if isinstance(key, tuple) and key and key[0] < len(names)
                                     and names[key[0]].isupper())
                    out.append({"kernel": name, "warps": k.metadata.num_warps, "constants": tiles,
                                **cubin_usage(k.asm["cubin"])})
    return out


def render_compiled(kernels: list[dict]) -> str:
    lines = ["#### Compiled Triton kernels (as the JIT built them in this run)", "",
             "| kernel | warps | regs | spill stack B | LDL/STL | shared B | SASS | constants |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {k['kernel']} | {k['warps']} | {k['regs']} | {k['stack']} | {k['LDL/STL']} | {k['shared']} | "
              f"{k['sass']} | {k['constants']} |" for k in kernels]
    return "\n".join(lines) + "\n"


def render_profiles(profiles: dict[str, list[tuple[str, int, float]]], problem: str) -> str:
    lines = [f"#### Forward, per kernel ({problem}, bf16; torch.profiler, mean of 5 calls)", "",
             "| backend | kernel | launches | µs | share |", "|---|---|---:|---:|---:|"]
    for name, rows in profiles.items():
        total = sum(us for _, _, us in rows) or 1.0
        lines += [f"| {name} | {k} | {n} | {us:.0f} | {us / total:.0%} |" for k, n, us in rows]
        lines.append(f"| {name} | **all** | | **{total:.0f}** | |")
    return "\n".join(lines) + "\n"


def render(info: dict, rows: list[Row], peak: float | None) -> str:
    lines = [f"### {info['device']} — {info['date']}", "",
             f"torch {info['torch']}" + (f", triton {info['triton']}" if "triton" in info else "")
             + f"; measured copy bandwidth {info['copy_gbs']:.0f} GB/s"
             + (f", nominal {peak:.0f} GB/s" if peak else "") + ".", "",
             "| backend | problem | dtype | fwd ms | bwd ms | bwd/fwd | floor GB/s | of peak | of copy "
             "| max rel diff |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    for r in rows:
        ratio = r.bwd_ms / r.fwd_ms if r.bwd_ms and r.fwd_ms else None
        of_peak = r.floor_gbs / peak if r.floor_gbs and peak else None
        of_copy = r.floor_gbs / info["copy_gbs"] if r.floor_gbs else None
        lines.append(f"| {r.backend} | {r.problem} | {r.dtype} | {f(r.fwd_ms, '.3f')} | {f(r.bwd_ms, '.3f')} | "
                     f"{f(ratio, '.2f')} | {f(r.floor_gbs, '.3g')} | {f(of_peak, '.1%')} | {f(of_copy, '.1%')} | "
                     f"{f(r.max_rel_diff, '.1e')}{' ' + r.note if r.note else ''} |")
    lines += ["", "floor GB/s: bytes of u, delta, B, C read once and y written once / forward time. "
              "max rel diff: forward output vs the first backend timed on the same problem and dtype."]
    return "\n".join(lines) + "\n"


def write_results(out: Path, info: dict, rows: list[Row], peak: float | None,
                  profiles: dict[str, list[tuple[str, int, float]]], problem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    md = render(info, rows, peak)
    if profiles:
        md += "\n" + render_profiles(profiles, problem)
    (out / "scan_bench.md").write_text(md)
    (out / "scan_bench.json").write_text(json.dumps({"info": info, "rows": [asdict(r) for r in rows],
                                                    "profiles": profiles}, indent=1))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for scan_bench.md and scan_bench.json")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--sizes", nargs="*", help="HxW[:K:Dm][:nN][:rows|cols][:tm] (see parse_size); default per device")
    ap.add_argument("--dtypes", nargs="*", choices=tuple(DTYPES), default=["fp32", "bf16"])
    ap.add_argument("--repeat", type=int, default=None, help="timed calls per measurement (median)")
    ap.add_argument("--no-backward", action="store_true")
    ap.add_argument("--reference", action="store_true", help="also time the pure-PyTorch reference on CUDA")
    ap.add_argument("--mamba-module", type=Path, help="build dir of bench/build_mamba_scan.py")
    ap.add_argument("--triton-config", action="append", default=[],
                    help="extra Triton tile configs, e.g. 'ts=4,sub=128,bd=64,warps=2' (repeatable)")
    ap.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    ap.add_argument("--only-variants", action="store_true",
                    help="time only the --triton-config variants (e.g. to compile them in parallel processes first)")
    ap.add_argument("--profile", action="store_true",
                    help="CUDA: per-kernel GPU time of each backend's forward at the first size, bf16")
    return ap.parse_args(argv)


def parse_size(spec: str) -> Problem:
    """HxW[:K:Dm][:nN][:rows|cols][:tm], e.g. 512x640, 512x640:4:64:cols, 128x160:4:32:n8 (N=16 unless given);
    tm: u and delta token-major ((Bt, L, C) in memory)."""
    hw, *rest = spec.split(":")
    h, w = (int(v) for v in hw.lower().split("x"))
    nums = [int(v) for v in rest if v.isdigit()]
    K, dm = (nums[0], nums[1]) if len(nums) >= 2 else (4, 64)
    N = next((int(v[1:]) for v in rest if v[:1] == "n" and v[1:].isdigit()), 16)
    lines = next((v for v in rest if v in ("rows", "cols")), "all")
    return Problem(h, w, K, dm, N=N, lines=lines, token_major="tm" in rest)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    default_sizes = ["512x640", "256x320"] if device == "cuda" else ["128x128:1:64", "128x128:4:64"]
    problems = [parse_size(s) for s in (args.sizes or default_sizes)]
    repeat = args.repeat or (20 if device == "cuda" else 3)
    info = device_info(device)
    peak = info.get("nominal_gbs")
    backends = backends_for(device, args)
    if args.only_variants:
        backends = {k: v for k, v in backends.items() if k.startswith("triton[")}
    rows: list[Row] = []
    profiles: dict[str, list[tuple[str, int, float]]] = {}
    baseline_out: dict[tuple[str, str], torch.Tensor] = {}  # first successful output per (problem, dtype)
    jobs = [(p, dt, name) for p in problems for dt in args.dtypes for name in backends]
    for p, dt_name, name in tqdm(jobs, desc="scan bench", unit="run"):
        dtype = DTYPES[dt_name]
        if name == "sequential" and dt_name != "fp32":
            continue
        if name.startswith("triton[") and (dt_name != "bf16" or (p != problems[0] and p.lines == "all")):
            continue  # tile variants: bf16, at the first size and the rows-only / cols-only splits
        if p.lines != "all" and (dt_name != "bf16" or not name.startswith(("triton", "cpu"))):
            continue  # rows-only / cols-only diagnostics: the native kernels, bf16
        xs, orders = make_inputs(p, dtype, device)
        # The reference's backward (autograd through L/16 chunk slices) takes minutes at these
        # sizes; the pure-PyTorch baselines are timed once after a warm-up call.
        slow = name in ("reference", "sequential")
        with_bwd = not args.no_backward and name != "reference"
        row = Row(name, str(p), dt_name)
        try:
            row.fwd_ms, row.bwd_ms, y = backends[name](xs, orders, device, 1 if slow else repeat, with_bwd)
            row.floor_gbs = p.floor_bytes(dtype) / row.fwd_ms / 1e6
            key = (row.problem, dt_name)
            if key in baseline_out:
                row.max_rel_diff = max_rel(y, baseline_out[key])
            else:
                baseline_out[key] = y
        except Exception as exc:  # one backend failing must not hide the others' figures
            row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        rows.append(row)
        if (args.profile and device == "cuda" and p == problems[0] and dt_name == "bf16" and not row.note
                and hasattr(backends[name], "forward")):
            try:
                with torch.no_grad():
                    profiles[name] = kernel_profile(lambda _b=backends[name], _x=xs, _o=orders: _b.forward(_x, _o))
            except Exception as exc:  # the table above still has its timing
                print(f"profile of {name} failed: {exc}", file=sys.stderr)
        write_results(args.out, info, rows, peak, profiles, str(problems[0]))  # a run cut short keeps these
        if device == "cuda":
            torch.cuda.empty_cache()
    if device == "cuda" and any(n.startswith("triton") for n in backends):
        try:
            kernels = compiled_kernels()
            with open(args.out / "scan_bench.md", "a") as f:
                f.write("\n" + render_compiled(kernels))
            (args.out / "compiled_kernels.json").write_text(json.dumps(kernels, indent=1))
        except Exception as exc:  # a report on the side; the timings are written already
            print(f"compiled-kernel report failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    md = (args.out / "scan_bench.md").read_text()
    print(md)
    best: dict[tuple[str, str], Row] = {}
    for r in rows:
        key = (r.problem, r.dtype)
        if r.fwd_ms is not None and (key not in best or r.fwd_ms < best[key].fwd_ms):
            best[key] = r
    for (prob, dt), r in best.items():
        print(f"fastest forward, {prob} {dt}: {r.backend} {r.fwd_ms:.3f} ms", file=sys.stderr)
    print(f"wrote {args.out / 'scan_bench.md'} and scan_bench.json", file=sys.stderr)


if __name__ == "__main__":
    main()
