"""Fast selective-scan kernels (CPU native, Triton) behind diffmf_core.ops.selective_scan."""
