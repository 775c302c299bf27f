"""``forward=auto``: time the Triton scan's variants on this GPU and shape once, keep the fastest.

Which variant wins depends on the card and on the map's shape (bench/RESULTS.md,
docs/kernels.md), so ``DIFFMF_TRITON_SCAN_CONFIG=forward=auto`` measures them at the first
call for each (device, shape, dtype, needs-gradients) and reuses the choice for the rest of
the process. A candidate that fails to compile or run is skipped with a warning. The first
call pays one compile per candidate (cached on disk by Triton afterwards) and a few timed
runs; FusionEngine's warm-up makes that call before it captures a CUDA graph. A call made
while a graph is being captured cannot time anything: it uses the first candidate.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Hashable, Sequence

import torch

log = logging.getLogger("diffmf_kernels.autotune")

# Overrides tried on top of the problem's default configuration, in this order (the tiles forward's opt-in
# variants, not yet timed on a GPU by the project, among them); the second set
# only when gradients are needed (it changes the tiles backward: the step axis in-thread, which
# cuts its shared-memory traffic 12x in the offline counts, for twice the saved states).
CANDIDATES = ("forward=tiles", "forward=tiles,tiles_fold=2,tiles_prefetch=1", "forward=tiles,tiles_fold=2",
              "forward=hybrid", "forward=hybrid,rows_kernel=tiles", "forward=hybrid,cols_kernel=rows", "forward=lines")
BACKWARD_CANDIDATES = ("forward=tiles,ts_bwd=16,bd_bwd=32,warps_bwd=1",
                       "forward=hybrid,ts_bwd=16,bd_bwd=32,warps_bwd=1")
REPEAT = 3

_chosen: dict[Hashable, object] = {}


def choose(key: Hashable, candidates: Sequence[object], run: Callable[[object], object],
           describe: Callable[[object], str] = str, repeat: int = REPEAT,
           clock: Callable[[], float] | None = None) -> object:
    """The candidate whose ``run`` is fastest (median of ``repeat`` after one untimed call), cached by key."""
    if key in _chosen:
        return _chosen[key]
    clock = clock or _default_clock
    timings: dict[int, float] = {}
    for i, cand in enumerate(candidates):
        try:
            run(cand)  # compiles
            samples = []
            for _ in range(repeat):
                t0 = clock()
                run(cand)
                samples.append(clock() - t0)
            timings[i] = statistics.median(samples)
        except Exception as exc:  # a variant that cannot run here must not take the others down
            log.warning("scan autotune: %s failed (%s: %s); skipped", describe(cand), type(exc).__name__,
                        str(exc).splitlines()[0][:160] if str(exc) else "")
    if not timings:
        raise RuntimeError("scan autotune: no candidate configuration ran")
    best = min(timings, key=timings.get)
    log.info("scan autotune for %s: %s (%s)", key, describe(candidates[best]),
             ", ".join(f"{describe(candidates[i])} {t * 1e3:.3f} ms" for i, t in timings.items()))
    _chosen[key] = candidates[best]
    return candidates[best]


def chosen(key: Hashable) -> object | None:
    """The candidate already chosen for ``key``, or None."""
    return _chosen.get(key)


def _default_clock() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def capturing() -> bool:
    """True while a CUDA graph is being captured on the current stream (nothing can be timed then)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def clear() -> None:
    """Forget every choice (tests; or after changing GPUs in one process)."""
    _chosen.clear()
