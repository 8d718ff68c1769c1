"""Train a tokenizer on the frames of an episode dataset (MSE + 0.2 LPIPS when available)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imaginegym.data.store import EpisodeDataset, InMemoryEpisodes
from imaginegym.metrics import load_lpips
from imaginegym.models.tokenizer import TokenizerConfig, make_tokenizer, pixels_to_float
from imaginegym.training.distributed import init_distributed, training_device
from imaginegym.training.loop import OptimConfig, TrainingLoop


class TokenizerObjective(nn.Module):
    def __init__(self, tokenizer: nn.Module, lpips: nn.Module | None):
        super().__init__()
        self.tokenizer = tokenizer
        self.lpips = lpips
        self.step = 0

    def forward(self, batch: dict):
        self.step += 1
        return self.tokenizer.loss(batch["frames"], step=self.step, lpips=self.lpips)


BACKGROUND_FRAMES = 2048  # random training frames whose per-pixel median is a "median" background
FRAMES_IN_MEMORY_BYTES = 8 * 2**30  # datasets up to this size are read into memory once (see InMemoryEpisodes)


def sample_frames(dataset: EpisodeDataset | InMemoryEpisodes, batch_size: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Random windows of ``frames`` consecutive frames -> uint8 (B, frames, H, W, 3)."""
    counts = dataset.lengths + 1 - frames + 1  # window starts per episode
    episodes = torch.multinomial(torch.from_numpy(counts.astype(np.float64)), batch_size, replacement=True, generator=generator)
    out = []
    for episode in episodes.tolist():
        start = int(torch.randint(int(counts[episode]), (1,), generator=generator))
        out.append(torch.from_numpy(dataset.read(episode, "frames", start, start + frames)))
    return torch.stack(out)


def image_grid(real: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) pairs -> float (3, 2H, N*W): real above, reconstruction below."""
    rows = torch.cat([pixels_to_float(real), pixels_to_float(recon)], dim=-2)  # (N, 3, 2H, W)
    return torch.cat(list(rows), dim=-1)


def check_tokenizer_fits(dataset: EpisodeDataset, tokenizer: TokenizerConfig) -> None:
    """Raise a ValueError naming the fix when the tokenizer cannot take the dataset's observations."""
    space = dataset.observation_space
    if tokenizer.kind in ("cnn", "transformer"):
        if len(space.shape) != 3:
            raise ValueError(f"dataset {dataset.root} observes {space}, not image frames: use --tokenizer-kind embedding "
                             "(discrete observations) or mlp (vectors)")
        size = space.shape[0]
        if size != tokenizer.image_size:
            raise ValueError(f"dataset {dataset.root} has {size}x{size} frames but the tokenizer's image_size is {tokenizer.image_size}: set it to {size}")
        return
    if len(space.shape) != 1 or space.shape[0] != tokenizer.obs_dim:
        raise ValueError(f"dataset {dataset.root} observes {space}; the {tokenizer.kind} tokenizer takes vectors of obs_dim={tokenizer.obs_dim}: "
                         f"set --tokenizer-obs-dim {int(np.prod(space.shape))}")
    if tokenizer.kind == "embedding":
        values = getattr(space, "nvec", None)
        if values is None:
            raise ValueError(f"dataset {dataset.root} observes {space}: the embedding tokenizer takes discrete (MultiDiscrete) "
                             "observations; use --tokenizer-kind mlp for float vectors")
        if int(np.max(values)) > tokenizer.num_values:
            raise ValueError(f"dataset {dataset.root} observes values up to {int(np.max(values)) - 1} but the tokenizer's "
                             f"num_values is {tokenizer.num_values}: set --tokenizer-num-values {int(np.max(values))}")


def train_tokenizer(data: str, out: str, tokenizer: TokenizerConfig, optim: OptimConfig, device: str = "auto",
                    frames_per_sample: int = 1, require_lpips: bool = False,
                    frames_in_memory_bytes: int = FRAMES_IN_MEMORY_BYTES) -> nn.Module:
    """Train (or resume) ``out/tokenizer.pt``; returns the EMA tokenizer.

    A dataset whose frames take at most ``frames_in_memory_bytes`` is read into memory
    first; the batches are the same either way."""
    dev = training_device(device)
    context = init_distributed(dev)
    dataset = EpisodeDataset(data)
    check_tokenizer_fits(dataset, tokenizer)
    torch.manual_seed(optim.seed)  # the same initial weights on every rank and every run
    model = make_tokenizer(tokenizer).to(dev)
    if tokenizer.kind == "cnn" and tokenizer.background == "median":  # before the EMA copies the model
        model.set_background(sample_frames(dataset, BACKGROUND_FRAMES, 1, torch.Generator().manual_seed(optim.seed)))
    pixels = tokenizer.kind in ("cnn", "transformer")
    lpips = load_lpips(required=require_lpips, device=dev) if pixels else None  # a perceptual loss is for images only
    objective = TokenizerObjective(model, lpips).to(dev)
    loop = TrainingLoop("tokenizer", model, objective, optim, Path(out), {"tokenizer": asdict(tokenizer), "data": str(Path(data).resolve())}, context, dev)
    objective.step = loop.step
    source = dataset
    if loop.step < optim.steps and InMemoryEpisodes.nbytes(dataset) <= frames_in_memory_bytes:
        source = InMemoryEpisodes(dataset, ("frames",), progress=context.is_main)
    preview = sample_frames(source, 8, 1, torch.Generator().manual_seed(1))[:, 0]

    def on_image(writer, step, ema):
        if not pixels:  # no images to show for vectors and discrete observations
            return
        with torch.no_grad():
            recon = ema.to_observation(ema.decode(ema.encode(preview.to(dev)))).cpu()
        writer.add_image("tokenizer/reconstruction", image_grid(preview, recon), step)

    return loop.run(lambda g, step: {"frames": sample_frames(source, optim.batch_size, frames_per_sample, g)}, on_image)
