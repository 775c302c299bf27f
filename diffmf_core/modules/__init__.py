"""Building blocks the DIFF-MF network composes (VMamba's VSS block, the cross-modal SSD)."""

from .ssd import CrossModalSSD
from .vss import SS2D, VSSBlock, VSSBlocks

__all__ = ["SS2D", "CrossModalSSD", "VSSBlock", "VSSBlocks"]
