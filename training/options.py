"""Training options: the seed's KAIR-style JSON, checked against one schema, with command-line overrides.

The file may carry ``//`` comments as KAIR option files do. Every key is known in advance:
an unknown key (in the file or in ``--set``) is an error that names it, so a typo never
silently trains with a default. ``netG`` holds ``preset`` plus any ``DiffMFConfig`` field.

    opt = load_options("options/DIFFMF/DIFFMF.json", ["train.max_iter=200", "netG.dim=16"])
    opt["train"]["max_iter"]  # -> 200
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffmf_core import DiffMFConfig, get_config

DEFAULT_OPTIONS = Path(__file__).resolve().parent / "options" / "DIFFMF" / "DIFFMF.json"
AMP_MODES = ("off", "bf16", "fp16", "auto")
SSIM_WEIGHTINGS = ("normalised", "softmax")

# The schema is the defaults: every key a file may hold, with the value it gets when absent.
DEFAULTS: dict[str, Any] = {
    "task": "DIFFMF",
    "dist": False,
    "path": {
        "root": "Model",
        "pretrained_netG": None,
        "pretrained_netE": None,
    },
    "datasets": {
        "train": {
            "name": "train_dataset",
            "dataroot": ["dataset/train/M3FD"],
            "A_dir": "ir",
            "B_dir": "vi",
            "include": [],
            "exclude": [],
            "H_size": 128,
            "batch_size": 12,
            "num_workers": 8,
            "dataloader_shuffle": True,
            "cache": True,
        },
    },
    "netG": {"preset": "tiny"},
    "train": {
        "manual_seed": 42,
        "G_lossfn_weights": {"intensity": 20.0, "gradient": 20.0, "ssim": 10.0},
        "G_lossfn_ssim_weighting": "normalised",
        "G_optimizer_type": "adam",
        "G_optimizer_lr": 2e-4,
        "G_optimizer_betas": [0.9, 0.999],
        "G_optimizer_wd": 0.0,
        "G_optimizer_clipgrad": 1.0,
        "G_scheduler_type": "MultiStepLR",
        "G_scheduler_milestones": [5000, 7500, 9000],
        "G_scheduler_gamma": 0.5,
        "E_decay": 0.999,
        "checkpoint_save": 1000,
        "checkpoint_print": 100,
        "checkpoint_image": 1000,
        "max_iter": 10000,
        "max_minutes": None,
        "amp": "bf16",
        "tensorboard": True,
    },
}

# Keys whose default is None (or that take more than one type) and what they accept.
NULLABLE: dict[str, tuple[type, ...]] = {
    "path.pretrained_netG": (str,),
    "path.pretrained_netE": (str,),
    "train.G_optimizer_clipgrad": (int, float),
    "train.max_minutes": (int, float),
}


class OptionsError(ValueError):
    """An options file or override that cannot be used; the message names the key and the problem."""


# ----------------------------------------------------------------------------- reading


def strip_comments(text: str) -> str:
    """Drop ``//`` comments outside JSON strings (KAIR option files use them)."""
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        ch = text[i]
        if in_str:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
            out.append(ch)
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def read_options_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise OptionsError(f"options file {path} does not exist")
    try:
        data = json.loads(strip_comments(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise OptionsError(f"options file {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise OptionsError(f"options file {path}: the top level must be a JSON object")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.max_iter=200' -> (['train', 'max_iter'], 200). Values are JSON, else plain strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise OptionsError(f"--set {text!r}: expected dotted.key=value")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return [part for part in key.strip().split(".")], value


def apply_override(opt: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    node = opt
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise OptionsError(f"--set {'.'.join(keys)}: '{'.'.join(keys[:depth + 1])}' is not a section")
        node = child
    node[keys[-1]] = value


# ----------------------------------------------------------------------------- checking


def _merge(defaults: dict[str, Any], given: dict[str, Any], prefix: str, unknown: list[str]) -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for key, value in given.items():
        dotted = f"{prefix}{key}"
        if key not in defaults:
            unknown.append(dotted)
        elif isinstance(defaults[key], dict) and dotted != "netG":
            if not isinstance(value, dict):
                raise OptionsError(f"option '{dotted}' must be a JSON object, got {type(value).__name__}")
            merged[key] = _merge(defaults[key], value, dotted + ".", unknown)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_type(dotted: str, default: Any, value: Any) -> None:
    if dotted in NULLABLE:
        if value is not None and not (isinstance(value, NULLABLE[dotted]) and not isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in NULLABLE[dotted])
            raise OptionsError(f"option '{dotted}' must be {names} or null, got {value!r}")
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise OptionsError(f"option '{dotted}' must be {type(default).__name__}, got {value!r}")


def _check_types(defaults: dict[str, Any], opt: dict[str, Any], prefix: str = "") -> None:
    for key, default in defaults.items():
        dotted = f"{prefix}{key}"
        if dotted == "netG":
            continue
        if isinstance(default, dict):
            _check_types(default, opt[key], dotted + ".")
        else:
            _check_type(dotted, default, opt[key])


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise OptionsError(message)


def _check_values(opt: dict[str, Any]) -> None:
    data, train = opt["datasets"]["train"], opt["train"]
    _require(len(data["dataroot"]) > 0, "option 'datasets.train.dataroot' lists no folder")
    _require(all(isinstance(p, str) and p for p in data["dataroot"]),
             "option 'datasets.train.dataroot' must be a list of folder paths")
    for key in ("include", "exclude"):
        _require(all(isinstance(p, str) and p for p in data[key]),
                 f"option 'datasets.train.{key}' must be a list of glob patterns (strings)")
    for key in ("H_size", "batch_size"):
        _require(data[key] > 0, f"option 'datasets.train.{key}' must be positive, got {data[key]}")
    _require(data["num_workers"] >= 0, "option 'datasets.train.num_workers' must be >= 0")
    for key in ("max_iter", "checkpoint_save", "checkpoint_print", "checkpoint_image"):
        _require(train[key] > 0, f"option 'train.{key}' must be positive, got {train[key]}")
    _require(train["G_optimizer_lr"] > 0, "option 'train.G_optimizer_lr' must be positive")
    _require(train["G_optimizer_type"].lower() == "adam",
             f"option 'train.G_optimizer_type': only 'adam' is supported, got {train['G_optimizer_type']!r}")
    _require(train["G_scheduler_type"] == "MultiStepLR",
             f"option 'train.G_scheduler_type': only 'MultiStepLR' is supported, got {train['G_scheduler_type']!r}")
    betas = train["G_optimizer_betas"]
    _require(len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
             f"option 'train.G_optimizer_betas' must be two numbers in [0, 1), got {betas!r}")
    miles = train["G_scheduler_milestones"]
    _require(all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in miles)
             and miles == sorted(miles), f"option 'train.G_scheduler_milestones' must be increasing "
             f"positive integers, got {miles!r}")
    _require(0 < train["G_scheduler_gamma"] <= 1, "option 'train.G_scheduler_gamma' must be in (0, 1]")
    _require(0 <= train["E_decay"] < 1, f"option 'train.E_decay' must be in [0, 1) (0 disables EMA), "
             f"got {train['E_decay']}")
    clip = train["G_optimizer_clipgrad"]
    _require(clip is None or clip > 0, "option 'train.G_optimizer_clipgrad' must be positive or null")
    minutes = train["max_minutes"]
    _require(minutes is None or minutes > 0, "option 'train.max_minutes' must be positive or null")
    _require(train["amp"] in AMP_MODES, f"option 'train.amp' must be one of {', '.join(AMP_MODES)}, "
             f"got {train['amp']!r}")
    _require(train["G_lossfn_ssim_weighting"] in SSIM_WEIGHTINGS,
             f"option 'train.G_lossfn_ssim_weighting' must be one of {', '.join(SSIM_WEIGHTINGS)}")
    weights = train["G_lossfn_weights"]
    _require(all(v >= 0 for v in weights.values()) and any(v > 0 for v in weights.values()),
             "option 'train.G_lossfn_weights': weights must be >= 0 and not all 0")


def model_config(opt: dict[str, Any]) -> DiffMFConfig:
    """The DiffMFConfig that ``netG`` describes (preset plus overrides)."""
    net = dict(opt["netG"])
    preset = net.pop("preset", "tiny")
    return get_config(preset, **net)


def _check_netg(net: Any) -> None:
    if not isinstance(net, dict):
        raise OptionsError("option 'netG' must be a JSON object")
    fields = {f.name for f in dataclasses.fields(DiffMFConfig)}
    unknown = sorted(set(net) - fields - {"preset"})
    if unknown:
        raise OptionsError(f"unknown option(s): {', '.join('netG.' + k for k in unknown)} "
                           f"(netG takes 'preset' and DiffMFConfig fields: {', '.join(sorted(fields))})")
    try:
        model_config({"netG": net})
    except (ValueError, TypeError) as exc:
        raise OptionsError(f"option 'netG': {exc}") from exc


def normalise(given: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, everything checked; raises OptionsError naming the first problem."""
    given = copy.deepcopy(given)
    data = given.get("datasets", {}).get("train") if isinstance(given.get("datasets"), dict) else None
    if isinstance(data, dict) and isinstance(data.get("dataroot"), str):
        data["dataroot"] = [data["dataroot"]]  # the seed's single-folder form
    unknown: list[str] = []
    opt = _merge(DEFAULTS, given, "", unknown)
    if unknown:
        raise OptionsError(f"unknown option(s): {', '.join(unknown)}")
    if isinstance(opt["train"]["amp"], bool):  # true/false as in other KAIR descendants
        opt["train"]["amp"] = "auto" if opt["train"]["amp"] else "off"
    if opt["train"]["amp"] is None:
        opt["train"]["amp"] = "off"
    _check_types(DEFAULTS, opt)
    _check_netg(opt["netG"])
    _check_values(opt)
    return opt


def load_options(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read ``path`` (default: the shipped DIFFMF.json), apply ``--set`` overrides, check, fill defaults."""
    given = read_options_file(path or DEFAULT_OPTIONS)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(given, keys, value)
    opt = normalise(given)
    opt["opt_path"] = str(path or DEFAULT_OPTIONS)
    return opt


def dump_options(opt: dict[str, Any]) -> str:
    """The options as they were used (the JSON a rerun can be started from)."""
    return json.dumps({k: v for k, v in opt.items() if k != "opt_path"}, indent=2) + "\n"
