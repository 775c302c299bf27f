"""Compile the Triton scan kernels for a GPU target offline and report what ptxas made of them.

No GPU needed: Triton ships ptxas/cuobjdump, so on any machine this prints per kernel
the registers, spills (local memory), shared memory and a static SASS opcode histogram
(MUFU = exp2/log special-function ops, FP32 FMA/MUL/ADD, shuffles, barriers, global
loads/stores); with --loops also per loop body, i.e. per iteration. Elements per thread per
loop iteration give the per-element cost that the tile sizes trade against register pressure.
A development aid, not a benchmark. "_fwd_output/inf" is the inference kernel, "/sav" the one
that saves states for a backward.

    python bench/triton_sass.py [--arch 90] [--dtype bf16] [--n 16] [--ts 4 --sub 64 --bd 64 ...]
    python bench/triton_sass.py --only _fwd_output _fwd_summary --loops --tiles-fold 2   # docs/kernels.md
"""

from __future__ import annotations

import argparse
import collections
import inspect
import os
import re
import subprocess
import tempfile

import triton
from diffmf_kernels import triton_scan_kernels as tk
from diffmf_kernels.triton_scan import ScanConfig
from diffmf_kernels.triton_scan_forward import first_axis_fast, token_major_mode
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
GROUPS = {
    "MUFU": ("MUFU",),
    "FP32": ("FFMA", "FMUL", "FADD", "FMNMX", "FSEL", "FSETP"),
    "SHFL": ("SHFL",),
    "BAR": ("BAR",),
    "LDG/STG": ("LDG", "STG"),
    "LDS/STS": ("LDS", "STS"),
    "LDL/STL": ("LDL", "STL"),  # spilled registers' loads and stores
}


def signature(fn, pointer_types: dict[str, str], constexprs: dict) -> dict[str, str]:
    sig = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = pointer_types.get(name, "*fp32")
        else:
            sig[name] = "i32"
    return sig


# Arguments the JIT would see as multiples of 16 at the benchmark size (640x512, Dm=64, N=16):
# it specialises those (and every torch allocation's pointer) with tt.divisibility=16, which
# decides whether loads vectorise; without this the offline compile would assume nothing.
DIVISIBLE_INTS = ("L", "H", "W", "NL", "LL", "LS", "Dm", "N")


def divisibility(fn, sig: dict[str, str], ints: tuple[str, ...]) -> dict:
    names = list(inspect.signature(fn.fn).parameters)
    return {(names.index(n),): [["tt.divisibility", 16]] for n, kind in sig.items()
            if kind.startswith("*") or n in ints}


def inspect_kernel(fn, pointer_types, constexprs, warps: int, arch: int, maxnreg: int = 0,
                   divisible: tuple[str, ...] = DIVISIBLE_INTS) -> dict:
    sig = signature(fn, pointer_types, constexprs)
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=divisibility(fn, sig, divisible))
    options = {"num_warps": warps, **({"maxnreg": maxnreg} if maxnreg else {})}
    return cubin_usage(triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options).asm["cubin"])


