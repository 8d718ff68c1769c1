"""The training loop shared by the tokenizer and dynamics trainers.

AdamW with linear warm-up and cosine decay, gradient clipping, an EMA of the weights,
TensorBoard scalars, a tqdm bar, DDP under torchrun, and atomic checkpoints from which
training resumes exactly (model, EMA, optimizer, scheduler, step and RNG states).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from imaginegym.training.checkpoint import load_checkpoint, save_checkpoint
from imaginegym.training.distributed import DistributedContext
from imaginegym.validation import check_count


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 2000  # the last step; a resumed run with more steps extends the cosine schedule to them
    batch_size: int = 32  # per process: under torchrun the global batch is nproc times this
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.01  # AdamW
    warmup_steps: int = 100  # linear warm-up to lr, then cosine decay
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm
    ema_decay: float = 0.999  # EMA of the weights, which is what is exported
    use_ema: bool = True  # export (and encode with) the EMA weights; else the last weights
    log_every: int = 25  # steps between TensorBoard scalars
    image_every: int = 500  # steps between TensorBoard image grids
    checkpoint_every: int = 250  # steps between atomic checkpoints (training resumes from the last)
    seed: int = 0  # initial weights and batches (rank r draws with seed + r)

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "image_every", "checkpoint_every"):
            check_count(name, getattr(self, name))  # steps=0 would export an untrained model
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be >= 0")
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1 or not self.grad_clip > 0 or not 0 <= self.ema_decay < 1 or self.weight_decay < 0:
            raise ValueError(f"lr={self.lr} and grad_clip={self.grad_clip} must be > 0, min_lr_ratio={self.min_lr_ratio} in [0, 1], "
                             f"ema_decay={self.ema_decay} in [0, 1), weight_decay={self.weight_decay} >= 0")


def lr_factor(step: int, config: OptimConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class TrainingLoop:
    """Runs ``objective(batch) -> (loss, metrics)`` for ``config.steps`` updates of ``model``.

    ``objective`` is an ``nn.Module`` that owns ``model`` (so DDP sees one forward per
    step, however many passes the loss makes inside). The checkpoint ``out/<name>.pt`` is
    resumed from when present.
    """

    def __init__(self, name: str, model: nn.Module, objective: nn.Module, config: OptimConfig, out: Path,
                 run_config: dict, context: DistributedContext, device: torch.device, find_unused_parameters: bool = False):
        self.name, self.model, self.config, self.out = name, model, config, Path(out)
        self.run_config, self.context, self.device = run_config, context, device
        # find_unused_parameters: some batches leave parameters out of the graph (DDP must be told)
        self.objective = DistributedDataParallel(objective, find_unused_parameters=find_unused_parameters) if context.enabled else objective
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, config))
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        self.generator = torch.Generator().manual_seed(config.seed + context.rank)
        torch.manual_seed(config.seed + context.rank)
        self.step = 0
        self.resumed_config: dict = {}  # the run configuration saved in the checkpoint resumed from
        self.checkpoint_path = self.out / f"{name}.pt"
        if self.checkpoint_path.exists():
            self._resume()

    def _resume(self) -> None:
        state, self.resumed_config = load_checkpoint(self.checkpoint_path, self.device)
        self.model.load_state_dict(state["model"])
        if state.get("initial"):  # `save_initial_checkpoint`: trained weights to start from, with a fresh optimizer and EMA
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.config.ema_decay), use_buffers=True)
            return
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"][self.context.rank % len(state["torch_rng"])])
        self.step = int(state["step"])

    def check_replicas(self) -> float:
        """Max difference of the weights between DDP ranks (0.0 alone); raises if they diverged."""
        if not self.context.enabled:
            return 0.0
        flat = torch.cat([p.detach().flatten().float().cpu() for p in self.model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(self.context.world_size)]
        torch.distributed.all_gather(gathered, flat)
        diff = max(float((g - flat).abs().max()) for g in gathered)
        if diff > 0:
            raise RuntimeError(f"DDP replicas of {self.name} diverged by {diff:.3g} at step {self.step}")
        return diff

    def save(self) -> None:
        diff = self.check_replicas()
        if self.context.enabled and self.context.is_main:
            tqdm.write(f"{self.name} step {self.step}: {self.context.world_size} replicas identical (max diff {diff})")
        rng = torch.get_rng_state()
        if self.context.enabled:
            gathered = [torch.empty_like(rng) for _ in range(self.context.world_size)]
            torch.distributed.all_gather(gathered, rng)
        else:
            gathered = [rng]
        if not self.context.is_main:
            return
        state = {
            "model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "step": self.step, "data_rng": self.generator.get_state(),
            "torch_rng": gathered,
        }
        save_checkpoint(self.checkpoint_path, state, {**self.run_config, "optim": asdict(self.config)})

    def run(self, next_batch: Callable[[torch.Generator, int], dict], on_image: Callable[[SummaryWriter, int, nn.Module], None] | None = None) -> nn.Module:
        """Train until ``config.steps``; ``next_batch(generator, step)`` draws a batch.

        Returns the EMA model, or the model itself with ``use_ema=False``."""
        c = self.config
        writer = SummaryWriter(self.out / "tensorboard" / self.name) if self.context.is_main else None
        bar = tqdm(total=c.steps, initial=self.step, desc=f"train {self.name}", disable=not self.context.is_main, dynamic_ncols=True)
        self.model.train()
        while self.step < c.steps:
            batch = {k: v.to(self.device) for k, v in next_batch(self.generator, self.step).items()}
            loss, metrics = self.objective(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.name} loss is {loss.item()} at step {self.step}: lower --lr or check the data for NaN")
            self.optimizer.step()
            self.scheduler.step()
            self.ema.update_parameters(self.model)
            self.step += 1
            bar.update(1)
            if writer and (self.step % c.log_every == 0 or self.step == c.steps):
                for key, value in metrics.items():
                    writer.add_scalar(f"{self.name}/{key}", float(value), self.step)
                writer.add_scalar(f"{self.name}/grad_norm", float(grad_norm), self.step)
                writer.add_scalar(f"{self.name}/lr", self.scheduler.get_last_lr()[0], self.step)
                bar.set_postfix({k: f"{float(v):.4g}" for k, v in metrics.items()})
            if writer and on_image and (self.step % c.image_every == 0 or self.step == c.steps):
                on_image(writer, self.step, self.ema.module)
            if self.step % c.checkpoint_every == 0 and self.step < c.steps:
                self.save()
        bar.close()
        self.save()  # also records this call's settings (e.g. use_ema) when no step was left to take
        if writer:
            writer.close()
        return self.ema.module if c.use_ema else self.model
