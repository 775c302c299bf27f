"""Token orders of the 2-D cross scan, as index permutations for ``selective_scan(orders=...)``."""

from __future__ import annotations

from functools import lru_cache

import torch

# VMamba's four directions: row-major, column-major, and both reversed.
DIRECTIONS = ("row", "col", "row_rev", "col_rev")


@lru_cache(maxsize=64)
def _orders_cpu(h: int, w: int, directions: tuple[str, ...]) -> torch.Tensor:
    """Called by scan_orders with inference mode off (see there)."""
    raster = torch.arange(h * w, dtype=torch.int64)
    col_major = raster.view(h, w).t().reshape(-1)
    table = {"row": raster, "col": col_major, "row_rev": raster.flip(0), "col_rev": col_major.flip(0)}
    return torch.stack([table[d] for d in directions])


_device_cache: dict[tuple[int, int, tuple[str, ...], str], torch.Tensor] = {}


def scan_orders(h: int, w: int, device: torch.device | str = "cpu",
                directions: tuple[str, ...] = DIRECTIONS) -> torch.Tensor:
    """(K, h*w) int64 permutations: direction k visits raster token ``orders[k, t]`` at step t."""
    dev = torch.device(device)
    key = (h, w, tuple(directions), str(dev))
    cached = _device_cache.get(key)
    if cached is None:
        # Never an inference tensor, even when first asked for under inference_mode (a node or an
        # evaluation before training): autograd could not save it for a later backward pass.
        with torch.inference_mode(False):
            cached = _orders_cpu(h, w, tuple(directions)).to(dev)
        if len(_device_cache) > 256:
            _device_cache.clear()
        _device_cache[key] = cached
    return cached
