"""Functional ops the model calls; backends are chosen beneath them."""

from .scan_layout import LAYOUT_ENV, as_token_major, is_token_major, model_memory_format, scan_token_major
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
    "BACKENDS", "BACKEND_ENV", "LAYOUT_ENV", "ScanBackendError", "as_token_major", "check_scan_shapes",
    "is_token_major", "model_memory_format", "resolve_backend", "scan_orders", "scan_token_major",
    "selective_scan",
]
