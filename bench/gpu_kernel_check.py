"""Triton scan vs the float64 reference on CUDA, printed as a table (no pytest needed).

The same cases and tolerances as tests/test_kernels_triton.py, plus every Triton tile
configuration given with --config (the ones bench/scan.py times), on a model-sized case.
Exit status 1 when any error is over tolerance or a run fails.

    python bench/gpu_kernel_check.py [--config ts=4,sub=128,bd=64,warps=2 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from diffmf_kernels import triton_scan  # noqa: E402
from scan_cases import GPU_CASES, LOW_PRECISION, TOLERANCE, Case, assert_within, check_triton  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", default=[], help="extra ScanConfig, e.g. ts=4,sub=128")
    ap.add_argument("--json", type=Path, help="also write the errors here")
    ap.add_argument("--device", default="cuda", help="cpu only under TRITON_INTERPRET=1 (a dry run)")
    ap.add_argument("--limit", type=int, help="run only the first LIMIT cases")
    ap.add_argument("--only-configs", action="store_true", help="skip the test cases; check --config ones only")
    args = ap.parse_args()
    reason = triton_scan.unavailable_reason()
    if reason or (args.device == "cuda" and not torch.cuda.is_available()):
        raise SystemExit(f"Triton scan cannot run here: {reason or 'no CUDA device'}")
    runs = [] if args.only_configs else [(str(c), torch.float32, c, None) for c in GPU_CASES]
    runs += [] if args.only_configs else [(str(c), dt, c, None) for dt, c in LOW_PRECISION]
    model_case = Case(1, 4, 64, 16, 48, 80, "grid")
    runs.append((f"{model_case} [default config]", torch.bfloat16, model_case, None))
    for spec in args.config:
        cfg = triton_scan.ScanConfig.parse(spec)
        runs.append((f"{model_case} [{spec}]", torch.bfloat16, model_case, cfg))
    runs = runs[: args.limit]
    failures, results = 0, []
    print(f"{'case':58s} {'dtype':9s} {'s':>5s}  worst error (of tolerance)  status")
    for name, dtype, case, cfg in runs:
        t0 = time.perf_counter()
        try:
            errors = check_triton(case, dtype, args.device, cfg)
            worst = max(errors, key=errors.get)
            try:
                assert_within(errors, dtype)
                status = "ok"
            except AssertionError:
                status = "OVER TOLERANCE"
                failures += 1
            tol = TOLERANCE[dtype][0 if worst == "y" else 1]
            detail = f"{worst} {errors[worst]:.1e} ({errors[worst] / tol:.0%})"
        except Exception as exc:  # report and go on with the other cases
            errors, status, detail = {}, f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}", "-"
            failures += 1
        secs = time.perf_counter() - t0
        print(f"{name:58s} {str(dtype).replace('torch.', ''):9s} {secs:5.1f}  {detail:27s} {status}", flush=True)
        results.append({"case": name, "dtype": str(dtype), "errors": errors, "status": status, "seconds": secs})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"{len(runs) - failures}/{len(runs)} within tolerance")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
