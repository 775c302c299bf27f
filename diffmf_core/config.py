"""DIFF-MF's knobs in one dataclass, and the named presets.

The framework figure fixes the topology; everything it leaves open is a field here,
with the default we chose and why.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DiffMFConfig:
    # --- widths and depth -------------------------------------------------------
    dim: int = 32
    """Feature channels C of every state-space stage."""
    stem_dim: int = 8
    """Channels of the full-resolution shallow features (kept for the decoder's detail path)."""
    stem_stride: int = 4
    """Downsampling of the shallow encoder before any scan (1, 2 or 4). The scans dominate
    the cost, so the real-time preset scans at 1/4 resolution and restores detail from the
    full-resolution stem in the decoder."""
    ddfe_repeats: int = 1
    """N in the figure: how many Diff-Driven Feature Extraction stages are stacked."""
    vss_depth: int = 1
    """VSS blocks per "VSS Blocks" box (self paths and shared path)."""
    sem_levels: int = 3
    """Spatial-Exchange levels (high, middle, low); each next level halves the resolution."""
    # --- VSS / SS2D (VMamba facts) ---------------------------------------------
    d_state: int = 8
    """SSM state size N. VMamba uses 16; 8 halves the scan cost with little loss at this width."""
    ssm_ratio: float = 1.0
    """Inner width of SS2D relative to C (VMamba: 2.0)."""
    dt_rank: int = 0
    """Rank of the delta projection; 0 means ceil(C / 16) as in Mamba."""
    d_conv: int = 3
    """Depthwise conv kernel in SS2D."""
    mlp_ratio: float = 0.0
    """Hidden width of the feed-forward after each SS2D (0 disables it, VMamba v2 uses 4)."""
    # --- Channel-Exchange Module -----------------------------------------------
    ce_d_state: int = 8
    """State size of the cross-modal SSD."""
    ce_heads: int = 2
    """SSD heads (scalar A and dt per head, Mamba-2 style); must divide C * ssm_ratio."""
    ce_bidirectional: bool = True
    """Scan the token sequence forwards and backwards (the figure shows no direction;
    one direction leaves the first pixels blind to the rest of the image)."""
    ce_reduction: int = 4
    """Bottleneck of the Projection that produces the channel weights omega."""
    # --- Output -----------------------------------------------------------------
    output_head: str = "blend"
    """'blend': the decoder predicts per-pixel weights of the two sources plus a bounded
    detail residual (fused = w*ir + (1-w)*vi + r, clamped to [0, 1]); 'direct': a sigmoid
    of one decoded channel. 'blend' trains in minutes instead of hours."""
    residual_scale: float = 0.5
    """Bound of the detail residual in the 'blend' head (|r| <= residual_scale)."""
    # --- Execution ----------------------------------------------------------------
    scan_backend: str | None = None
    """Force a selective-scan backend ('reference', 'cpu', 'triton', 'mamba'); None = automatic."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes carried with a checkpoint (never read by the network)."""

    @property
    def stride(self) -> int:
        """Input sizes are padded to a multiple of this."""
        return self.stem_stride * 2 ** (self.sem_levels - 1)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffMFConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DIFF-MF config field(s): {', '.join(unknown)}")
        return cls(**data)

    def __post_init__(self) -> None:
        if self.stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {self.stem_stride}")
        inner = int(self.dim * self.ssm_ratio)
        if inner % self.ce_heads:
            raise ValueError(f"ce_heads={self.ce_heads} must divide dim*ssm_ratio={inner}")
        if self.output_head not in ("blend", "direct"):
            raise ValueError(f"output_head must be 'blend' or 'direct', got {self.output_head!r}")
        if self.sem_levels < 1 or self.ddfe_repeats < 1 or self.vss_depth < 1:
            raise ValueError("sem_levels, ddfe_repeats and vss_depth must be >= 1")


PRESETS: dict[str, DiffMFConfig] = {
    # Real time: scans at 1/4 resolution, one DDFE stage; see bench/RESULTS.md for its cost.
    "tiny": DiffMFConfig(),
    # Paper scale: full-resolution scans, VMamba widths, two DDFE stages.
    "base": DiffMFConfig(dim=64, stem_dim=32, stem_stride=1, ddfe_repeats=2, vss_depth=2, d_state=16,
                         ssm_ratio=2.0, mlp_ratio=2.0, ce_d_state=16, ce_heads=4),
}


def get_config(preset: str = "tiny", **overrides: Any) -> DiffMFConfig:
    """The named preset with ``overrides`` applied (unknown names raise)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown DIFF-MF preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not overrides:
        return PRESETS[preset]
    return DiffMFConfig.from_dict({**dataclasses.asdict(PRESETS[preset]), **overrides})
