"""mamba-ssm's CUDA selective scan as a backend: ``selective_scan(..., backend="mamba")``.

Calls the compiled extension module ``selective_scan_cuda`` directly (its ``fwd``/``bwd``),
not the ``mamba_ssm`` Python package: the module is what a mamba-ssm install puts on the
path, and it is also what ``bench/build_mamba_scan.py`` builds from the sdist's
``csrc/selective_scan`` in about two minutes when no wheel matches. So the backend works
with either, and never needs mamba-ssm's other dependencies.

Where the module comes from: ``$DIFFMF_MAMBA_SCAN_MODULE`` (a ``selective_scan_cuda*.so``
file, or the build folder holding one) if set, else ``import selective_scan_cuda``.

mamba-ssm's kernel cannot read a token order by index, so with ``orders`` the inputs are
copied into its layout (one copy each of u, delta, B, C) and y back into raster order;
autograd goes through those copies. The four grid directions of ``scan_orders`` are copied
by triton_orders (one coalesced pass each, measured much faster than torch's gather/scatter),
other permutations by torch's gather. It needs u, delta, B and C in one dtype (fp32, fp16
or bf16): mixed inputs are cast to delta's dtype.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import torch

from diffmf_core.ops import check_scan_shapes
from diffmf_core.ops.scan_reference import gather_orders, scatter_orders

from . import triton_scan

MODULE_ENV = "DIFFMF_MAMBA_SCAN_MODULE"
MODULE_NAME = "selective_scan_cuda"
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def load_module(where: str | os.PathLike | None = None) -> ModuleType:
    """The compiled ``selective_scan_cuda`` module: from ``where`` (a .so or a folder with one), else import it.

    Raises ImportError saying what was looked for.
    """
    if where is None:
        return importlib.import_module(MODULE_NAME)
    path = Path(where)
    if path.is_dir():
        libs = sorted(path.glob(f"{MODULE_NAME}*.so"))
        if not libs:
            raise ImportError(f"no {MODULE_NAME}*.so in {path}")
        path = libs[0]
    if not path.is_file():
        raise ImportError(f"{path} does not exist")
    loader = importlib.machinery.ExtensionFileLoader(MODULE_NAME, str(path))
    spec = importlib.util.spec_from_loader(MODULE_NAME, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@functools.cache
def _module() -> tuple[ModuleType | None, str | None]:
    where = os.environ.get(MODULE_ENV) or None
    try:
        return load_module(where), None
    except Exception as exc:  # ImportError, or the .so failing to link against this torch
        source = f"${MODULE_ENV}={where}" if where else f"import {MODULE_NAME}"
        return None, f"mamba-ssm's compiled scan does not load ({source}: {exc})"


def unavailable_reason() -> str | None:
    """None when the module loads and a CUDA device is present."""
    if not torch.cuda.is_available():
        return "needs a CUDA device (torch.cuda.is_available() is False)"
    return _module()[1]


class _MambaScan(torch.autograd.Function):
    """Its fwd/bwd on the VMamba layout; ``ops`` is the module (an argument so tests can pass one)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, ops):
        out, x = ops.fwd(u, delta, A, B, C, D, None, delta_bias, delta_softplus)[:2]
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, x)
        ctx.softplus, ctx.ops = delta_softplus, ops
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, delta_bias, x = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, dbias = ctx.ops.bwd(u, delta, A, B, C, D, None, delta_bias, dout.contiguous(),
                                                        x, None, None, ctx.softplus, False)[:7]
        return (du, ddelta, dA, dB, dC, dD if D is not None else None,
                dbias if delta_bias is not None else None, None, None)


@functools.cache
def _triton_copies() -> ModuleType | None:
    """triton_orders where Triton runs (a CUDA device, or its interpreter), else None."""
    if triton_scan.unavailable_reason() is not None:
        return None
    from . import triton_orders

    return triton_orders


def _grid_copies(orders: torch.Tensor, device: torch.device):
    """(triton_orders, the order) when ``orders`` are grid scans Triton can copy, else None (torch's gather)."""
    copies = _triton_copies()
    if copies is None or (device.type != "cuda" and not triton_scan.interpreting()):
        return None
    order = triton_scan.describe_orders(orders, device)
    return (copies, order) if order.mode == triton_scan.MODE_GRID else None


def scan_with(ops: ModuleType, u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, orders=None):
    """The backend on a given module (``selective_scan`` passes the loaded one)."""
    check_scan_shapes(u, delta, A, B, C, D, delta_bias, orders, who="mamba scan")
    dtype = delta.dtype if delta.dtype in _FLOATS else torch.float32
    u, delta, B, C = (t.to(dtype) for t in (u, delta, B, C))
    grid = _grid_copies(orders, u.device) if orders is not None else None
    if grid is not None:
        u, delta, B, C = grid[0].gather(u, delta, B, C, grid[1])
    elif orders is not None:
        u, delta, B, C = gather_orders(u, delta, B, C, orders)
    params = [None if t is None else t.float().contiguous() for t in (A, D, delta_bias)]
    y = _MambaScan.apply(u.contiguous(), delta.contiguous(), params[0], B.contiguous(), C.contiguous(),
                         params[1], params[2], bool(delta_softplus), ops)
    if grid is not None:
        return grid[0].scatter(y, grid[1], B.shape[1])
    return scatter_orders(y, orders) if orders is not None else y


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                   delta_softplus: bool = True, orders: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as :func:`diffmf_core.ops.scan_reference.selective_scan_reference`; CUDA tensors."""
    ops, reason = _module()
    if ops is None:
        raise RuntimeError(reason)
    return scan_with(ops, u, delta, A, B, C, D, delta_bias, delta_softplus, orders).to(u.dtype)
