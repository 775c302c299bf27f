"""The shipped weights' quality report over the evaluation split, against baselines and published methods.

    python -m diffmf_training.quality_report [--data ../shared/data] [--checkpoint FILE] [--out reports/quality]

Fuses every pair of the evaluation split (diffmf_training.split: TNO even numbers, MSRS numbers
ending 0-4; never trained on) with the FusionEngine, then scores with diffmf_eval's code:
  * ours vs the `max` and `mean` rules over the whole split of each data set;
  * ours vs each published method in reference_fused/published/ on the evaluation pairs that
    method covers (head to head, same pairs).
Writes report.md, metrics.csv, metrics.png (means over the split) and contact_sheet.png
(ir | vi | ours | best published by Qabf on that pair).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from diffmf_core import FusionEngine
from diffmf_core.images import read_image, write_image

from .evaluate import EvaluationError, evaluate_folders, list_images
from .fusion_report import method_means, plot_means
from .split import split_pairs

OURS = "DIFF-MF (ours)"
EVAL_DATASETS = ("TNO", "MSRS")
GOAL_VS_PUBLISHED = ("Qabf", "VIF")
GOAL_VS_BASELINES = ("SD", "EN")
SHOWN = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "Nabf")


def fuse_split(engine: FusionEngine, data: Path, out: Path) -> dict[str, list[str]]:
    """Fuse the evaluation pairs into out/<DATASET>/<stem>.png; returns the stems per data set."""
    stems: dict[str, list[str]] = {}
    jobs = [(ds, name) for ds in EVAL_DATASETS for name in split_pairs(data, ds, evaluation=True)]
    times = []
    for ds, name in tqdm(jobs, desc="fusing evaluation split", unit="pair"):
        ir, vi = read_image(data / ds / "ir" / name), read_image(data / ds / "vi" / name)
        t0 = time.perf_counter()
        fused = engine.fuse(ir, vi)
        times.append(time.perf_counter() - t0)
        write_image(out / ds / f"{Path(name).stem}.png", fused)
        stems.setdefault(ds, []).append(Path(name).stem)
    print(f"fused {len(jobs)} pairs on {engine.info()['device']}: {1e3 * float(np.median(times)):.1f} ms median")
    return stems


def published_methods(data: Path, ds: str, stems: list[str]) -> dict[str, Path]:
    """Published method folders holding at least one evaluation pair of ``ds``."""
    root = data / "reference_fused" / "published"
    found = {}
    for folder in sorted(root.glob(f"*/{ds}")):
        if set(list_images(folder, folder.parent.name)) & set(stems):
            found[folder.parent.name] = folder
    return found


def head_to_head(rows: list[dict], method: str) -> dict:
    means = method_means(rows)
    ours, theirs = means[OURS], means[method]
    return {"method": method, "pairs": len({r["pair"] for r in rows}), "ours": ours, "theirs": theirs}


def contact_sheet(data: Path, fused_dir: Path, picks: list[tuple[str, str, str | None, Path | None]],
                  path: Path, height: int = 180) -> None:
    """Rows of ir | vi | ours | best published, each scaled to the same height."""
    rows = []
    for ds, stem, method, folder in picks:
        ir_name = next(p.name for p in (data / ds / "ir").iterdir() if p.stem == stem)
        tiles = [read_image(data / ds / "ir" / ir_name), read_image(data / ds / "vi" / ir_name),
                 read_image(fused_dir / ds / f"{stem}.png")]
        if folder is not None:
            tiles.append(read_image(next(p for p in folder.iterdir() if p.stem == stem)))
        labels = ["infrared", "visible", "DIFF-MF (ours)", method or ""]
        out = []
        for img, label in zip(tiles, labels):
            img = img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)
            img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img
            w = int(round(img.shape[1] * height / img.shape[0]))
            tile = cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)
            cv2.putText(tile, f"{ds} {stem} {label}" if label.startswith("infra") else label, (6, 18),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
            out.append(tile)
        rows.append(np.concatenate(out, axis=1))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    write_image(path, sheet)


def fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"


def write_markdown(path: Path, engine_info: dict, overall: dict[str, dict], duels: list[dict]) -> list[str]:
    """report.md; returns the list of goal shortfalls (empty when every goal is met)."""
    weights = Path(engine_info["checkpoint"])
    shipped = weights.parent.name == "weights" and weights.parent.parent.name == "diffmf_core"
    shown = f"diffmf_core/weights/{weights.name} (shipped)" if shipped else str(weights)
    lines = ["# Quality report: shipped DIFF-MF weights on the evaluation split", "",
             "Regenerate: `python -m diffmf_training.quality_report` (needs ../shared/data).", "",
             f"Weights: `{shown}` ({engine_info['parameters']:,} parameters); fused on "
             f"{engine_info['device']} ({engine_info['dtype']}, scan backend {engine_info['scan_backend']}).",
             "Evaluation split (never trained on): TNO pairs with an even number, MSRS pairs whose number ends "
             "in 0-4. Metrics: `diffmf_eval` (CDDFuse-evaluator conventions, docs/evaluation.md). Nabf: lower is "
             "better; everything else higher.", "", "## Ours against the simple rules (whole split)", ""]
    shortfalls = []
    for ds, means in overall.items():
        n = means[OURS]["pairs"]
        lines += [f"### {ds} ({n} pairs)", "", "| method | " + " | ".join(SHOWN) + " |",
                  "|---|" + "---|" * len(SHOWN)]
        for m, v in means.items():
            lines.append(f"| {m} | " + " | ".join(fmt(v[c]) for c in SHOWN) + " |")
        for c in GOAL_VS_BASELINES:
            for base in ("max", "mean"):
                if means[OURS][c] <= means[base][c]:
                    shortfalls.append(f"{ds}: {c} {fmt(means[OURS][c])} does not beat `{base}` ({fmt(means[base][c])})")
        lines.append("")
    lines += ["## Ours against published methods (head to head on the evaluation pairs each covers)", "",
              "| method | data set | pairs | " + " | ".join(f"{c} ours / theirs" for c in SHOWN) + " |",
              "|---|---|---|" + "---|" * len(SHOWN)]
    for d in duels:
        cells = []
        for c in SHOWN:
            o, t = d["ours"][c], d["theirs"][c]
            better = (o < t) if c == "Nabf" else (o > t)
            cells.append(f"{'**' if better else ''}{fmt(o)}{'**' if better else ''} / {fmt(t)}")
        lines.append(f"| {d['method']} | {d['dataset']} | {d['pairs']} | " + " | ".join(cells) + " |")
        for c in GOAL_VS_PUBLISHED:
            if d["ours"][c] <= d["theirs"][c]:
                shortfalls.append(f"{d['dataset']}: {c} {fmt(d['ours'][c])} does not beat {d['method']} "
                                  f"({fmt(d['theirs'][c])}) on its {d['pairs']} pair(s)")
    lines += ["", "Bold: ours is better on that metric.", "", "## Goals", "",
              "Beat every published method on Qabf and VIF, and the `max`/`mean` rules on SD and EN.", ""]
    lines += [f"- short: {s}" for s in shortfalls] or ["- every goal met on this split"]
    lines += ["", "![means](metrics.png)", "", "![contact sheet](contact_sheet.png)", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return shortfalls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped tiny weights")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, default=Path("reports/quality"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if not (args.data / "TNO" / "ir").is_dir():
        print(f"quality_report: no evaluation data at {args.data} (expected <data>/TNO/ir ...)", file=sys.stderr)
        return 2
    try:
        engine = FusionEngine(checkpoint=args.checkpoint, device=args.device)
        fused_dir = args.out / "fused"
        stems = fuse_split(engine, args.data, fused_dir)
        all_rows, overall, duels, picks = [], {}, [], []
        for ds in EVAL_DATASETS:
            ir_dir, vi_dir = args.data / ds / "ir", args.data / ds / "vi"
            rows = evaluate_folders(ir_dir, vi_dir, {OURS: fused_dir / ds}, pairs=stems[ds],
                                    baselines=("max", "mean"), workers=args.workers)
            all_rows += [dict(r, dataset=ds, comparison="split") for r in rows]
            overall[ds] = {m: dict(v, pairs=len(stems[ds])) for m, v in method_means(rows).items()}
            best_by_pair: dict[str, tuple[float, str, Path]] = {}
            for method, folder in published_methods(args.data, ds, stems[ds]).items():
                covered = sorted(set(list_images(folder, method)) & set(stems[ds]))
                duel = evaluate_folders(ir_dir, vi_dir, {OURS: fused_dir / ds, method: folder}, pairs=covered,
                                        workers=args.workers)
                all_rows += [dict(r, dataset=ds, comparison=method) for r in duel]
                duels.append(dict(head_to_head(duel, method), dataset=ds))
                for r in duel:
                    if r["method"] == method and r["Qabf"] > best_by_pair.get(r["pair"], (-1.0,))[0]:
                        best_by_pair[r["pair"]] = (r["Qabf"], method, folder)
            for stem in sorted(best_by_pair)[:3]:
                picks.append((ds, stem, best_by_pair[stem][1], best_by_pair[stem][2]))
    except (EvaluationError, ValueError, OSError) as exc:
        print(f"quality_report: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "metrics.csv", "w", newline="") as f:
        cols = ["dataset", "comparison", "method", "pair", *[c for c in all_rows[0] if c not in
                                                             ("dataset", "comparison", "method", "pair")]]
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(all_rows)
    split_rows = [dict(r, method=f"{r['method']} [{r['dataset']}]") for r in all_rows if r["comparison"] == "split"]
    plot_means(split_rows, args.out / "metrics.png", columns=list(SHOWN))
    contact_sheet(args.data, fused_dir, picks, args.out / "contact_sheet.png")
    shortfalls = write_markdown(args.out / "report.md", engine.info(), overall, duels)
    print(f"report: {args.out / 'report.md'} ({len(duels)} head-to-head comparisons, "
          f"{len(shortfalls)} goal shortfall(s))")
    for s in shortfalls:
        print(f"  short: {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