def cubin_usage(cubin: bytes) -> dict:
    """Registers, spill stack, shared memory and the opcode groups of one compiled kernel (cuobjdump)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "--dump-resource-usage", path],
                             capture_output=True, text=True).stdout
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", path], capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    usage = dict(re.findall(r"(REG|STACK|SHARED):(\d+)", res))  # spills land in STACK (LOCAL stays 0)
    inst = [(int(a, 16), o.split(".")[0], rest) for a, o, rest in
            re.findall(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)([^;]*);", sass)]
    ops = collections.Counter(o for _, o, _ in inst)
    return {"regs": int(usage.get("REG", 0)), "stack": int(usage.get("STACK", 0)),
            "shared": int(usage.get("SHARED", 0)), "sass": sum(ops.values()), **_groups(ops),
            "loops": _loops(inst)}


def _groups(ops: collections.Counter) -> dict:
    return {g: sum(ops[o] for o in names) for g, names in GROUPS.items()}


def _loops(inst: list[tuple[int, str, str]]) -> list[dict]:
    """Each loop body (a branch back to a lower address): its instruction count and opcode groups, in code order.
    A kernel that branches once per program on the direction holds a copy of its loop per branch."""
    out = []
    for addr, op, rest in inst:
        target = re.search(r"0x([0-9a-f]+)", rest) if op == "BRA" else None
        if target and int(target.group(1), 16) < addr:
            body = collections.Counter(o for a, o, _ in inst if int(target.group(1), 16) <= a <= addr)
            out.append({"sass": sum(body.values()), **_groups(body)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--dtype", default="bf16", choices=("fp32", "fp16", "bf16"))
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--lines", type=int, default=32)
    ap.add_argument("--bd-lines", type=int, default=8)
    ap.add_argument("--warps-lines", type=int, default=2)
    ap.add_argument("--ts", type=int, default=4)
    ap.add_argument("--sub", type=int, default=64)
    ap.add_argument("--bd", type=int, default=64)
    ap.add_argument("--warps", type=int, default=2)
    ap.add_argument("--ts-bwd", type=int, default=32)
    ap.add_argument("--bd-bwd", type=int, default=16)
    ap.add_argument("--warps-bwd", type=int, default=2)
    ap.add_argument("--rows-gt", type=int, default=64)
    ap.add_argument("--rows-sub", type=int, default=4)
    ap.add_argument("--rows-bd", type=int, default=2)
    ap.add_argument("--rows-warps", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="kernel names to compile (default: all)")
    ap.add_argument("--loops", action="store_true", help="also the counts of each loop body (one iteration)")
    ap.add_argument("--mode", type=int, default=1, help="0 identity, 1 grid arithmetic, 2 table")
    ap.add_argument("--tiles-rows", default="index", choices=("index", "contiguous"),
                    help="ScanConfig.tiles_rows of the tiles forward kernels")
    ap.add_argument("--tiles-stages", type=int, default=1, help="ScanConfig.tiles_stages")
    ap.add_argument("--tiles-prefetch", type=int, default=0, choices=(0, 1), help="ScanConfig.tiles_prefetch")
    ap.add_argument("--tiles-fold", type=int, default=0, choices=(0, 1, 2), help="ScanConfig.tiles_fold")
    ap.add_argument("--tiles-maxnreg", type=int, default=0, help="ScanConfig.tiles_maxnreg (0: no cap)")
    ap.add_argument("--token-major", action="store_true",
                    help="the tiles forward on token-major u, delta, y and B/C as slices of one projection")
    ap.add_argument("--tiles-tm-loads", default=ScanConfig.tiles_tm_loads, choices=("vector", "lanes"),
                    help="ScanConfig.tiles_tm_loads (with --token-major)")
    args = ap.parse_args()
    np2 = 1 << max(0, (args.n - 1).bit_length())
    dt = "*" + args.dtype
    ptrs = {p: dt for p in ("u_ptr", "delta_ptr", "B_ptr", "C_ptr", "y_ptr", "gy_ptr", "gdelta_ptr", "gB_ptr",
                            "gC_ptr")}
    ptrs.update(dirs_ptr="*i32", orders_ptr="*i32", lines_ptr="*i32", sel_ptr="*i32", gu_ptr="*fp32",
                gdelta_ptr=dt)
    flags = dict(MODE=args.mode, HAS_BIAS=True, SOFTPLUS=True)
    # B/C strides as the JIT specialises them: contiguous (Bt, K, N, L) has token stride 1 (and the others
    # multiples of L); with --token-major, the model's projection slices: state stride 1, token stride K x width
    bc = dict(bc_n=1) if args.token_major else dict(bc_t=1)
    divisible = DIVISIBLE_INTS + (("bc_b",) if args.token_major else ("bc_b", "bc_k", "bc_n"))
    fwd = dict(NP=np2, BD=args.bd, TS=args.ts, SUB=args.sub, SHARED_U=True, FIRST_FAST=first_axis_fast(),
               ROWS_CONTIG=args.tiles_rows == "contiguous", STAGES=args.tiles_stages,
               PREFETCH=bool(args.tiles_prefetch), FOLD=args.tiles_fold,
               TOKEN_MAJOR=token_major_mode(args.token_major, args.tiles_tm_loads), **bc, **flags)
    bwd = dict(NP=np2, BD=args.bd_bwd, TS=args.ts_bwd, **flags)
    bwd_out = dict(bwd, SHARED_U=True, HAS_D=True, FIRST_FAST=first_axis_fast())
    lines = dict(NP=np2, BD=args.bd_lines, G=args.lines, SHARED_U=True, HAS_D=True, FIRST_FAST=first_axis_fast(),
                 **flags)
    tile_lines = np2 * args.bd_lines * args.lines
    # PS (position stride) is 1 along image rows, which the JIT specialises into a constant
    rows = dict(NP=np2, BD=args.rows_bd, GT=args.rows_gt, SUB=args.rows_sub, REV=False, SHARED_U=True, HAS_D=True,
                HAS_BIAS=True, SOFTPLUS=True, PS=1)
    tile_rows = np2 * args.rows_gt  # per channel: _fwd_rows loops over its rows_bd channels
    kernels = [
        ("_fwd_lines/sum", tk._fwd_lines, dict(lines, SUMMARY=True, SAVE_EVERY=0), args.warps_lines, tile_lines),
        ("_fwd_lines/out", tk._fwd_lines, dict(lines, SUMMARY=False, SAVE_EVERY=0), args.warps_lines, tile_lines),
        ("_fwd_lines/sav", tk._fwd_lines, dict(lines, SUMMARY=False, SAVE_EVERY=args.ts_bwd), args.warps_lines,
         tile_lines),
        ("_fwd_rows/sum", tk._fwd_rows, dict(rows, SUMMARY=True, SAVE=False), args.rows_warps, tile_rows),
        ("_fwd_rows/out", tk._fwd_rows, dict(rows, SUMMARY=False, SAVE=False), args.rows_warps, tile_rows),
        ("_fwd_rows/sav", tk._fwd_rows, dict(rows, SUMMARY=False, SAVE=True), args.rows_warps, tile_rows),
        ("_fwd_summary", tk._fwd_summary, fwd, args.warps, args.bd * np2 * args.ts),
        ("_fwd_output/inf", tk._fwd_output, dict(fwd, HAS_D=True, SAVE_EVERY=0), args.warps, args.bd * np2 * args.ts),
        ("_fwd_output/sav", tk._fwd_output, dict(fwd, HAS_D=True, SAVE_EVERY=args.ts_bwd // args.ts), args.warps,
         args.bd * np2 * args.ts),
        ("_carry", tk._carry, dict(NP=np2, R=32, CT=64, REVERSE=False), 4, 32 * 64),
        ("_bwd_rows_summary", tk._bwd_rows_summary, {k: v for k, v in rows.items() if k not in ("SHARED_U", "HAS_D")},
         args.rows_warps, tile_rows),
        ("_bwd_rows", tk._bwd_rows, {**{k: v for k, v in rows.items() if k != "BD"}, "DMP": 64}, args.rows_warps,
         tile_rows),
        ("_bwd_summary", tk._bwd_summary, dict(bwd, FIRST_FAST=first_axis_fast()), args.warps_bwd,
         args.bd_bwd * np2 * args.ts_bwd),
        ("_bwd_output", tk._bwd_output, bwd_out, args.warps_bwd,
         args.bd_bwd * np2 * args.ts_bwd),
    ]
    print(f"sm_{args.arch}, {args.dtype}, N={args.n}, lines={args.lines}, bd_lines={args.bd_lines}, "
          f"ts={args.ts}, sub={args.sub}, bd={args.bd}, "
          f"ts_bwd={args.ts_bwd}, bd_bwd={args.bd_bwd}, rows_gt={args.rows_gt}, rows_sub={args.rows_sub}, "
          f"rows_bd={args.rows_bd}, rows_warps={args.rows_warps}, mode={args.mode}, tiles_rows={args.tiles_rows}, "
          f"tiles_stages={args.tiles_stages}, tiles_prefetch={args.tiles_prefetch}, tiles_fold={args.tiles_fold}, "
          f"tiles_maxnreg={args.tiles_maxnreg}, token_major={args.token_major}, tiles_tm_loads={args.tiles_tm_loads}")
    cols = ["regs", "stack", "shared", "sass", *GROUPS]
    print(f"{'kernel':16s} {'elem/thr':>8s} " + " ".join(f"{c:>7s}" for c in cols))
    for name, fn, const, warps, tile in kernels:
        if args.only and name.split("/")[0] not in args.only and name not in args.only:
            continue
        cap = args.tiles_maxnreg if name.split("/")[0] in ("_fwd_summary", "_fwd_output") else 0
        r = inspect_kernel(fn, ptrs, const, warps, args.arch, cap, divisible)
        print(f"{name:16s} {tile // (32 * warps):8d} " + " ".join(f"{r[c]:7d}" for c in cols))
        if args.loops:
            for loop in r["loops"]:
                print(f"{'  loop':16s} {'':8s} {'':7s} {'':7s} {'':7s} " + " ".join(f"{loop[c]:7d}" for c in cols[3:]))


if __name__ == "__main__":
    main()
