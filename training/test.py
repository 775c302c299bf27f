"""diffmf_test: fuse every pair of a test set with a trained checkpoint (the seed's test_DIFFMF.py flags).

    diffmf_test --model_path Model/DIFFMF/models --iter_number 10000 --dataset TNO --A_dir ir --B_dir vi
                [--root dataset/test] [--out results/DIFFMF_TNO]

Reads ``<root>/<dataset>/<A_dir>`` (infrared) and ``<B_dir>`` (visible), pairs them by file stem,
and writes ``<out>/<stem>.png``: gray, or RGB when the visible image is colour (the fused luma
with the visible chroma). Weights: ``<model_path>/<iter>_E.safetensors`` (the EMA), else ``_G``.
Fusion goes through the FusionEngine, the same path the ROS node uses.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from diffmf_core import CheckpointError, FusionEngine
from diffmf_core.images import ImageReadError, read_image, write_image

from .dataset import DatasetError, match_folder_pairs, select_pairs

log = logging.getLogger("diffmf_training.test")
_WEIGHTS = re.compile(r"^(\d+)_([EG])\.safetensors$")


class InputError(ValueError):
    """A bad test input; the message is one line naming the file or folder at fault."""


def pick_weights(model_path: str | Path, iter_number: int | None) -> tuple[Path, str]:
    """The checkpoint to test and a note on the choice (EMA preferred; newest iteration when none given)."""
    model_path = Path(model_path)
    if model_path.is_file():
        return model_path, f"weights {model_path}"
    if not model_path.is_dir():
        raise InputError(f"--model_path {model_path}: no such folder or file")
    found: dict[int, set[str]] = {}
    for p in model_path.iterdir():
        m = _WEIGHTS.match(p.name)
        if m:
            found.setdefault(int(m.group(1)), set()).add(m.group(2))
    if iter_number is None:
        if not found:
            raise InputError(f"--model_path {model_path}: holds no <iter>_E/_G.safetensors checkpoint")
        iter_number = max(found)
    nets = found.get(iter_number, set())
    if "E" in nets:
        return model_path / f"{iter_number}_E.safetensors", f"EMA weights of iteration {iter_number}"
    if "G" in nets:
        return (model_path / f"{iter_number}_G.safetensors",
                f"no {iter_number}_E.safetensors (EMA off), using the G weights of iteration {iter_number}")
    have = ", ".join(str(i) for i in sorted(found)[-5:]) or "none"
    raise InputError(f"--model_path {model_path}: no checkpoint of iteration {iter_number} (found: {have})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffmf_test", description="Fuse a test set with a trained DIFF-MF checkpoint.")
    p.add_argument("--model_path", "--model-path", dest="model_path", default="Model/DIFFMF/models",
                   help="folder of <iter>_E/_G.safetensors (or one .safetensors file)")
    p.add_argument("--iter_number", "--iter-number", dest="iter_number", type=int, default=None,
                   help="checkpoint iteration (default: the newest in --model_path)")
    p.add_argument("--dataset", required=True, help="test set name: the folder <root>/<dataset>")
    p.add_argument("--A_dir", default="ir", help="infrared sub-folder (default ir)")
    p.add_argument("--B_dir", default="vi", help="visible sub-folder (default vi)")
    p.add_argument("--root", default="dataset/test", help="folder holding the test sets (default dataset/test)")
    p.add_argument("--pairs", default=None, metavar="GLOBS",
                   help="fuse only the pairs whose stem or file name matches one of these comma-separated globs "
                        "(e.g. '*[02468]'); @FILE reads them one per line")
    p.add_argument("--out", default=None, help="output folder (default results/DIFFMF_<dataset>)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bf16/fp16 on CUDA, float32 on CPU), float32, bf16, fp16")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> str:
    """Fuse the set; returns the closing summary. Raises InputError (and friends) on bad input."""
    weights, note = pick_weights(args.model_path, args.iter_number)
    set_dir = Path(args.root) / args.dataset
    ir_dir, vi_dir = set_dir / args.A_dir, set_dir / args.B_dir
    for folder in (ir_dir, vi_dir):
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder (layout: <root>/<dataset>/<A_dir|B_dir>)")
    pairs, unpaired = match_folder_pairs(ir_dir, vi_dir)
    for line in unpaired:
        log.warning("skipped: %s", line)
    if not pairs:
        raise InputError(f"no pair in {ir_dir} and {vi_dir} (pairs share a file name)")
    if args.pairs:
        pairs = select_pairs(pairs, include=[t.strip() for t in args.pairs.split(",") if t.strip()],
                             source="--pairs")
    out = Path(args.out) if args.out else Path("results") / f"DIFFMF_{args.dataset}"
    log.info("%s", note)
    engine = FusionEngine(weights, device=args.device, dtype=args.dtype, cuda_graphs=False)
    times: list[float] = []
    start = time.perf_counter()
    for pair in tqdm(pairs, desc=f"fuse {args.dataset}", unit="pair", disable=args.no_progress):
        ir, vi = read_image(pair.ir), read_image(pair.vi)
        t = time.perf_counter()
        try:
            fused = engine.fuse(ir, vi)
        except ValueError as exc:
            raise InputError(f"pair '{pair.name}': {exc}") from exc
        times.append(time.perf_counter() - t)
        write_image(out / f"{pair.name}.png", fused)
    total = time.perf_counter() - start
    steady = times[1:] or times  # the first image pays for warm-up
    info = engine.info()
    return (f"diffmf_test: fused {len(pairs)} pairs of {args.dataset} in {total:.1f} s: "
            f"{1000 * sum(steady) / len(steady):.1f} ms per image (fusion only"
            f"{', after the first' if len(times) > 1 else ''}) on {info['device']} ({info['dtype']}, "
            f"scan {info['scan_backend']}); {note}; wrote {out}"
            + (f"; {len(unpaired)} unpaired file(s) skipped" if unpaired else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: 0 on success, 2 with a one-line reason on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="diffmf_test: %(message)s")
    log.setLevel(logging.INFO)
    try:
        summary = run(args)
    except (InputError, DatasetError, CheckpointError, ImageReadError, ValueError, OSError) as err:
        print(f"diffmf_test: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffmf_test: interrupted", file=sys.stderr)
        return 130
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
