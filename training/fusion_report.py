"""Tables and charts of fusion-metric rows: metrics.csv, summary.md (means, best marked) and metrics.png.

Rows are what ``diffmf_training.evaluate`` produces: dicts with "method", "pair" and one float
per metric column. Means skip NaN values (a metric undefined on some pair, e.g. CC of a
constant image) and the summary says how many were skipped.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .metrics import LOWER_IS_BETTER, METRIC_COLUMNS, PRIMARY_COLUMNS

CSV_NAME = "metrics.csv"
SUMMARY_NAME = "summary.md"
CHART_NAME = "metrics.png"

CONVENTIONS_NOTE = (
    "Conventions (those of the CDDFuse evaluator, behind the CDDFuse/EMMA/DDFM tables): every image is "
    "read with cv2 and scored as gray = round(BT.601 luma) on 0..255; MI in nats (MI_bits: in bits); "
    "VIF = vifp(ir, F) + vifp(vi, F); SSIM = ssim(F, ir) + ssim(F, vi) with a 7x7 uniform window and "
    "data_range 2 (so up to 2; SSIM_avg255 is their mean with data_range 255); PSNR uses max(F) as peak; "
    "Qabf keeps the MATLAB quirk; Nabf is Shreyamsha Kumar's modified artifact measure. "
    "Higher is better except Nabf and MSE. Details: docs/evaluation.md."
)


def columns_of(rows: Sequence[dict]) -> list[str]:
    """Metric columns present in the rows, in METRIC_COLUMNS order."""
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    return [c for c in METRIC_COLUMNS if c in present]


def write_csv(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """One line per row, header ``method,pair,<metric columns>``; floats to 10 significant digits."""
    path = Path(path)
    cols = columns_of(rows) or list(METRIC_COLUMNS)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "pair", *cols])
        for r in rows:
            writer.writerow([r["method"], r["pair"], *(f"{float(r[c]):.10g}" for c in cols)])
    return path


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows back from a metrics.csv (floats parsed), e.g. to re-plot or merge runs."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [
            {k: (v if k in ("method", "pair") else float(v)) for k, v in rec.items()}
            for rec in csv.DictReader(fh)
        ]


def method_means(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """{method: {"pairs": n, "nan": values skipped, <column>: mean over non-NaN values}}, in row order."""
    cols = columns_of(rows)
    grouped: dict[str, list[dict]] = {}
    for r in rows:
        grouped.setdefault(r["method"], []).append(r)
    means = {}
    for method, group in grouped.items():
        table = np.array([[float(r[c]) for c in cols] for r in group], dtype=np.float64)
        nan = np.isnan(table)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column is simply NaN
            col_means = np.nanmean(table, axis=0)
        means[method] = {"pairs": len(group), "nan": int(nan.sum()), **dict(zip(cols, col_means.tolist()))}
    return means


def best_methods(means: dict[str, dict[str, float]], columns: Iterable[str]) -> dict[str, set[str]]:
    """Per column, the method(s) with the best mean (lowest for Nabf and MSE, highest otherwise)."""
    best = {}
    for c in columns:
        vals = {m: v[c] for m, v in means.items() if not math.isnan(v[c])}
        if not vals:
            best[c] = set()
            continue
        target = min(vals.values()) if c in LOWER_IS_BETTER else max(vals.values())
        best[c] = {m for m, v in vals.items() if v == target}
    return best


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.2e}" if v != 0 and abs(v) < 1e-3 else f"{v:.4f}"


def coverage_sentence(means: dict[str, dict[str, float]]) -> str:
    counts = {m: int(v["pairs"]) for m, v in means.items()}
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return (
            f"{len(counts)} method(s), each scored on the same {n} pair(s)."
            if len(counts) > 1
            else f"{n} pair(s)."
        )
    per = ", ".join(f"{m}: {n}" for m, n in counts.items())
    return f"Methods cover different pairs ({per}); their means are not over the same images."


def summary_markdown(
    rows: Sequence[dict],
    notes: Sequence[str] = (),
    sources: tuple | None = None,
    title: str = "Fusion metrics",
) -> str:
    """Markdown: coverage line, table of means per method (best in bold when several methods), notes."""
    means = method_means(rows)
    cols = columns_of(rows)
    best = best_methods(means, cols) if len(means) > 1 else {c: set() for c in cols}
    lines = [f"# {title}", ""]
    if sources:
        lines += [f"Sources: ir `{sources[0]}`, vi `{sources[1]}`.", ""]
    lines += [coverage_sentence(means), ""]
    lines.append(
        "| method | pairs | "
        + " | ".join(f"{c} (lower better)" if c in LOWER_IS_BETTER else c for c in cols)
        + " |"
    )
    lines.append("|---|---:|" + "---:|" * len(cols))
    for method, v in means.items():
        cells = [f"**{_fmt(v[c])}**" if method in best[c] else _fmt(v[c]) for c in cols]
        lines.append(f"| {method} | {int(v['pairs'])} | " + " | ".join(cells) + " |")
    lines.append("")
    if len(means) > 1:
        lines += ["Bold: best mean in the column.", ""]
    skipped = {m: int(v["nan"]) for m, v in means.items() if v["nan"]}
    if skipped:
        per = ", ".join(f"{m}: {n}" for m, n in skipped.items())
        lines += [f"Undefined values (n/a, e.g. CC of a constant image) left out of the means: {per}.", ""]
    lines += [CONVENTIONS_NOTE, ""]
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def plot_means(rows: Sequence[dict], path: str | os.PathLike, columns: Sequence[str] | None = None) -> Path:
    """Bar chart of the means: one subplot per metric, one coloured bar per method, a shared legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = method_means(rows)
    cols = list(columns or columns_of(rows))
    methods = list(means)
    ncols = min(5, len(cols))
    nrows = math.ceil(len(cols) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.6 * nrows + 0.8), squeeze=False)
    colours = plt.get_cmap("tab20" if len(methods) > 10 else "tab10").colors
    x = np.arange(len(methods))
    for ax, c in zip(axes.flat, cols):
        vals = np.array([means[m][c] for m in methods], dtype=np.float64)
        finite = np.isfinite(vals)
        ax.bar(x[finite], vals[finite], color=[colours[i % len(colours)] for i in x[finite]])
        for i in x[~finite]:
            ax.text(i, 0, _fmt(vals[i]), ha="center", va="bottom", fontsize=7)
        ax.set_title(f"{c} (lower better)" if c in LOWER_IS_BETTER else c, fontsize=10)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(cols) :]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i % len(colours)]) for i in range(len(methods))]
    fig.legend(handles, methods, loc="lower center", ncol=min(len(methods), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(methods) / 6), 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    rows: Sequence[dict], out_dir: str | os.PathLike, notes: Sequence[str] = (), sources: tuple | None = None
) -> dict[str, Path]:
    """metrics.csv, summary.md and metrics.png in out_dir (created); returns their paths by kind."""
    if not rows:
        raise ValueError("no rows to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(rows, out / CSV_NAME)
    md_path = out / SUMMARY_NAME
    md_path.write_text(summary_markdown(rows, notes, sources), encoding="utf-8")
    png_path = plot_means(rows, out / CHART_NAME)
    return {"csv": csv_path, "summary": md_path, "chart": png_path}


def console_summary(
    rows: Sequence[dict], seconds: float, coverage: str, columns: Sequence[str] = PRIMARY_COLUMNS
) -> str:
    """A few lines for the terminal: what was scored, how fast, and the means of the primary columns."""
    means = method_means(rows)
    cols = [c for c in columns if c in columns_of(rows)]
    per_image = seconds / max(1, len(rows))
    pairs = len({r["pair"] for r in rows})
    head = (
        f"scored {len(rows)} fused images: {len(means)} method(s) over {pairs} pair(s) "
        f"({coverage} coverage) in {seconds:.1f} s ({per_image:.2f} s per image)"
    )
    width = max(6, *(len(m) for m in means))
    lines = [head, f"{'method':<{width}} {'pairs':>5} " + " ".join(f"{c:>9}" for c in cols)]
    for m, v in means.items():
        cells = " ".join(f"{v[c]:>9.4g}" for c in cols)
        lines.append(f"{m:<{width}} {int(v['pairs']):>5} {cells}")
    return "\n".join(lines)
