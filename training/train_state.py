"""The checkpoint set of one iteration, written so that a killed run can always resume, without pickle.

    <models>/<iter>_G.safetensors       generator weights + model config   (diffmf_core.save_checkpoint)
    <models>/<iter>_E.safetensors       EMA weights + model config         (only when E_decay > 0)
    <models>/<iter>_state.safetensors   every tensor of the optimiser, scaler and RNG states
    <models>/<iter>_state.json          everything else (scheduler, counters, RNG), the files of the set

Each file is written to a temp file and renamed into place, and the JSON comes last: a set is
*complete* when its JSON exists and every file it lists is there. ``latest_complete`` finds the
newest such set; a run killed while writing leaves an older complete set to resume from.
The JSON stores non-tensor state with small tags ({"__tensor__": key}, {"__tuple__": [...]},
{"__dict__": [[key, value], ...]} for non-string keys), so nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

STATE_FORMAT = "diffmf-train-state-1"
_STATE_JSON = re.compile(r"^(\d+)_state\.json$")


class ResumeError(ValueError):
    """A checkpoint set that cannot be resumed from; the message names the file and the problem."""


# ----------------------------------------------------------------------------- tagged JSON


def encode(obj: Any, tensors: dict[str, torch.Tensor], key: str = "s") -> Any:
    """JSON-able form of a state tree; tensors (and numpy arrays) move into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        tensors[key] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind in "ui" else obj.copy())
        return {"__ndarray__": key, "dtype": obj.dtype.str}
    if isinstance(obj, dict):
        items = [(k, encode(v, tensors, f"{key}.{k}")) for k, v in obj.items()]
        if all(isinstance(k, str) and not k.startswith("__") for k, _ in items):
            return dict(items)
        return {"__dict__": [[k, v] for k, v in items]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in a training state")


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``encode``."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(np.dtype(obj["dtype"]))
        if "__tuple__" in obj:
            return tuple(decode(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {k: decode(v, tensors) for k, v in obj["__dict__"]}
        return {k: decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    return obj


# ----------------------------------------------------------------------------- atomic files


def _atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, data: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)

    return _atomic_write(path, write)


def write_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    return _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": STATE_FORMAT}))


# ----------------------------------------------------------------------------- checkpoint sets


def weights_path(models_dir: str | os.PathLike, iteration: int, net: str) -> Path:
    """``<models>/<iter>_G.safetensors`` or ``_E``."""
    return Path(models_dir) / f"{iteration}_{net}.safetensors"


def state_paths(models_dir: str | os.PathLike, iteration: int) -> tuple[Path, Path]:
    base = Path(models_dir)
    return base / f"{iteration}_state.safetensors", base / f"{iteration}_state.json"


def save_state(models_dir: str | os.PathLike, iteration: int, state: dict[str, Any],
               weight_files: list[Path]) -> Path:
    """Write the state of ``iteration`` (after its weight files, which the JSON lists); returns the JSON path."""
    tensors: dict[str, torch.Tensor] = {}
    tree = encode(state, tensors)
    tensor_path, json_path = state_paths(models_dir, iteration)
    write_tensors_atomic(tensor_path, tensors)
    files = [p.name for p in weight_files] + [tensor_path.name]
    return write_json_atomic(json_path, {"format": STATE_FORMAT, "iteration": iteration, "files": files,
                                         "state": tree})


def _is_complete(json_path: Path) -> bool:
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("format") == STATE_FORMAT and all((json_path.parent / f).is_file() for f in meta["files"])


def complete_iterations(models_dir: str | os.PathLike) -> list[int]:
    """Iterations with a complete checkpoint set, oldest first."""
    folder = Path(models_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STATE_JSON.match(p.name)
        if m and _is_complete(p):
            found.append(int(m.group(1)))
    return sorted(found)


def latest_complete(models_dir: str | os.PathLike) -> int | None:
    done = complete_iterations(models_dir)
    return done[-1] if done else None


def load_state(models_dir: str | os.PathLike, iteration: int) -> dict[str, Any]:
    """The state saved at ``iteration`` (raises ResumeError when the set is missing or incomplete)."""
    tensor_path, json_path = state_paths(models_dir, iteration)
    if not json_path.is_file():
        raise ResumeError(f"{json_path}: no training state for iteration {iteration}")
    if not _is_complete(json_path):
        raise ResumeError(f"{json_path}: checkpoint set of iteration {iteration} is incomplete")
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ResumeError(f"{tensor_path}: unreadable ({exc})") from exc
    try:
        return decode(meta["state"], tensors)
    except KeyError as exc:
        raise ResumeError(f"{tensor_path}: lacks tensor {exc}") from exc
