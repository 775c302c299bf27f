"""diffmf_eval: score several fused-image folders side by side over the same infrared/visible pairs.

    diffmf_eval --ir DIR --vi DIR --fused NAME=DIR [--fused NAME=DIR ...] [--baseline max] --out DIR

Pairs are matched by file stem, so ``ir/00004N.png``, ``vi/00004N.jpg`` and ``ours/00004N.png``
form one pair. By default every method is scored over the pairs that ALL methods cover (a
method folder missing some pairs is reported, not fatal); ``--coverage each`` scores every
method over all of its own pairs instead. Writes ``metrics.csv`` (one row per method and
pair), ``summary.md`` (means per method, best marked) and ``metrics.png`` (one bar chart per
metric) into ``--out``. ``--baseline max|mean`` adds the simple rules, computed from the
sources. The metrics and their conventions are in ``diffmf_training.metrics``.

Images are read the way the reference evaluator reads them (``read_gray``), so colour visible
or fused images are scored on their BT.601 luma. The Python API used by reports:
``evaluate_folders(ir_dir, vi_dir, {"name": dir}) -> rows`` and
``diffmf_training.fusion_report.write_report(rows, out_dir)``.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .metrics import METRIC_COLUMNS, MIN_SIDE, fusion_metrics

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
)
SIXTEEN_BIT_MODES = ("shift", "stretch")
COVERAGE_MODES = ("common", "each")

Row = dict  # {"method": str, "pair": str, <metric column>: float, ...}


class EvaluationError(Exception):
    """A bad input: the message is one line and names the file or folder at fault."""


@dataclass(frozen=True)
class Baseline:
    """A simple fusion rule computed from the gray sources instead of read from a folder."""

    rule: str

    def fuse(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        # The reference data set's rules: max = np.maximum; mean = integer mean, half rounded up.
        return np.maximum(ir, vi) if self.rule == "max" else np.floor((ir + vi + 1) / 2)


BASELINE_RULES = ("max", "mean")


# --------------------------------------------------------------------------- reading images


def read_gray(path: str | os.PathLike, sixteen_bit: str = "shift") -> np.ndarray:
    """The image as the reference evaluator sees it: float32 2-D array of integer grey levels 0..255.

    cv2.imread decodes to 8-bit 3-channel BGR (gray files are replicated, alpha is dropped,
    JPEG EXIF orientation applied); that is converted with cv2 BGR2GRAY in float32
    (Y = 0.299 R + 0.587 G + 0.114 B) and rounded half to even. A 16-bit file is reduced to
    8 bits by cv2 itself, which keeps the high byte (v >> 8): ``sixteen_bit="shift"``, the
    reference behaviour. ``"stretch"`` instead maps each 16-bit image's own min..max linearly to
    0..255 before rounding, for raw thermal frames that use a narrow band of the 16-bit range.
    """
    if sixteen_bit not in SIXTEEN_BIT_MODES:
        raise ValueError(f"sixteen_bit must be one of {SIXTEEN_BIT_MODES}, got {sixteen_bit!r}")
    path = Path(path)
    flags = cv2.IMREAD_COLOR if sixteen_bit == "shift" else cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    bgr = cv2.imread(str(path), flags) if path.is_file() else None
    if bgr is None:
        raise EvaluationError(f"cannot read image {path}")
    gray = cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2GRAY)
    if bgr.dtype != np.uint8:  # only reachable with "stretch": a 16-bit (or float) file kept its depth
        lo, hi = float(gray.min()), float(gray.max())
        gray = (gray - lo) * np.float32(255.0 / (hi - lo)) if hi > lo else np.zeros_like(gray)
    return np.round(gray)


# --------------------------------------------------------------------------- pairing


def _natural_key(stem: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stem)]


def list_images(folder: str | os.PathLike, role: str) -> dict[str, Path]:
    """{stem: path} of the image files directly in folder.

    Other files (notes, .md) are ignored; a missing folder or a stem used twice is an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{role} folder {folder} does not exist")
    found: dict[str, list[Path]] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            found.setdefault(p.stem, []).append(p)
    for stem, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(sorted(p.name for p in paths))
            raise EvaluationError(f"{role} folder {folder} has several images for pair '{stem}': {names}")
    return {stem: paths[0] for stem, paths in found.items()}


