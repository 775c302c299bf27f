"""diffmf_train: train DIFF-MF on registered infrared/visible pairs.

    diffmf_train --opt options/DIFFMF/DIFFMF.json [--set train.max_iter=2000 ...] [--resume]
    torchrun --nproc_per_node=N -m diffmf_training.train --opt ...          (DDP; also multi-node)
    python -m torch.distributed.launch --nproc_per_node=N train_DIFFMF.py --opt ... --dist True   (seed)

One iteration: a global batch of random crops (split over the processes), the forward pass under
autocast on CUDA, the fusion loss in float32, Adam with gradient clipping, the multi-step schedule,
and the EMA update. Every ``checkpoint_save`` iterations (and at the end) the checkpoint set
``<root>/<task>/models/<iter>_{G,E,state}`` is written atomically; ``--resume`` continues from the
newest complete set to the same weights, optimiser, schedule, EMA, RNG and data position.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from diffmf_core import CheckpointError, DiffMF, DiffMFConfig, load_model, read_checkpoint_config, save_checkpoint
from diffmf_core.images import to_uint8, write_image
from diffmf_core.ops import model_memory_format

from . import distributed
from .dataset import DatasetError, FusionPairDataset, PairStreamSampler, find_pairs, select_pairs
from .loss import FusionLoss
from .options import DEFAULT_OPTIONS, OptionsError, dump_options, load_options, model_config
from .train_state import ResumeError, latest_complete, load_state, save_state, weights_path

log = logging.getLogger("diffmf_training")
LOSS_PARTS = ("total", "intensity", "gradient", "ssim")
BUDGET_CHECK_EVERY = 10  # iterations between time-budget agreements when several processes train


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss is no longer finite); the message says what to change."""


@dataclass
class TrainResult:
    """What a run did; ``main`` prints it as the closing summary."""

    start_iter: int
    end_iter: int
    seconds: float
    models_dir: Path
    last_checkpoint: int | None
    stopped_by: str
    final_loss: dict[str, float] = field(default_factory=dict)
    global_batch: int = 0
    device: str = ""
    world_size: int = 1

    @property
    def iterations(self) -> int:
        return self.end_iter - self.start_iter

    def summary(self) -> str:
        rate = self.iterations / self.seconds if self.seconds > 0 else float("nan")
        loss = ", ".join(f"{k} {v:.4f}" for k, v in self.final_loss.items()) or "n/a"
        lines = [
            f"diffmf_train: {self.iterations} iterations ({self.start_iter} -> {self.end_iter}, stopped by "
            f"{self.stopped_by}) in {self.seconds:.1f} s: {rate:.2f} it/s, {rate * self.global_batch:.1f} "
            f"pairs/s on {self.world_size} x {self.device}",
            f"final loss (mean of the last logging interval): {loss}",
        ]
        if self.last_checkpoint is not None:
            lines.append(f"checkpoints: {self.models_dir}/{self.last_checkpoint}_{{G,E}}.safetensors "
                         f"(+ _state for --resume); test with: diffmf_test --model_path {self.models_dir} "
                         f"--iter_number {self.last_checkpoint} --dataset NAME --A_dir ir --B_dir vi")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers


