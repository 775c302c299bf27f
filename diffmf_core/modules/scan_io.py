"""How a channels-last block hands a map to the scan (u) and takes the directions' outputs back (y)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import is_token_major
from ..ops.reduce import sum_slices


def conv_tokens(conv: nn.Conv2d, x: torch.Tensor, token_major: bool) -> torch.Tensor:
    """(B, H, W, C) -> u (B, C, H*W): token-major memory (channels-last conv) or contiguous.

    Token-major also suits the conv: on the 2-core CPU box a 64-channel depthwise 3x3 at 160x128 took
    2.4 ms channels-last against 5.5-8.3 ms on the contiguous NCHW copy."""
    fmt = torch.channels_last if token_major else torch.contiguous_format
    return F.silu(conv(x.permute(0, 3, 1, 2).contiguous(memory_format=fmt))).flatten(2)


def sum_directions(y: torch.Tensor, k: int) -> torch.Tensor:
    """y (B, K*C, L) -> (B, L, C), the K directions summed; contiguous when y is token-major.

    The reduction is written along y's memory: on token-major y, ``y.view(B, K, C, L).sum(1)`` took 18 ms
    against 0.9 for ``.sum`` along memory at 160x128 x 32 channels (2-core CPU box), and sum_slices less."""
    b, kc, L = y.shape
    if is_token_major(y):
        return sum_slices(y.transpose(1, 2).view(b, L, k, kc // k), 2)
    return sum_slices(y.view(b, k, kc // k, L), 1).transpose(1, 2)