def _preview(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names, key=_natural_key)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def select_pairs(stems: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """Stems matching any of the glob patterns ('01', '0000*', '01.png').

    A pattern that matches nothing is an error, so a typo does not silently shrink the comparison.
    """
    stems = sorted(stems, key=_natural_key)
    chosen: set[str] = set()
    for pattern in patterns:
        pat = (
            pattern[: -len(Path(pattern).suffix)]
            if Path(pattern).suffix.lower() in IMAGE_SUFFIXES
            else pattern
        )
        hits = fnmatch.filter(stems, pat)
        if not hits:
            raise EvaluationError(f"--pairs: '{pattern}' matches none of the {len(stems)} source pairs")
        chosen.update(hits)
    return [s for s in stems if s in chosen]


@dataclass
class PairPlan:
    """What will be evaluated: the source pairs and, per method, the fused image of each pair it scores."""

    sources: dict[str, tuple[Path, Path]]  # stem -> (ir, vi), the pairs in scope
    methods: dict[str, dict[str, Path | Baseline]]  # method -> {stem: fused image} it is scored on
    coverage: str
    notes: list[str] = field(default_factory=list)  # what was skipped and why, for the log and summary

    @property
    def n_images(self) -> int:
        return sum(len(m) for m in self.methods.values())


def plan_pairs(
    ir_dir: str | os.PathLike,
    vi_dir: str | os.PathLike,
    methods: Mapping[str, str | os.PathLike],
    pairs: Sequence[str] | None = None,
    coverage: str = "common",
    baselines: Sequence[str] = (),
) -> PairPlan:
    """Match sources and fused folders by stem; coverage "common" keeps the pairs every method has.

    baselines: rules of BASELINE_RULES scored as extra methods on every pair, named after the rule.
    """
    if coverage not in COVERAGE_MODES:
        raise ValueError(f"coverage must be one of {COVERAGE_MODES}, got {coverage!r}")
    for rule in baselines:
        if rule not in BASELINE_RULES:
            raise EvaluationError(f"unknown baseline '{rule}' (choose from {', '.join(BASELINE_RULES)})")
        if rule in methods:
            raise EvaluationError(f"method name '{rule}' is used by both --fused and --baseline")
    if not methods and not baselines:
        raise EvaluationError("nothing to score: give --fused NAME=DIR and/or --baseline max|mean")
    ir = list_images(ir_dir, "ir")
    vi = list_images(vi_dir, "vi")
    notes = []
    if set(ir) - set(vi):
        notes.append(
            f"{len(set(ir) - set(vi))} ir images have no vi partner, skipped: {_preview(set(ir) - set(vi))}"
        )
    if set(vi) - set(ir):
        notes.append(
            f"{len(set(vi) - set(ir))} vi images have no ir partner, skipped: {_preview(set(vi) - set(ir))}"
        )
    stems = [s for s in sorted(set(ir) & set(vi), key=_natural_key)]
    if not stems:
        raise EvaluationError(f"no pair: no file stem is in both {ir_dir} and {vi_dir}")
    if pairs:
        stems = select_pairs(stems, pairs)

    fused: dict[str, dict[str, Path | Baseline]] = {}
    for name, folder in methods.items():
        images = list_images(folder, f"fused '{name}'")
        have = {s: images[s] for s in stems if s in images}
        if not have:
            raise EvaluationError(
                f"fused folder {folder} ('{name}') holds none of the {len(stems)} pairs in scope"
            )
        missing = [s for s in stems if s not in images]
        if missing:
            notes.append(f"'{name}' lacks {len(missing)} of {len(stems)} pairs: {_preview(missing)}")
        fused[name] = have
    for rule in dict.fromkeys(baselines):
        fused[rule] = {s: Baseline(rule) for s in stems}

    if coverage == "common":
        common = [s for s in stems if all(s in have for have in fused.values())]
        if not common:
            raise EvaluationError(
                "the methods share no pair; use --coverage each to score each on its own pairs"
            )
        if len(common) < len(stems):
            notes.append(f"methods compared over the {len(common)} of {len(stems)} pairs they all cover")
        stems = common
        fused = {name: {s: have[s] for s in stems} for name, have in fused.items()}
    else:
        stems = [s for s in stems if any(s in have for have in fused.values())]
    return PairPlan({s: (ir[s], vi[s]) for s in stems}, fused, coverage, notes)


# --------------------------------------------------------------------------- scoring


def _size(img: np.ndarray) -> str:
    return f"{img.shape[1]}x{img.shape[0]}"


def evaluate_pair(
    stem: str,
    ir_path: Path,
    vi_path: Path,
    fused: Sequence[tuple[str, Path | Baseline]],
    sixteen_bit: str = "shift",
) -> list[Row]:
    """Rows for one source pair and each (method, fused image or baseline rule); sources are read once."""
    ir = read_gray(ir_path, sixteen_bit)
    vi = read_gray(vi_path, sixteen_bit)
    if ir.shape != vi.shape:
        raise EvaluationError(f"pair '{stem}': ir {ir_path} is {_size(ir)} but vi {vi_path} is {_size(vi)}")
    if min(ir.shape) < MIN_SIDE:
        raise EvaluationError(
            f"pair '{stem}': {ir_path} is {_size(ir)}, the metrics need {MIN_SIDE}x{MIN_SIDE} or more"
        )
    rows = []
    for method, path in fused:
        if isinstance(path, Baseline):
            rows.append({"method": method, "pair": stem, **fusion_metrics(path.fuse(ir, vi), ir, vi)})
            continue
        img = read_gray(path, sixteen_bit)
        if img.shape != ir.shape:
            raise EvaluationError(
                f"fused image {path} is {_size(img)} but its sources ({ir_path}) are {_size(ir)}"
            )
        rows.append({"method": method, "pair": stem, **fusion_metrics(img, ir, vi)})
    return rows


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; cv2's own threads would only contend


def _process_pool(workers: int) -> ProcessPoolExecutor:
    """Workers start fresh ("spawn"): forking a parent whose cv2/torch thread pools are running can deadlock."""
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
    )


