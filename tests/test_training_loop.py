"""The training loop on generated pairs: it learns, it checkpoints atomically, and a killed run resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from diffmf_training.dataset import FusionPairDataset, find_pairs
from diffmf_training.loss import FusionLoss
from diffmf_training.options import model_config, normalise
from diffmf_training.train import main, train
from diffmf_training.train_state import complete_iterations, latest_complete, load_state
from safetensors.torch import load_file
from training_support import small_options, write_options, write_pairs

from diffmf_core import load_model, read_checkpoint_config


@pytest.fixture
def one_thread():
    """Same thread count in this process and in subprocesses, so CPU results are bit-identical."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data(tmp_path):
    write_pairs(tmp_path / "data" / "A", n=4, size=(24, 28))
    write_pairs(tmp_path / "data" / "B", n=2, size=(20, 20), colour=True, seed=1)
    return [tmp_path / "data" / "A", tmp_path / "data" / "B"]


def _fixed_batch_loss(model, dataroots):
    ds = FusionPairDataset(find_pairs(dataroots), patch_size=16, seed=123)
    batch = [ds[(p, p % len(ds))] for p in range(6)]
    ir, vi = torch.stack([b["ir"] for b in batch]), torch.stack([b["vi"] for b in batch])
    with torch.no_grad():
        return FusionLoss()(model(ir, vi), ir, vi)[0].item()


def test_loss_decreases_over_a_few_iterations(tmp_path, data, one_thread):
    opt = normalise(small_options(tmp_path / "run", data, max_iter=12, G_optimizer_lr=2e-3, E_decay=0,
                                  checkpoint_save=12, G_scheduler_milestones=[100]))
    torch.manual_seed(opt["train"]["manual_seed"])
    from diffmf_core import DiffMF

    before = _fixed_batch_loss(DiffMF(model_config(opt)), data)  # the same initial weights the trainer draws
    result = train(opt, progress=False)
    after = _fixed_batch_loss(load_model(tmp_path / "run" / "unit" / "models" / "12_G.safetensors"), data)
    assert result.end_iter == 12 and result.last_checkpoint == 12
    assert after < 0.9 * before


def test_checkpoint_set_layout_and_embedded_config(tmp_path, data, one_thread):
    opt = normalise(small_options(tmp_path / "run", data, max_iter=3, checkpoint_save=2))
    result = train(opt, progress=False)
    models = tmp_path / "run" / "unit" / "models"
    assert complete_iterations(models) == [2, 3]  # every checkpoint_save, and at the end
    for it in (2, 3):
        for net in ("G", "E"):
            assert read_checkpoint_config(models / f"{it}_{net}.safetensors") == model_config(opt)
    meta = json.loads((models / "3_state.json").read_text())
    assert meta["files"] == ["3_G.safetensors", "3_E.safetensors", "3_state.safetensors"]
    assert not list(models.glob("*.tmp"))
    state = load_state(models, 3)
    assert state["iteration"] == 3 and state["scheduler"]["last_epoch"] == 3
    assert set(state["optimizer"]["state"]) == set(range(len(list(load_model(models / "3_G.safetensors")
                                                                     .parameters()))))
    assert (tmp_path / "run" / "unit" / "images" / "3.png").is_file()
    assert list((tmp_path / "run" / "unit" / "options").glob("train_*.json"))
    assert "3 iterations" in result.summary() and "3_{G,E}.safetensors" in result.summary()


def test_resume_skips_an_incomplete_newest_set(tmp_path, data, one_thread):
    opt = normalise(small_options(tmp_path / "run", data, max_iter=4, checkpoint_save=2))
    train(opt, progress=False)
    models = tmp_path / "run" / "unit" / "models"
    (models / "4_E.safetensors").unlink()  # as if killed while writing the set of iteration 4
    assert latest_complete(models) == 2
    result = train(opt, resume="latest", progress=False)
    assert (result.start_iter, result.end_iter) == (2, 4)
    assert latest_complete(models) == 4


def _same_state(a_models, b_models, it):
    for name in (f"{it}_G.safetensors", f"{it}_E.safetensors", f"{it}_state.safetensors"):
        a, b = load_file(str(a_models / name)), load_file(str(b_models / name))
        assert a.keys() == b.keys(), name
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"{name}: {differ[:5]}"
    sa, sb = load_state(a_models, it), load_state(b_models, it)
    for key in ("scheduler", "ema_n_averaged", "iteration"):
        assert sa[key] == sb[key], key
    assert sa["optimizer"]["param_groups"] == sb["optimizer"]["param_groups"]


def test_killed_run_resumes_to_the_same_state_as_an_uninterrupted_one(tmp_path, data, one_thread):
    killed_opt = small_options(tmp_path / "killed", data, max_iter=10_000, checkpoint_save=2, checkpoint_print=1)
    opt_file = write_options(tmp_path / "killed.json", killed_opt)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "diffmf_training.train", "--opt", str(opt_file), "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    models = tmp_path / "killed" / "unit" / "models"
    deadline = time.monotonic() + 120
    try:
        while latest_complete(models) is None:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    resumed_at = latest_complete(models)
    target = resumed_at + 2

    resumed = train(normalise({**killed_opt, "train": {**killed_opt["train"], "max_iter": target}}),
                    resume="latest", progress=False)
    assert (resumed.start_iter, resumed.end_iter) == (resumed_at, target)

    straight_opt = small_options(tmp_path / "straight", data, max_iter=target, checkpoint_save=2, checkpoint_print=1)
    train(normalise(straight_opt), progress=False)
    _same_state(models, tmp_path / "straight" / "unit" / "models", target)


def test_time_budget_stops_and_saves_a_final_checkpoint(tmp_path, data, one_thread):
    opt = normalise(small_options(tmp_path / "run", data, max_iter=1000, checkpoint_save=500, max_minutes=1e-4))
    result = train(opt, progress=False)
    assert result.stopped_by.startswith("max_minutes")
    assert result.end_iter < 1000 and result.last_checkpoint == result.end_iter
    assert latest_complete(tmp_path / "run" / "unit" / "models") == result.end_iter


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["--set", "train.max_itr=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "diffmf_train: error: unknown option(s): train.max_itr"
    opt_file = write_options(tmp_path / "o.json", small_options(tmp_path / "run", [tmp_path / "none"]))
    assert main(["--opt", str(opt_file), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing folder" in err[0]


def test_tensorboard_logs_when_installed_and_is_skipped_with_a_warning_when_not(tmp_path, data, one_thread,
                                                                                 monkeypatch, caplog):
    opt = normalise(small_options(tmp_path / "tb", data, max_iter=1, checkpoint_print=1, tensorboard=True))
    pytest.importorskip("tensorboard")
    train(opt, progress=False)
    assert list((tmp_path / "tb" / "unit" / "tensorboard").glob("events.out.tfevents.*"))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were missing
    opt = normalise(small_options(tmp_path / "no_tb", data, max_iter=1, checkpoint_print=1, tensorboard=True))
    with caplog.at_level("WARNING", logger="diffmf_training"):
        result = train(opt, progress=False)
    assert result.end_iter == 1 and "tensorboard is not installed" in caplog.text
    assert (tmp_path / "no_tb" / "unit" / "images" / "1.png").is_file()
