"""Functional ops the model calls; backends are chosen beneath them."""

from .scan_orders import scan_orders
from .selective_scan import (
    BACKEND_ENV,
    BACKENDS,
    ScanBackendError,
    check_scan_shapes,
    resolve_backend,
    selective_scan,
)

__all__ = [
    "BACKENDS", "BACKEND_ENV", "ScanBackendError", "check_scan_shapes", "resolve_backend", "scan_orders",
    "selective_scan",
]