def evaluate_plan(
    plan: PairPlan, workers: int = 1, sixteen_bit: str = "shift", progress: bool | None = None
) -> list[Row]:
    """Score every (method, pair) of the plan; rows come back ordered by method, then pair."""
    tasks = []
    for stem, (ir_path, vi_path) in plan.sources.items():
        fused = [(name, have[stem]) for name, have in plan.methods.items() if stem in have]
        tasks.append((stem, ir_path, vi_path, fused, sixteen_bit))
    from tqdm import tqdm

    bar = tqdm(
        total=plan.n_images,
        unit="img",
        desc="diffmf_eval",
        disable=None if progress is None else not progress,
    )
    rows: list[Row] = []
    try:
        if workers <= 1:
            for task in tasks:
                rows.extend(evaluate_pair(*task))
                bar.update(len(task[3]))
        else:
            with _process_pool(workers) as pool:
                pending = {pool.submit(evaluate_pair, *task) for task in tasks}
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        if fut.exception() is not None:
                            for other in pending:
                                other.cancel()
                            raise fut.exception()
                        rows.extend(fut.result())
                        bar.update(len(fut.result()))
    finally:
        bar.close()
    method_rank = {name: i for i, name in enumerate(plan.methods)}
    pair_rank = {stem: i for i, stem in enumerate(plan.sources)}
    rows.sort(key=lambda r: (method_rank[r["method"]], pair_rank[r["pair"]]))
    return rows


def evaluate_folders(
    ir_dir: str | os.PathLike,
    vi_dir: str | os.PathLike,
    methods: Mapping[str, str | os.PathLike],
    pairs: Sequence[str] | None = None,
    coverage: str = "common",
    workers: int = 1,
    sixteen_bit: str = "shift",
    progress: bool | None = False,
    baselines: Sequence[str] = (),
) -> list[Row]:
    """Rows {"method", "pair", <METRIC_COLUMNS>} for every fused folder in methods (name -> folder).

    pairs: stems or glob patterns restricting the pairs; coverage: "common" (pairs every method
    covers) or "each"; baselines: "max"/"mean" rules scored as extra methods. Skipped pairs are
    logged as warnings. Raises EvaluationError on bad input.
    """
    plan = plan_pairs(ir_dir, vi_dir, methods, pairs, coverage, baselines)
    for note in plan.notes:
        log.warning(note)
    return evaluate_plan(plan, workers, sixteen_bit, progress)


