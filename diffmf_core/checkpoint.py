"""Checkpoints: safetensors weights with the full model config in the file's metadata.

A checkpoint is untrusted input: nothing is ever unpickled. Legacy ``.pth``/``.pt`` files are
read only through ``torch.load(weights_only=True)``, and then need a config (preset or JSON).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import DiffMFConfig, get_config
from .model import DiffMF

CONFIG_KEY = "diffmf_config"
FORMAT_KEY = "format"
FORMAT = "diffmf-safetensors-1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot become a DIFF-MF model; the message names the file and the problem."""


def save_checkpoint(model: DiffMF | dict[str, torch.Tensor], path: str | os.PathLike,
                    config: DiffMFConfig | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write weights + config atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if isinstance(model, DiffMF):
        config = config or model.config
        state = model.state_dict()
    else:
        state = model
        if config is None:
            raise ValueError("save_checkpoint needs a config when given a bare state dict")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {FORMAT_KEY: FORMAT, CONFIG_KEY: config.to_json(), **(metadata or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint_config(path: str | os.PathLike) -> DiffMFConfig:
    """The config stored in a safetensors checkpoint (without loading the weights)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_short(exc)})") from exc
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{path}: no '{CONFIG_KEY}' in its metadata; not a DIFF-MF checkpoint "
                              "(pass preset=... to load bare weights)")
    try:
        return DiffMFConfig.from_dict(json.loads(meta[CONFIG_KEY]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: stored config is invalid ({_short(exc)})") from exc


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix in (".pth", ".pt", ".ckpt"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors of many kinds; weights_only refuses code
            raise CheckpointError(f"{path}: cannot read as a weights-only torch file ({_short(exc)})") from exc
        for key in ("params_ema", "params", "state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: holds no flat tensor state dict")
        return {k.removeprefix("module."): v for k, v in state.items()}
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_short(exc)})") from exc


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", preset: str | None = None,
               **overrides: Any) -> DiffMF:
    """Build the model a checkpoint describes and load its weights, checking every name and shape.

    ``preset``/``overrides`` give the config for files that carry none (legacy .pth).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if preset is not None:
        config = get_config(preset, **overrides)
    elif path.suffix in (".pth", ".pt", ".ckpt"):
        raise CheckpointError(f"{path}: a legacy torch file carries no config; pass preset=...")
    else:
        config = read_checkpoint_config(path)
    state = _read_state(path)
    model = DiffMF(config)
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise CheckpointError(f"{path}: missing tensor '{name}' (expected shape {tuple(tensor.shape)})")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: tensor '{name}' has shape {tuple(state[name].shape)}, "
                                  f"the config needs {tuple(tensor.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: unexpected tensor '{extra[0]}' ({len(extra)} not in the model)")
    model.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected})
    return model.to(device).eval()


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
