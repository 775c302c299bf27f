"""The CUDA paths of training and testing: autocast (bf16, fp16 with its scaler), resume, CUDA RNG, test CLI."""

import pytest
import torch
from diffmf_training.options import normalise
from diffmf_training.test import main as run_diffmf_test
from diffmf_training.train import train
from diffmf_training.train_state import latest_complete, load_state
from training_support import small_options, write_pairs

from diffmf_core import load_model

pytestmark = pytest.mark.gpu


@pytest.fixture
def data(tmp_path):
    write_pairs(tmp_path / "data" / "A", n=4, size=(40, 44))
    write_pairs(tmp_path / "data" / "B", n=2, size=(36, 36), colour=True, seed=1)
    return [tmp_path / "data" / "A", tmp_path / "data" / "B"]


@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_cuda_training_with_autocast_checkpoints_and_resumes(tmp_path, data, amp):
    opt = small_options(tmp_path / "run", data, max_iter=4, checkpoint_save=2, amp=amp)
    opt["datasets"]["train"].update(H_size=32, batch_size=4, num_workers=2)
    result = train(normalise(opt), progress=False)
    assert result.device.startswith("cuda") and result.end_iter == 4
    assert all(torch.isfinite(torch.tensor(v)) for v in result.final_loss.values())
    models = tmp_path / "run" / "unit" / "models"
    state = load_state(models, 4)
    assert "cuda" in state["rng"]
    assert bool(state["scaler"]) == (amp == "fp16")  # only fp16 needs loss scaling
    more = dict(opt, train={**opt["train"], "max_iter": 6})
    resumed = train(normalise(more), resume="latest", progress=False)
    assert (resumed.start_iter, resumed.end_iter) == (4, 6) and latest_complete(models) == 6
    model = load_model(models / "6_E.safetensors", "cuda")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cuda_test_cli(tmp_path, data, capsys):
    opt = small_options(tmp_path / "run", data, max_iter=2, checkpoint_save=2)
    train(normalise(opt), progress=False)
    args = ["--model_path", str(tmp_path / "run" / "unit" / "models"), "--iter_number", "2", "--dataset", "B",
            "--root", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--device", "cuda", "--no-progress"]
    assert run_diffmf_test(args) == 0
    out = capsys.readouterr().out
    assert "fused 2 pairs" in out and "float16" in out  # bf16 or fp16 autocast by default on CUDA
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
