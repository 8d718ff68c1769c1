"""Train the dynamics model on latent windows (diffusion forcing + shortcut forcing).

Batches alternate lengths: many short windows of ``context_length`` frames and, every
``long_every`` steps, fewer long ones; the attention window stays ``context_length``
frames, as in imagination. With ``rollout_every``, every n-th batch is instead a batch of
rollout windows (``shortcut.rollout_forcing_loss``): ``context_length`` real frames, then
``rollout_length`` frames the model imagines itself and learns to predict from its own
imagination.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imaginegym.data.windows import WindowDataset
from imaginegym.models.dynamics import Dynamics, DynamicsConfig
from imaginegym.models.shortcut import ShortcutConfig, rollout_forcing_loss, shortcut_forcing_loss
from imaginegym.training.distributed import init_distributed, training_device
from imaginegym.training.latents import LatentEpisodes
from imaginegym.training.loop import OptimConfig, TrainingLoop


@dataclass(frozen=True)
class BatchLengths:
    long_every: int = 8  # every n-th batch is long
    long_factor: int = 2  # long windows are this many times context_length, with batch_size / long_factor
    rollout_every: int = 0  # every n-th batch holds rollout windows (0: never), with batch_size / long_factor
    rollout_length: int = 8  # frames each rollout window imagines after its context_length real frames (the most)
    rollout_min_length: int = 0  # > 0: each rollout batch draws its length uniformly from [this, rollout_length]
    rollout_episode_start_fraction: float = 0.0  # the share of rollout batches whose windows begin at their episode's first frame (imagination from a reset)
    rollout_min_context: int = 0  # > 0: those batches draw their real frames uniformly from [this, context_length] (a reset shows one frame)
    rollout_start: int = 0  # the first step that may draw rollout windows (the model's imagination is noise at first)
    recent_episodes: int = 0  # > 0: recent_fraction of every batch's windows come from the dataset's newest this many episodes
    recent_fraction: float = 0.5  # (with recent_episodes) the share of each batch from them, so fresh data is not 2% of it

    def __post_init__(self):
        if self.long_every < 0 or self.rollout_every < 0 or self.rollout_start < 0:
            raise ValueError(f"long_every={self.long_every}, rollout_every={self.rollout_every} and rollout_start={self.rollout_start} "
                             "must be >= 0 (every: 0 is never)")
        if self.long_factor < 1 or self.rollout_length < 1:
            raise ValueError(f"long_factor={self.long_factor} and rollout_length={self.rollout_length} must be >= 1")
        if self.recent_episodes < 0 or not 0 <= self.recent_fraction <= 1:
            raise ValueError(f"recent_episodes={self.recent_episodes} must be >= 0 (0: every window uniform over the data) and "
                             f"recent_fraction={self.recent_fraction} must lie in [0, 1]")
        if self.rollout_min_context < 0 or not 0 <= self.rollout_episode_start_fraction <= 1:
            raise ValueError(f"rollout_min_context={self.rollout_min_context} must be >= 0 (0: every rollout window has context_length "
                             f"real frames) and rollout_episode_start_fraction={self.rollout_episode_start_fraction} must lie in [0, 1]")
        if not 0 <= self.rollout_min_length <= self.rollout_length:
            raise ValueError(f"rollout_min_length={self.rollout_min_length} must lie in [0, rollout_length={self.rollout_length}] "
                             "(0: every rollout window imagines rollout_length frames)")


class DynamicsObjective(nn.Module):
    def __init__(self, dynamics: Dynamics, shortcut: ShortcutConfig):
        super().__init__()
        self.dynamics, self.shortcut = dynamics, shortcut

    def forward(self, batch: dict):
        if "imagine_from" in batch:
            return rollout_forcing_loss(self.dynamics, batch, self.shortcut)
        return shortcut_forcing_loss(self.dynamics, batch, self.shortcut)


def sample_windows(windows: WindowDataset, batch_size: int, length: int, generator: torch.Generator,
                   recent_episodes: int = 0, recent_fraction: float = 0.0, from_episode_start: bool = False) -> dict[str, torch.Tensor]:
    """Random windows of ``length`` frames (episodes weighted by their number of windows). With
    ``recent_episodes``, ``recent_fraction`` of them (rounded) come from the newest
    ``recent_episodes`` episodes alone. ``from_episode_start``: each begins at its episode's first frame."""
    counts = windows.num_frames - length + 1
    weights = torch.from_numpy(np.maximum(counts, 0).astype(np.float64))
    recent = round(batch_size * recent_fraction) if 0 < recent_episodes < len(counts) else 0
    if recent and weights[-recent_episodes:].sum() == 0:
        recent = 0  # no window of this length fits in the newest episodes: uniform over all
    episodes = torch.multinomial(weights, batch_size - recent, replacement=True, generator=generator)
    if recent:
        newest = torch.multinomial(weights[-recent_episodes:], recent, replacement=True, generator=generator)
        episodes = torch.cat([episodes, newest + len(counts) - recent_episodes])
    items = []
    for episode in episodes.tolist():
        start = 0 if from_episode_start else int(torch.randint(int(counts[episode]), (1,), generator=generator))
        items.append(windows[(episode, start, length)])
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    batch["latents"] = batch.pop("frames")
    tasks = getattr(windows.episodes, "tasks", None)
    if tasks is not None:  # a task-conditioned model: each window's episode's task
        batch["task"] = torch.from_numpy(tasks[episodes.numpy()])
    return batch


