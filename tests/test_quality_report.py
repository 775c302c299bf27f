"""The quality report command on a generated data tree laid out like ../shared/data."""

import csv

import cv2
import numpy as np
import torch
from diffmf_training import quality_report
from diffmf_training.split import is_eval_pair, split_pairs
from training_support import write_pairs

from diffmf_core import build_model, save_checkpoint

SMALL = dict(dim=8, stem_dim=4, d_state=4, ce_d_state=4, ce_heads=2, sem_levels=2)


def test_split_rule():
    assert is_eval_pair("TNO", "02") and not is_eval_pair("TNO", "03")
    assert is_eval_pair("MSRS", "00004N") and is_eval_pair("MSRS", "00881N") and not is_eval_pair("MSRS", "00008N")
    assert not is_eval_pair("RoadScene", "FLIR_00002")


def test_report_compares_ours_with_baselines_and_published(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_pairs(data / "TNO", names=["01", "02", "04"], size=(48, 56))
    write_pairs(data / "MSRS", names=["00004N", "00008N"], size=(48, 56), colour=True)
    # A "published" method covering one TNO evaluation pair and one training pair.
    pub = data / "reference_fused" / "published" / "SomeNet" / "TNO"
    pub.mkdir(parents=True)
    for stem in ("02", "01"):
        ir = cv2.imread(str(data / "TNO" / "ir" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(pub / f"{stem}.png"), np.maximum(ir, 30))
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("tiny", **SMALL), tmp_path / "w.safetensors")
    assert split_pairs(data, "TNO", evaluation=True) == ["02.png", "04.png"]

    out = tmp_path / "report"
    assert quality_report.main(["--data", str(data), "--checkpoint", str(ckpt), "--out", str(out),
                                "--workers", "1"]) == 0
    report = (out / "report.md").read_text()
    assert "### TNO (2 pairs)" in report and "### MSRS (1 pairs)" in report
    assert "| SomeNet | TNO | 1 |" in report  # head to head on the one evaluation pair it covers
    for name in ("metrics.png", "contact_sheet.png", "metrics.csv"):
        assert (out / name).stat().st_size > 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"DIFF-MF (ours)", "max", "mean", "SomeNet"}
    assert not any(r["pair"] in ("01", "00008N") for r in rows), "a training pair was evaluated"


def test_missing_data_is_one_line(tmp_path, capsys):
    assert quality_report.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no evaluation data" in capsys.readouterr().err