def task_dirs(opt: dict[str, Any]) -> dict[str, Path]:
    base = Path(opt["path"]["root"]) / opt["task"]
    return {"task": base, "models": base / "models", "options": base / "options",
            "tensorboard": base / "tensorboard", "images": base / "images"}


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` (None = float32). AMP is a CUDA feature here."""
    if device.type != "cuda" or mode == "off":
        if mode != "off":
            log.info("amp=%s applies on CUDA only; training in float32 on %s", mode, device.type)
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def _architecture(cfg: DiffMFConfig) -> dict[str, Any]:
    """The config fields that shape the weights (not the scan backend or free-form notes)."""
    data = dataclasses.asdict(cfg)
    data.pop("scan_backend", None)
    data.pop("extra", None)
    return data


def _check_same_architecture(path: Path, want: DiffMFConfig) -> None:
    have = _architecture(read_checkpoint_config(path))
    diff = sorted(k for k, v in _architecture(want).items() if have.get(k) != v)
    if diff:
        shown = ", ".join(f"{k}={have.get(k)!r} (options: {getattr(want, k)!r})" for k in diff[:4])
        raise ResumeError(f"{path}: trained with a different netG: {shown}")


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def sample_sheet(ir: torch.Tensor, vi: torch.Tensor, fused: torch.Tensor, rows: int = 4) -> np.ndarray:
    """uint8 image: one row per sample, columns ir | vi | fused."""
    k = min(rows, ir.shape[0])
    parts = [torch.cat([ir[i, 0], vi[i, 0], fused[i, 0]], 1) for i in range(k)]
    return to_uint8(torch.cat(parts, 0).detach().float().cpu().numpy())


def _open_tensorboard(opt: dict[str, Any], folder: Path):
    if not opt["train"]["tensorboard"]:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: no tensorboard logs (sample images still go to %s)",
                    task_dirs(opt)["images"])
        return None
    return SummaryWriter(str(folder))


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """Owns the model, its EMA copy, optimiser, schedule, scaler and data stream of one run."""

    def __init__(self, opt: dict[str, Any], ctx: distributed.DistContext, resume: str | None = None,
                 progress: bool = True) -> None:
        self.opt, self.ctx, self.progress = opt, ctx, progress
        self.dirs = task_dirs(opt)
        train, data = opt["train"], opt["datasets"]["train"]
        self.global_batch = data["batch_size"]
        if self.global_batch % ctx.world_size:
            raise OptionsError(f"datasets.train.batch_size {self.global_batch} does not split evenly over "
                               f"{ctx.world_size} processes")
        self.seed = train["manual_seed"]
        torch.manual_seed(self.seed)  # the same initial weights on every process
        np.random.seed((self.seed + ctx.rank) % 2**32)
        random.seed(self.seed + ctx.rank)
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        self.config = model_config(opt)
        # channels-last where the scan takes token-major tensors (the CPU kernel): a 320x256 tiny step 1.2x faster
        self.memory_format = model_memory_format(ctx.device, self.config.scan_backend, needs_grad=True)
        self.G = DiffMF(self.config).to(ctx.device, memory_format=self.memory_format)
        self.E = None
        if train["E_decay"] > 0:
            self.E = AveragedModel(self.G, multi_avg_fn=get_ema_multi_avg_fn(train["E_decay"]), use_buffers=True)
        self.optimizer = torch.optim.Adam(self.G.parameters(), lr=train["G_optimizer_lr"],
                                          betas=tuple(train["G_optimizer_betas"]),
                                          weight_decay=train["G_optimizer_wd"])
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, train["G_scheduler_milestones"],
                                                              train["G_scheduler_gamma"])
        self.amp_dtype = resolve_amp(train["amp"], ctx.device)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp_dtype == torch.float16)
        self.criterion = FusionLoss(train["G_lossfn_weights"], train["G_lossfn_ssim_weighting"]).to(ctx.device)
        self.iteration = 0
        self.elapsed_before = 0.0
        self._rng_to_restore: dict[str, Any] | None = None
        self._load_pretrained()
        self.resumed_from = self._resume(resume) if resume else None
        self.model = (DistributedDataParallel(self.G, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                              else None) if ctx.distributed else self.G)

        pairs = select_pairs(find_pairs(data["dataroot"], data["A_dir"], data["B_dir"]),
                             data["include"], data["exclude"])
        self.dataset = FusionPairDataset(pairs, data["H_size"], seed=self.seed, cache=data["cache"],
                                         progress=progress and ctx.is_main)
        sampler = PairStreamSampler(len(self.dataset), self.global_batch, ctx.rank, ctx.world_size, self.seed,
                                    data["dataloader_shuffle"], start_iter=self.iteration)
        workers = min(data["num_workers"], _cpu_count())
        self.loader = DataLoader(self.dataset, batch_size=self.global_batch // ctx.world_size, sampler=sampler,
                                 num_workers=workers, pin_memory=ctx.device.type == "cuda",
                                 persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)

    # -- start-up -----------------------------------------------------------------------
    def _load_pretrained(self) -> None:
        for net, key in (("G", "pretrained_netG"), ("E", "pretrained_netE")):
            path = self.opt["path"][key]
            if not path:
                continue
            _check_same_architecture(Path(path), self.config)
            weights = load_model(path).state_dict()
            if net == "G":
                self.G.load_state_dict(weights)
                if self.E is not None:
                    self.E.module.load_state_dict(weights)
            elif self.E is not None:
                self.E.module.load_state_dict(weights)
                self.E.n_averaged.fill_(1)  # keep these weights as the EMA's start
            log.info("started %s from %s", net, path)

    def _resume(self, which: str) -> int | None:
        models = self.dirs["models"]
        if which == "latest":
            it = latest_complete(models)
        else:
            try:
                it = int(which)
            except ValueError as exc:
                raise ResumeError(f"--resume {which!r}: expected an iteration number or nothing") from exc
        low, high = distributed.min_max_over_ranks(self.ctx, -1 if it is None else it)
        if low != high:  # e.g. a multi-node run whose nodes do not share the checkpoint folder
            raise ResumeError(f"--resume: the processes see different newest checkpoints in {models} "
                              f"({low} and {high}; -1 = none); every node needs the same checkpoint folder")
        if it is None:
            log.info("--resume: no complete checkpoint in %s; starting from iteration 0", models)
            return None
        state = load_state(models, it)
        g_path = weights_path(models, it, "G")
        _check_same_architecture(g_path, self.config)
        self.G.load_state_dict(load_model(g_path).state_dict())
        if self.E is not None:
            e_path = weights_path(models, it, "E")
            if e_path.is_file():
                self.E.module.load_state_dict(load_model(e_path).state_dict())
            else:
                log.warning("%s missing (EMA was off): the EMA restarts from G", e_path.name)
                self.E.module.load_state_dict(self.G.state_dict())
            self.E.n_averaged.fill_(int(state.get("ema_n_averaged") or 0))
        self.optimizer.load_state_dict(state["optimizer"])
        sched = dict(state["scheduler"])
        sched["milestones"] = collections.Counter(sched.get("milestones", {}))
        self.scheduler.load_state_dict(sched)
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self._rng_to_restore = state["rng"]  # after the data iterator exists (creating it draws a seed)
        if state.get("global_batch") != self.global_batch:
            log.warning("resuming with batch_size %s (was %s): the data stream continues at a different place",
                        self.global_batch, state.get("global_batch"))
        self.iteration = it
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        log.info("resumed from %s at iteration %d", models, it)
        return it

    # -- checkpoints --------------------------------------------------------------------
    def save(self, elapsed: float) -> None:
        if not self.ctx.is_main:
            return
        it, models = self.iteration, self.dirs["models"]
        meta = {"iteration": str(it), "task": self.opt["task"], "trainer": "diffmf_training"}
        files = [save_checkpoint(self.G, weights_path(models, it, "G"), metadata={**meta, "net": "G"})]
        if self.E is not None:
            files.append(save_checkpoint(self.E.module, weights_path(models, it, "E"), self.config,
                                         metadata={**meta, "net": "E"}))
        state = {
            "iteration": it,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema_n_averaged": int(self.E.n_averaged.item()) if self.E is not None else None,
            "rng": rng_state(self.ctx.device),
            "global_batch": self.global_batch,
            "world_size": self.ctx.world_size,
            "seed": self.seed,
            "elapsed_s": self.elapsed_before + elapsed,
        }
        save_state(models, it, state, files)

    # -- the loop -----------------------------------------------------------------------
    def step(self, batch: dict) -> torch.Tensor:
        """One optimisation step; returns the detached (total, intensity, gradient, ssim) losses."""
        dev = self.ctx.device
        ir = batch["ir"].to(dev, non_blocking=True, memory_format=self.memory_format)
        vi = batch["vi"].to(dev, non_blocking=True, memory_format=self.memory_format)
        with torch.autocast(dev.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            fused = self.model(ir, vi)
        loss, parts = self.criterion(fused, ir, vi)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        clip = self.opt["train"]["G_optimizer_clipgrad"]
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.G.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.E is not None:
            self.E.update_parameters(self.G)
        self.iteration += 1
        self._last = (ir, vi, fused.detach())
        return torch.stack([loss.detach(), *(parts[k].detach() for k in LOSS_PARTS[1:])])

    def _write_samples(self, writer) -> None:
        ir, vi, fused = self._last
        sheet = sample_sheet(ir, vi, fused)
        write_image(self.dirs["images"] / f"{self.iteration}.png", sheet)
        if writer is not None:
            writer.add_image("samples/ir_vi_fused", sheet[None], self.iteration, dataformats="CHW")

    def run(self) -> TrainResult:
        train, ctx = self.opt["train"], self.ctx
        max_iter, budget = train["max_iter"], train["max_minutes"]
        start = self.iteration
        writer = None
        if ctx.is_main:
            self.dirs["options"].mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%y%m%d_%H%M%S")
            (self.dirs["options"] / f"train_{stamp}.json").write_text(dump_options(self.opt), encoding="utf-8")
            writer = _open_tensorboard(self.opt, self.dirs["tensorboard"])
            done = latest_complete(self.dirs["models"])
            if self.resumed_from is None and done is not None:
                log.warning("%s already holds checkpoints up to iteration %d; this fresh run overwrites those "
                            "it reaches (pass --resume to continue instead)", self.dirs["models"], done)
        log.info("training %s: %d pairs, global batch %d on %d x %s, crops %d, amp %s, iterations %d -> %d%s",
                 self.opt["task"], len(self.dataset), self.global_batch, ctx.world_size, ctx.device,
                 self.dataset.patch_size, self.amp_dtype or "off", start, max_iter,
                 f", budget {budget} min" if budget else "")
        sums = torch.zeros(len(LOSS_PARTS), device=ctx.device)
        count, stopped_by, last_saved = 0, "max_iter", self.resumed_from
        final: dict[str, float] = {}
        t0 = time.monotonic()
        bar = tqdm(total=max_iter, initial=start, unit="it", desc="train", dynamic_ncols=True,
                   disable=not (self.progress and ctx.is_main))
        data = iter(self.loader)
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore, ctx.device)
        try:
            while self.iteration < max_iter:
                sums += self.step(next(data))
                count += 1
                bar.update(1)
                it = self.iteration
                stop = False
                if budget and (not ctx.distributed or it % BUDGET_CHECK_EVERY == 0):
                    stop = distributed.any_rank(ctx, time.monotonic() - t0 >= budget * 60)
                last = it == max_iter or stop
                if it % train["checkpoint_print"] == 0 or last:
                    final = self._log_interval(sums, count, writer, bar)
                    sums.zero_()
                    count = 0
                if ctx.is_main and (it % train["checkpoint_image"] == 0 or last):
                    self._write_samples(writer)
                if it % train["checkpoint_save"] == 0 or last:
                    if count:  # the losses since the last log line must be finite before saving
                        self._check_finite(distributed.mean_over_ranks(ctx, sums / count))
                    self.save(time.monotonic() - t0)
                    last_saved = it
                if stop:
                    stopped_by = f"max_minutes ({budget} min)"
                    break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            del data
        distributed.barrier(ctx)
        return TrainResult(start, self.iteration, time.monotonic() - t0, self.dirs["models"], last_saved, stopped_by,
                           final, self.global_batch, str(ctx.device), ctx.world_size)

    def _check_finite(self, means: torch.Tensor) -> None:
        if not torch.isfinite(means).all():
            raise TrainingError(f"the loss is not finite at iteration {self.iteration}; lower "
                                f"train.G_optimizer_lr or set train.amp=off, and --resume from the last checkpoint")

    def _log_interval(self, sums: torch.Tensor, count: int, writer, bar) -> dict[str, float]:
        means = distributed.mean_over_ranks(self.ctx, sums / max(count, 1))
        self._check_finite(means)
        values = dict(zip(LOSS_PARTS, means.tolist()))
        lr = self.optimizer.param_groups[0]["lr"]
        if self.ctx.is_main:
            bar.set_postfix(loss=f"{values['total']:.4f}", lr=f"{lr:.2e}")
            log.info("iter %d: loss %s, lr %.3e", self.iteration,
                     " ".join(f"{k}={v:.4f}" for k, v in values.items()), lr)
            if writer is not None:
                for k, v in values.items():
                    writer.add_scalar(f"loss/{k}", v, self.iteration)
                writer.add_scalar("lr", lr, self.iteration)
        return values


# ----------------------------------------------------------------------------- entry points


def train(opt: dict[str, Any], resume: str | None = None, device: str | None = None, local_rank: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train with checked options (``load_options``); joins/leaves the launcher's process group."""
    ctx = distributed.setup(opt["dist"], local_rank, device)
    handler = None
    try:
        trainer = Trainer(opt, ctx, resume, progress)  # checks data and checkpoints before any output exists
        if ctx.is_main:
            trainer.dirs["task"].mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(trainer.dirs["task"] / "train.log", encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)
        with logging_redirect_tqdm(loggers=[logging.root]):
            return trainer.run()
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        distributed.cleanup(ctx)


def str2bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def resolve_opt_path(text: str | None) -> Path:
    """The options file; a relative path not found here is also looked up beside this package."""
    if text is None:
        return DEFAULT_OPTIONS
    path = Path(text)
    packaged = Path(__file__).resolve().parent / path
    return packaged if not path.exists() and not path.is_absolute() and packaged.exists() else path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffmf_train", description="Train DIFF-MF (see docs/training.md).")
    p.add_argument("--opt", help=f"options JSON (default: the shipped {DEFAULT_OPTIONS.name})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an option, e.g. --set train.max_iter=2000 --set netG.dim=16 (JSON values)")
    p.add_argument("--dist", type=str2bool, default=None, metavar="True|False",
                   help="the seed's flag; the launcher's environment (WORLD_SIZE) decides in the end")
    p.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None,
                   help="passed by torch.distributed.launch (torchrun sets LOCAL_RANK instead)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="ITER",
                   help="continue from the newest complete checkpoint set (or from ITER)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:<local rank> when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Console entry point; exit status 2 on bad input (one-line reason), 1 when training fails."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if _launcher_rank() == 0 else logging.WARNING,
                        format="diffmf_train: %(message)s")
    try:
        opt = load_options(resolve_opt_path(args.opt), args.set)
        if args.dist is not None:
            opt["dist"] = args.dist
        result = train(opt, args.resume, args.device, args.local_rank, progress=not args.no_progress)
    except (OptionsError, DatasetError, ResumeError, CheckpointError, ValueError) as err:
        print(f"diffmf_train: error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"diffmf_train: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("diffmf_train: interrupted (resume with --resume from the last checkpoint)", file=sys.stderr)
        return 130
    if _launcher_rank() == 0:
        print(result.summary())
    return 0


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _launcher_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


__all__ = ["TrainResult", "Trainer", "TrainingError", "main", "train"]

if __name__ == "__main__":
    sys.exit(main())
