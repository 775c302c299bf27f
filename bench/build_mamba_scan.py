"""Build mamba-ssm's CUDA selective scan (its csrc/selective_scan) as a standalone extension.

mamba-ssm ships as an sdist only; this JIT-builds just its scan kernels for one GPU
architecture with torch.utils.cpp_extension, so bench/scan.py can time them beside ours
(``--mamba-module BUILD_DIR``). Needs nvcc matching the CUDA version of torch.

    python bench/build_mamba_scan.py .gpu/mamba_ssm-2.3.2.post1 --build-dir .gpu/mamba_build [--arch 90]

The source argument is the unpacked sdist (or its csrc/selective_scan folder).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

SOURCES = ["selective_scan.cpp", "selective_scan_fwd_fp32.cu", "selective_scan_fwd_fp16.cu",
           "selective_scan_fwd_bf16.cu", "selective_scan_bwd_fp32_real.cu", "selective_scan_bwd_fp32_complex.cu",
           "selective_scan_bwd_fp16_real.cu", "selective_scan_bwd_fp16_complex.cu",
           "selective_scan_bwd_bf16_real.cu", "selective_scan_bwd_bf16_complex.cu"]
# The flags mamba-ssm's setup.py passes to nvcc (minus -lineinfo / ptxas -v).
NVCC_FLAGS = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
              "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math"]
MODULE = "selective_scan_cuda"


def find_sources(root: Path) -> Path:
    for cand in (root, root / "csrc" / "selective_scan"):
        if (cand / "selective_scan.cpp").is_file():
            return cand
    raise SystemExit(f"no selective_scan.cpp under {root} or {root / 'csrc' / 'selective_scan'}")


def build(src: Path, build_dir: Path, arch: int, jobs: int):
    """Compile (or reuse) the extension in build_dir and return the loaded module."""
    os.environ.setdefault("MAX_JOBS", str(jobs))
    os.environ["TORCH_CUDA_ARCH_LIST"] = f"{arch // 10}.{arch % 10}"
    from torch.utils.cpp_extension import load

    build_dir.mkdir(parents=True, exist_ok=True)
    missing = [s for s in SOURCES if not (src / s).is_file()]
    if missing:
        raise SystemExit(f"{src} lacks {', '.join(missing)}")
    return load(name=MODULE, sources=[str(src / s) for s in SOURCES], extra_include_paths=[str(src)],
                extra_cflags=["-O3", "-std=c++17"],
                extra_cuda_cflags=[*NVCC_FLAGS, "-gencode", f"arch=compute_{arch},code=sm_{arch}"],
                build_directory=str(build_dir), verbose=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="unpacked mamba-ssm sdist, or its csrc/selective_scan")
    ap.add_argument("--build-dir", type=Path, default=Path(".gpu/mamba_build"))
    ap.add_argument("--arch", type=int, default=90, help="compute capability without the dot (90 = H100)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    args = ap.parse_args()
    t0 = time.perf_counter()
    mod = build(find_sources(args.source), args.build_dir, args.arch, args.jobs)
    print(f"built {mod.__file__} in {time.perf_counter() - t0:.0f} s "
          f"(use: python bench/scan.py --mamba-module {args.build_dir})", file=sys.stderr)


if __name__ == "__main__":
    main()
