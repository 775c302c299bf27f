"""diffmf_eval on generated folders: CSV/summary/chart contents, pairing by stem, coverage, one-line errors."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from diffmf_training import evaluate as E
from diffmf_training.fusion_report import read_csv, write_report
from diffmf_training.metrics import METRIC_COLUMNS, fusion_metrics

HEADER = "method,pair,EN,SD,SF,AG,MI,SCD,VIF,Qabf,SSIM,PSNR,CC,Nabf"
H, W = 48, 56
STEMS = ("001", "002", "010")


def _textured(rng, channels: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    base = 120 + 80 * np.sin(x / (4 + rng.uniform(0, 3))) * np.cos(y / (5 + rng.uniform(0, 3)))
    planes = [base + rng.normal(0, 12, (H, W)) + 25 * k for k in range(channels)]
    img = np.clip(np.stack(planes, -1) if channels > 1 else planes[0], 0, 255)
    return np.round(img).astype(np.uint8)


@pytest.fixture
def folders(tmp_path):
    """ir: 1-channel PNG; vi: colour PNG; fused 'max' (gray PNG), 'mean' (colour JPEG: other extension)."""
    rng = np.random.default_rng(7)
    d = {k: tmp_path / k for k in ("ir", "vi", "max", "mean")}
    for p in d.values():
        p.mkdir()
    for stem in STEMS:
        cv2.imwrite(str(d["ir"] / f"{stem}.png"), _textured(rng, 1))
        cv2.imwrite(str(d["vi"] / f"{stem}.png"), _textured(rng, 3))
        ir, vi = E.read_gray(d["ir"] / f"{stem}.png"), E.read_gray(d["vi"] / f"{stem}.png")
        cv2.imwrite(str(d["max"] / f"{stem}.png"), np.maximum(ir, vi).astype(np.uint8))
        colour = cv2.cvtColor(np.floor((ir + vi + 1) / 2).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        colour[..., 2] = np.clip(colour[..., 2].astype(int) + 30, 0, 255)  # a tint, so colour matters
        cv2.imwrite(str(d["mean"] / f"{stem}.jpg"), colour)
    (d["vi"] / "README.md").write_text("not an image, ignored")
    return d


def _run(argv, capsys):
    rc = E.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _base_args(d, out):
    return [
        "--ir",
        d["ir"],
        "--vi",
        d["vi"],
        "--fused",
        f"max={d['max']}",
        "--fused",
        f"mean={d['mean']}",
        "--out",
        out,
        "--workers",
        "1",
    ]


def _assert_one_line_error(rc, err, *fragments):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffmf_eval: error: "), err
    assert "Traceback" not in err
    for frag in fragments:
        assert str(frag) in lines[0]


# --------------------------------------------------------------------------- reading


def test_read_gray_follows_the_reference_reading(tmp_path):
    rgb = np.array([[[10, 200, 30], [255, 0, 128]]], dtype=np.uint8)  # RGB order
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    want = np.round(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
    got = E.read_gray(tmp_path / "c.png")
    assert got.dtype == np.float32 and got.shape == (1, 2)
    np.testing.assert_array_equal(got, want)
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    np.testing.assert_array_equal(E.read_gray(tmp_path / "g.png"), gray)


def test_read_gray_sixteen_bit_shift_and_stretch(tmp_path):
    raw = np.array([[7000, 7256], [7512, 8020]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "t.png"), raw)
    np.testing.assert_array_equal(E.read_gray(tmp_path / "t.png"), raw >> 8)  # what cv2.imread keeps
    stretched = E.read_gray(tmp_path / "t.png", sixteen_bit="stretch")
    np.testing.assert_array_equal(stretched, np.round((raw - 7000.0) * 255.0 / 1020.0))


def test_read_gray_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(E.EvaluationError, match="broken.png"):
        E.read_gray(bad)


# --------------------------------------------------------------------------- the report


def test_cli_writes_csv_summary_and_chart_with_the_right_values(folders, tmp_path, capsys):
    out = tmp_path / "report"
    rc, stdout, err = _run(_base_args(folders, out), capsys)
    assert rc == 0, err
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith(HEADER + ",")  # variant columns follow Nabf
    assert lines[0].split(",")[2:] == list(METRIC_COLUMNS)
    rows = read_csv(out / "metrics.csv")
    assert [(r["method"], r["pair"]) for r in rows] == [(m, s) for m in ("max", "mean") for s in STEMS]
    for r in rows:  # every value is what the metrics give for the files, read the reference way
        fused_dir = folders[r["method"]]
        fused = next(fused_dir.glob(f"{r['pair']}.*"))
        want = fusion_metrics(
            E.read_gray(fused),
            E.read_gray(folders["ir"] / f"{r['pair']}.png"),
            E.read_gray(folders["vi"] / f"{r['pair']}.png"),
        )
        for col in METRIC_COLUMNS:
            assert math.isclose(r[col], want[col], rel_tol=1e-8, abs_tol=1e-12), (r["method"], r["pair"], col)

    summary = (out / "summary.md").read_text()
    assert "each scored on the same 3 pair(s)" in summary
    assert "| max | 3 |" in summary and "| mean | 3 |" in summary
    assert "MI in nats" in summary and "data_range 2" in summary
    max_rows = [r for r in rows if r["method"] == "max"]
    mean_rows = [r for r in rows if r["method"] == "mean"]
    qabf_max = np.mean([r["Qabf"] for r in max_rows])
    assert qabf_max > np.mean([r["Qabf"] for r in mean_rows])  # max keeps the strongest edges
    assert f"**{qabf_max:.4f}**" in summary  # best per column marked

    chart = cv2.imread(str(out / "metrics.png"))
    assert chart is not None and chart.shape[0] > 200 and chart.shape[1] > 400
    assert "scored 6 fused images" in stdout and "wrote" in stdout


def test_console_script_is_installed_and_runs(folders, tmp_path):
    script = Path(sys.executable).with_name("diffmf_eval")
    if not script.exists():
        pytest.skip("diffmf_eval console script not installed in this environment")
    out = tmp_path / "cli"
    proc = subprocess.run([str(script), *map(str, _base_args(folders, out))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "metrics.csv").read_text().startswith(HEADER)


def test_parallel_workers_give_the_same_rows(folders, tmp_path):
    methods = {"max": folders["max"], "mean": folders["mean"]}
    serial = E.evaluate_folders(folders["ir"], folders["vi"], methods, workers=1)
    parallel = E.evaluate_folders(folders["ir"], folders["vi"], methods, workers=2)
    assert serial == parallel


def test_pairs_option_restricts_by_stem_or_glob(folders, tmp_path, capsys):
    out = tmp_path / "subset"
    rc, _, err = _run([*_base_args(folders, out), "--pairs", "00*", "--pairs", "010.png"], capsys)
    assert rc == 0, err
    rows = read_csv(out / "metrics.csv")
    assert sorted({r["pair"] for r in rows}) == ["001", "002", "010"]
    rc, _, err = _run([*_base_args(folders, out), "--pairs", "001"], capsys)
    assert {r["pair"] for r in read_csv(out / "metrics.csv")} == {"001"}


def test_a_method_missing_pairs_is_reported_not_fatal(folders, tmp_path, capsys):
    (folders["mean"] / "002.jpg").unlink()
    out = tmp_path / "common"
    rc, _, err = _run(_base_args(folders, out), capsys)
    assert rc == 0
    assert "'mean' lacks 1 of 3 pairs: 002" in err
    rows = read_csv(out / "metrics.csv")
    assert {r["pair"] for r in rows} == {"001", "010"}  # default: the pairs all methods cover
    assert "the 2 of 3 pairs they all cover" in (out / "summary.md").read_text()

    out_each = tmp_path / "each"
    rc, _, _ = _run([*_base_args(folders, out_each), "--coverage", "each"], capsys)
    assert rc == 0
    rows = read_csv(out_each / "metrics.csv")
    assert sum(r["method"] == "max" for r in rows) == 3 and sum(r["method"] == "mean" for r in rows) == 2
    assert "Methods cover different pairs (max: 3, mean: 2)" in (out_each / "summary.md").read_text()


def test_api_rows_round_trip_through_write_report(folders, tmp_path):
    rows = E.evaluate_folders(folders["ir"], folders["vi"], {"max": folders["max"]}, pairs=["001"])
    paths = write_report(rows, tmp_path / "api")
    assert set(paths) == {"csv", "summary", "chart"} and all(p.exists() for p in paths.values())
    back = read_csv(paths["csv"])
    assert back[0]["pair"] == "001" and back[0]["VIF"] == pytest.approx(rows[0]["VIF"], rel=1e-9)
    with open(paths["csv"], newline="") as fh:
        assert len(list(csv.reader(fh))) == 2


# --------------------------------------------------------------------------- bad input: one line, names the file


def test_missing_source_folder(folders, tmp_path, capsys):
    args = _base_args(folders, tmp_path / "o")
    args[1] = tmp_path / "nope"
    rc, _, err = _run(args, capsys)
    _assert_one_line_error(rc, err, "ir folder", tmp_path / "nope")


def test_missing_fused_folder(folders, tmp_path, capsys):
    rc, _, err = _run(
        [*_base_args(folders, tmp_path / "o"), "--fused", f"ghost={tmp_path / 'ghost'}"], capsys
    )
    _assert_one_line_error(rc, err, "ghost")


def test_fused_image_of_the_wrong_size(folders, tmp_path, capsys):
    cv2.imwrite(str(folders["max"] / "002.png"), np.zeros((H + 2, W), np.uint8))
    rc, _, err = _run(_base_args(folders, tmp_path / "o"), capsys)
    _assert_one_line_error(rc, err, folders["max"] / "002.png", f"{W}x{H + 2}", f"{W}x{H}")


def test_unreadable_fused_file(folders, tmp_path, capsys):
    (folders["mean"] / "010.jpg").write_bytes(b"\x00garbage")
    rc, _, err = _run([*_base_args(folders, tmp_path / "o"), "--workers", "2"], capsys)
    _assert_one_line_error(rc, err, "cannot read image", folders["mean"] / "010.jpg")


def test_two_files_for_one_pair_and_a_bad_pairs_pattern(folders, tmp_path, capsys):
    cv2.imwrite(str(folders["max"] / "001.jpg"), np.zeros((H, W), np.uint8))
    rc, _, err = _run(_base_args(folders, tmp_path / "o"), capsys)
    _assert_one_line_error(rc, err, "001.jpg, 001.png")
    (folders["max"] / "001.jpg").unlink()
    rc, _, err = _run([*_base_args(folders, tmp_path / "o"), "--pairs", "zz*"], capsys)
    _assert_one_line_error(rc, err, "'zz*' matches none")


def test_baselines_are_computed_from_the_sources(folders, tmp_path, capsys):
    """--baseline max scores np.maximum of the gray sources: the same rows as the stored max folder."""
    out = tmp_path / "base"
    args = ["--ir", folders["ir"], "--vi", folders["vi"], "--fused", f"stored={folders['max']}"]
    rc, _, err = _run(
        [*args, "--baseline", "max", "--baseline", "mean", "--out", out, "--workers", "1"], capsys
    )
    assert rc == 0, err
    rows = read_csv(out / "metrics.csv")
    assert [r["method"] for r in rows] == ["stored"] * 3 + ["max"] * 3 + ["mean"] * 3
    for stored, computed in zip(rows[:3], rows[3:6]):
        assert {k: v for k, v in stored.items() if k != "method"} == {
            k: v for k, v in computed.items() if k != "method"
        }
    rc, _, err = _run([*args, "--baseline", "max", "--fused", f"max={folders['max']}", "--out", out], capsys)
    _assert_one_line_error(rc, err, "'max' is used by both")
