"""Mamba's initialisation of the state-space parameters (A, D, dt bias), shared by SS2D and the SSD."""

from __future__ import annotations

import math

import torch
from torch import nn


def a_log_init(channels: int, d_state: int) -> nn.Parameter:
    """S4D-real initialisation: A[c, n] = -(n + 1), stored as log(-A)."""
    a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(channels, 1)
    return nn.Parameter(torch.log(a))


def dt_bias_init(channels: int, dt_min: float = 1e-3, dt_max: float = 1e-1) -> nn.Parameter:
    """Bias so that softplus(bias) is log-uniform in [dt_min, dt_max] (inverse softplus)."""
    dt = torch.exp(torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=1e-4)
    return nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