def train_dynamics(latents: str | Path, out: str | Path, dynamics: DynamicsConfig, optim: OptimConfig,
                   shortcut: ShortcutConfig = ShortcutConfig(), lengths: BatchLengths = BatchLengths(), device: str = "auto") -> Dynamics:
    """Train (or resume) ``out/dynamics.pt`` on an encoded dataset; returns the EMA dynamics."""
    dev = training_device(device)
    context = init_distributed(dev)
    episodes = LatentEpisodes(latents)
    windows = WindowDataset(episodes, dynamics.context_length, frames_key="latents")
    torch.manual_seed(optim.seed)  # the same initial weights on every rank and every run
    model = Dynamics(dynamics)
    model.set_latent_statistics(torch.cat([torch.from_numpy(episodes.read(i, "latents")) for i in range(len(episodes))]))
    has_tasks = episodes.tasks is not None
    if has_tasks != bool(dynamics.task_dim) or (has_tasks and episodes.tasks.shape[1] != dynamics.task_dim):
        found = f"tasks of {episodes.tasks.shape[1]} numbers" if has_tasks else "no tasks"
        raise ValueError(f"{latents} holds episodes with {found} but the dynamics has task_dim={dynamics.task_dim}: "
                         "build its config with `pipeline.check_run`, which reads task_dim from the dataset")
    if has_tasks:
        model.set_task_statistics(torch.from_numpy(episodes.tasks))
    model = model.to(dev)
    loop = TrainingLoop(
        "dynamics", model, DynamicsObjective(model, shortcut).to(dev), optim, Path(out),
        {"dynamics": asdict(dynamics), "shortcut": asdict(shortcut), "lengths": asdict(lengths), "latents": episodes.key}, context, dev,
        find_unused_parameters=dynamics.mark_imagined,  # real windows leave the imagined flag out
    )
    if loop.step >= optim.steps and "latents" in loop.resumed_config:
        loop.run_config["latents"] = loop.resumed_config["latents"]  # no step left to take: it has not trained on these latents
    long_len = min(dynamics.context_length * lengths.long_factor, int(windows.num_frames.min()))

    rollout_len = dynamics.context_length + lengths.rollout_length
    if lengths.rollout_every and rollout_len + 1 > int(windows.num_frames.max()):
        raise ValueError(f"rollout_length={lengths.rollout_length}: context_length + rollout_length = {rollout_len} frames "
                         f"exceed every episode ({int(windows.num_frames.max())} frames); lower rollout_length")

    recency = {"recent_episodes": lengths.recent_episodes, "recent_fraction": lengths.recent_fraction}

    def next_batch(generator: torch.Generator, step: int) -> dict:
        if lengths.rollout_every and step >= lengths.rollout_start and step % lengths.rollout_every == lengths.rollout_every - 1:
            # Short real contexts only from resets: one frame mid-episode hides the velocity, and a model taught to
            # continue it learns the mean of all continuations (a fading pole), not a sharper start.
            from_reset = bool(lengths.rollout_episode_start_fraction and torch.rand((), generator=generator) < lengths.rollout_episode_start_fraction)
            real = dynamics.context_length
            if from_reset and lengths.rollout_min_context:
                real = int(torch.randint(min(lengths.rollout_min_context, real), real + 1, (1,), generator=generator))
            imagined = lengths.rollout_length
            if lengths.rollout_min_length:
                imagined = int(torch.randint(lengths.rollout_min_length, lengths.rollout_length + 1, (1,), generator=generator))
            # an episode's first frame (no action led into it) may only be real context: start at frame 0 or later
            batch = sample_windows(windows, max(1, optim.batch_size // lengths.long_factor), real + imagined, generator,
                                   from_episode_start=from_reset, **recency)
            batch["imagine_from"] = torch.tensor(real)
            return batch
        if lengths.long_every and step % lengths.long_every == lengths.long_every - 1:
            return sample_windows(windows, max(1, optim.batch_size // lengths.long_factor), long_len, generator, **recency)
        return sample_windows(windows, optim.batch_size, dynamics.context_length, generator, **recency)

    return loop.run(next_batch)