# --------------------------------------------------------------------------- command line


def _parse_fused(spec: str) -> tuple[str, Path]:
    name, sep, folder = spec.partition("=")
    if not sep:  # a bare folder is named after itself
        name, folder = Path(spec).name, spec
    if not name or not folder:
        raise EvaluationError(f"--fused {spec!r}: expected NAME=DIR")
    return name, Path(folder)


def _read_pair_patterns(values: Sequence[str]) -> list[str]:
    patterns = []
    for value in values:
        for token in value.split(","):
            token = token.strip()
            if token.startswith("@"):
                listing = Path(token[1:])
                if not listing.is_file():
                    raise EvaluationError(f"--pairs: list file {listing} does not exist")
                patterns += [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
            elif token:
                patterns.append(token)
    return patterns


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffmf_eval",
        description="Score fused-image folders with EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, PSNR, CC, Nabf "
        "(conventions of the CDDFuse evaluator; see docs/evaluation.md).",
    )
    p.add_argument("--ir", required=True, type=Path, help="folder of infrared source images")
    p.add_argument(
        "--vi", required=True, type=Path, help="folder of visible source images (colour is scored as luma)"
    )
    p.add_argument(
        "--fused",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a method's fused images (repeat for each method; a bare DIR is named after the folder)",
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        choices=BASELINE_RULES,
        help="also score a simple rule computed from the sources: max (per-pixel maximum) or mean",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="output folder for metrics.csv, summary.md, metrics.png"
    )
    p.add_argument(
        "--pairs",
        action="append",
        default=[],
        metavar="STEMS",
        help="restrict to these pair stems or globs, comma-separated ('01,05', '0000*'); "
        "@FILE reads them one per line",
    )
    p.add_argument(
        "--coverage",
        choices=COVERAGE_MODES,
        default="common",
        help="common (default): compare the methods over the pairs all of them cover; "
        "each: score every method over all of its own pairs",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes scoring pairs in parallel (default: CPU count, at most 8)",
    )
    p.add_argument(
        "--sixteen-bit",
        choices=SIXTEEN_BIT_MODES,
        default="shift",
        help="16-bit files: shift = keep the high byte as cv2.imread does (the reference); "
        "stretch = map each image's min..max to 0..255",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 on bad input, with a one-line reason)."""
    args = build_parser().parse_args(argv)
    from .fusion_report import console_summary, write_report

    start = time.perf_counter()
    try:
        methods: dict[str, Path] = {}
        for spec in args.fused:
            name, folder = _parse_fused(spec)
            if name in methods:
                raise EvaluationError(f"--fused: method name '{name}' given twice")
            methods[name] = folder
        patterns = _read_pair_patterns(args.pairs)
        plan = plan_pairs(args.ir, args.vi, methods, patterns, args.coverage, args.baseline)
        for note in plan.notes:
            print(f"diffmf_eval: warning: {note}", file=sys.stderr)
        rows = evaluate_plan(plan, max(1, args.workers), args.sixteen_bit)
        paths = write_report(rows, args.out, notes=plan.notes, sources=(args.ir, args.vi))
    except EvaluationError as err:
        print(f"diffmf_eval: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffmf_eval: interrupted", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    print(console_summary(rows, seconds, plan.coverage))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


__all__ = [
    "BASELINE_RULES",
    "COVERAGE_MODES",
    "Baseline",
    "METRIC_COLUMNS",
    "EvaluationError",
    "PairPlan",
    "evaluate_folders",
    "evaluate_pair",
    "evaluate_plan",
    "list_images",
    "main",
    "plan_pairs",
    "read_gray",
    "select_pairs",
]

if __name__ == "__main__":
    sys.exit(main())
