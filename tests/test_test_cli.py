"""diffmf_test: the seed's flags fuse a generated folder (gray and RGB); bad input is one line and exit 2."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from diffmf_training.test import main
from training_support import TINY_NET, write_pairs

from diffmf_core import build_model, save_checkpoint
from diffmf_core.colour import rgb_to_ycbcr

TRAINING_DIR = Path(__file__).resolve().parents[1] / "training"
NET = {k: v for k, v in TINY_NET.items() if k != "preset"}


@pytest.fixture
def ckpt(tmp_path):
    """A fresh network: its blend head starts at the mean of the two sources, which the tests can check."""
    folder = tmp_path / "ckpt"
    save_checkpoint(build_model("tiny", **NET), folder / "7_G.safetensors")
    return folder


def _seed_args(ckpt, root, out, dataset="VIF", iter_number=7):
    return [f"--model_path={ckpt}", f"--iter_number={iter_number}", f"--dataset={dataset}", "--A_dir=ir",
            "--B_dir=vi", "--root", str(root), "--out", str(out), "--no-progress"]


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_gray_pairs_fuse_to_gray_pngs(tmp_path, ckpt, capsys):
    names = write_pairs(tmp_path / "test" / "VIF", n=3, size=(21, 30))
    assert main(_seed_args(ckpt, tmp_path / "test", tmp_path / "out")) == 0
    out = capsys.readouterr()
    assert "fused 3 pairs of VIF" in out.out and "ms per image" in out.out and "on cpu" in out.out
    assert "no 7_E.safetensors (EMA off), using the G weights" in out.out
    for name in names:
        fused = _read(tmp_path / "out" / f"{name}.png")
        ir = _read(tmp_path / "test" / "VIF" / "ir" / f"{name}.png").astype(float)
        vi = _read(tmp_path / "test" / "VIF" / "vi" / f"{name}.png").astype(float)
        assert fused.shape == (21, 30) and fused.dtype == np.uint8
        assert np.abs(fused - (ir + vi) / 2).max() <= 1.0


def test_colour_visible_gives_rgb_with_the_visible_chroma(tmp_path, ckpt, capsys):
    names = write_pairs(tmp_path / "test" / "RGB", n=2, size=(24, 20), colour=True)
    assert main(_seed_args(ckpt, tmp_path / "test", tmp_path / "out", dataset="RGB")) == 0
    for name in names:
        fused = _read(tmp_path / "out" / f"{name}.png")[:, :, ::-1].astype(np.float32) / 255
        vi = _read(tmp_path / "test" / "RGB" / "vi" / f"{name}.png")[:, :, ::-1].astype(np.float32) / 255
        ir = _read(tmp_path / "test" / "RGB" / "ir" / f"{name}.png").astype(np.float32) / 255
        f_ycc, v_ycc = rgb_to_ycbcr(fused), rgb_to_ycbcr(vi)
        assert fused.shape == (24, 20, 3)
        assert np.abs(f_ycc[..., 0] - (ir + v_ycc[..., 0]) / 2).max() < 3 / 255
        inside = ((fused > 0.02) & (fused < 0.98)).all(-1)  # where recombination did not clip a channel
        assert inside.mean() > 0.5
        assert np.abs(f_ycc[..., 1:] - v_ycc[..., 1:])[inside].max() < 3 / 255


def test_ema_weights_are_preferred_and_the_newest_iteration_is_the_default(tmp_path, ckpt, capsys):
    write_pairs(tmp_path / "test" / "VIF", n=1, sixteen_bit=True)
    save_checkpoint(build_model("tiny", **NET), ckpt / "9_E.safetensors")
    args = [a for a in _seed_args(ckpt, tmp_path / "test", tmp_path / "out") if not a.startswith("--iter")]
    assert main(args) == 0
    assert "EMA weights of iteration 9" in capsys.readouterr().out
    assert _read(tmp_path / "out" / "00.png").dtype == np.uint8


def test_pairs_option_fuses_only_the_matching_pairs(tmp_path, ckpt, capsys):
    write_pairs(tmp_path / "test" / "TNO", names=["01", "02", "03", "04"], size=(16, 16))
    assert main(_seed_args(ckpt, tmp_path / "test", tmp_path / "out", dataset="TNO") + ["--pairs", "*[02468]"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["02.png", "04.png"]
    assert main(_seed_args(ckpt, tmp_path / "test", tmp_path / "out", dataset="TNO") + ["--pairs", "x*"]) == 2
    assert "--pairs: pattern(s) 'x*' match none" in capsys.readouterr().err


@pytest.mark.parametrize("breakage,message", [
    ("no_dataset", "no such folder"),
    ("no_iteration", "no checkpoint of iteration 7"),
    ("size_mismatch", "differ in size"),
    ("unreadable", "not a readable image"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, ckpt, capsys, breakage, message):
    root = tmp_path / "test"
    write_pairs(root / "VIF", n=2)
    if breakage == "no_dataset":
        args = _seed_args(ckpt, root, tmp_path / "out", dataset="MISSING")
    else:
        args = _seed_args(ckpt, root, tmp_path / "out")
    if breakage == "no_iteration":
        (ckpt / "7_G.safetensors").rename(ckpt / "8_G.safetensors")
    if breakage == "size_mismatch":
        cv2.imwrite(str(root / "VIF" / "vi" / "01.png"), np.zeros((5, 6), np.uint8))
    if breakage == "unreadable":
        (root / "VIF" / "ir" / "01.png").write_bytes(b"\x89PNG broken")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffmf_test: error:") and message in err[0]


def test_the_seed_test_command_works_from_inside_training(tmp_path):
    write_pairs(tmp_path / "dataset" / "test" / "VIF", n=2, colour=True)
    (tmp_path / "ckpt").mkdir()
    save_checkpoint(build_model("tiny", **NET), tmp_path / "ckpt" / "10000_E.safetensors")
    cmd = [sys.executable, str(TRAINING_DIR / "test_DIFFMF.py"), "--model_path=./ckpt", "--iter_number=10000",
           "--dataset=VIF", "--A_dir=ir", "--B_dir=vi"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "results" / "DIFFMF_VIF").iterdir()) == ["00.png", "01.png"]
