"""DDP on CPU (gloo): two processes started by torchrun and by the seed's launcher train and agree on weights."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffmf_training import distributed
from diffmf_training.options import normalise
from diffmf_training.train import build_parser, train
from safetensors.torch import load_file
from training_support import small_options, write_pairs

TRAINING_DIR = Path(__file__).resolve().parents[1] / "training"

# Runs inside each torchrun process: train, then dump this rank's final weights.
DRIVER = """
import json, sys
from safetensors.torch import save_file
from diffmf_training import distributed
from diffmf_training.options import normalise
from diffmf_training.train import Trainer

opt = normalise(json.load(open(sys.argv[1])))
ctx = distributed.setup(True)
try:
    trainer = Trainer(opt, ctx, progress=False)
    trainer.run()
    state = {k: v.contiguous() for k, v in trainer.G.state_dict().items()}
    save_file(state, f"{sys.argv[2]}/rank{ctx.rank}_of_{ctx.world_size}_{ctx.backend}.safetensors")
finally:
    distributed.cleanup(ctx)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


@pytest.fixture
def ddp_options(tmp_path):
    write_pairs(tmp_path / "data" / "A", n=5, size=(24, 28))
    opt = small_options(tmp_path / "run", [tmp_path / "data" / "A"], max_iter=3, checkpoint_save=3,
                        checkpoint_print=1)
    opt["datasets"]["train"]["batch_size"] = 4  # 2 per process
    return opt


def _assert_close(a, b, atol):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"largest difference {worst}"


@pytest.mark.slow
def test_two_gloo_processes_agree_and_match_one_process(tmp_path, ddp_options):
    opt_file = tmp_path / "ddp.json"
    opt_file.write_text(json.dumps(ddp_options))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(driver), str(opt_file), str(tmp_path)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0 = load_file(str(tmp_path / "rank0_of_2_gloo.safetensors"))
    r1 = load_file(str(tmp_path / "rank1_of_2_gloo.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # DDP keeps the replicas identical
    saved = load_file(str(tmp_path / "run" / "unit" / "models" / "3_G.safetensors"))
    assert all(torch.equal(r0[k], saved[k]) for k in r0)  # rank 0 wrote what they agree on

    # The global batch is split, not multiplied: one process on the whole batch takes the same steps.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = dict(ddp_options, path={"root": str(tmp_path / "single")})
        train(normalise(single), progress=False)
    finally:
        torch.set_num_threads(before)
    one = load_file(str(tmp_path / "single" / "unit" / "models" / "3_G.safetensors"))
    _assert_close(r0, one, atol=1e-5)  # equal up to the rounding of averaging gradients across processes


@pytest.mark.slow
def test_the_seed_launch_command_trains_and_resumes_with_ddp(tmp_path, ddp_options):
    opt_file = tmp_path / "seed.json"
    opt_file.write_text(json.dumps(ddp_options))
    cmd = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "train_DIFFMF.py", "--opt", str(opt_file), "--dist", "True", "--no-progress"]
    done = subprocess.run(cmd, cwd=TRAINING_DIR, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch 4 on 2 x cpu" in done.stderr
    assert "3 iterations (0 -> 3" in done.stdout
    assert (tmp_path / "run" / "unit" / "models" / "3_state.json").is_file()

    resume = subprocess.run(cmd + ["--resume", "--set", "train.max_iter=5"], cwd=TRAINING_DIR, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert "2 iterations (3 -> 5" in resume.stdout
    assert (tmp_path / "run" / "unit" / "models" / "5_state.json").is_file()


def test_local_rank_flag_in_both_spellings_and_its_agreement_with_the_environment(monkeypatch):
    assert build_parser().parse_args(["--local-rank=1"]).local_rank == 1
    assert build_parser().parse_args(["--local_rank", "0", "--dist", "True"]).dist is True
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="disagrees"):
        distributed.setup(True, local_rank_arg=1)
    ctx = distributed.setup(True, local_rank_arg=0, device="cpu")  # no launcher: one process
    assert (ctx.world_size, ctx.rank, ctx.backend) == (1, 0, None)
