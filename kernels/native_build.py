"""Compile a plain C++ source into a shared library once per machine, then reuse it.

The CPU scan has no torch headers (parsing ``torch/extension.h`` alone takes ~35 s on a
2-core box; this file takes a few seconds), so it is built with the system C++ compiler
and loaded with ctypes. Builds are cached under ``$DIFFMF_KERNELS_CACHE`` (default
``~/.cache/diffmf_kernels``), keyed by source, compiler, flags and CPU features, and
written through a temporary file + rename so concurrent first uses are safe.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger("diffmf_kernels.build")

CACHE_ENV = "DIFFMF_KERNELS_CACHE"
CXX_ENV = "DIFFMF_KERNELS_CXX"
BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd")
# Tried in order; the first set the compiler accepts wins (OpenMP / -march=native may be missing).
OPTIONAL_FLAG_SETS = (("-march=native", "-fopenmp"), ("-fopenmp",), ("-march=native",), ())


class BuildError(RuntimeError):
    """The native library could not be compiled on this machine."""


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "diffmf_kernels"


def find_compiler() -> str | None:
    """$DIFFMF_KERNELS_CXX if set (and nothing else), else $CXX, else c++ / g++ / clang++ on PATH."""
    explicit = os.environ.get(CXX_ENV)
    if explicit:
        return shutil.which(explicit)
    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        path = shutil.which(cand) if cand else None
        if path:
            return path
    return None


def _cpu_signature() -> str:
    """What -march=native depends on, so a shared home directory never loads a foreign build."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.strip()
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"C++ compiler {cxx} does not run: {exc}") from exc


def build_library(source: Path, name: str) -> tuple[Path, bool]:
    """Return (path to the compiled library, whether it uses OpenMP); compile on first use."""
    cxx = find_compiler()
    if cxx is None:
        raise BuildError("no C++ compiler found (set $CXX or $DIFFMF_KERNELS_CXX)")
    version = _compiler_version(cxx)
    text = source.read_bytes()
    out_dir = cache_dir()
    errors = []
    for extra in OPTIONAL_FLAG_SETS:
        flags = BASE_FLAGS + extra
        key = hashlib.sha256(b"\0".join([text, version.encode(), " ".join(flags).encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        lib = out_dir / f"{name}_{key}.so"
        if lib.exists():
            return lib, "-fopenmp" in extra
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BuildError(f"cannot create kernel cache {out_dir}: {exc}") from exc
        fd, tmp = tempfile.mkstemp(prefix=f".{name}_", suffix=".so", dir=out_dir)
        os.close(fd)
        cmd = [cxx, *flags, "-o", tmp, str(source)]
        log.info("building %s with %s (first use on this machine)", name, " ".join(cmd))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, lib)
            log.info("built %s in %.1f s -> %s", name, time.perf_counter() - t0, lib)
            return lib, "-fopenmp" in extra
        os.unlink(tmp)
        errors.append(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    raise BuildError(f"{cxx} failed to compile {source.name}: {errors[-1]}")
