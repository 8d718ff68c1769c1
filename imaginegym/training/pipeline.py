"""The whole world-model recipe: tokenizer -> encode the dataset once -> dynamics -> export.

Every stage resumes: a finished stage is skipped, an interrupted one continues from its
checkpoint. The result is ``out/world_model.safetensors`` (see ``WorldModel.save``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from imaginegym.data.store import EpisodeDataset
from imaginegym.data.spaces import space_to_json
from imaginegym.models.dynamics import DynamicsConfig
from imaginegym.models.shortcut import ShortcutConfig
from imaginegym.models.tokenizer import TokenizerConfig, make_tokenizer
from imaginegym.training.checkpoint import load_checkpoint
from imaginegym.training.distributed import init_distributed, training_device
from imaginegym.training.dynamics_trainer import BatchLengths, train_dynamics
from imaginegym.training.latents import encode_dataset
from imaginegym.training.loop import OptimConfig
from imaginegym.training.tokenizer_trainer import train_tokenizer
from imaginegym.world_model import EnvSpec, WorldModel

START_CONTEXTS = 16


def dynamics_config_for(dataset: EpisodeDataset, tokenizer: TokenizerConfig, dynamics: DynamicsConfig) -> DynamicsConfig:
    """Fill the dynamics fields that follow from the tokenizer and the dataset's action space."""
    space = dataset.action_space
    if hasattr(space, "n"):
        kind, dim = "discrete", int(space.n)
    else:
        kind, dim = "box", int(np.prod(space.shape))
    return replace(dynamics, latent_tokens=tokenizer.latent_tokens, latent_dim=tokenizer.token_dim, action_kind=kind, action_dim=dim)


def load_weights(path: Path, module: torch.nn.Module) -> torch.nn.Module:
    """A training checkpoint's weights into ``module``: the EMA ones unless it was run with use_ema=False.

    Short CPU runs still improve fast at their end, where an EMA lags far behind (a
    tokenizer: 30 dB against 42 dB for its last weights), hence the choice.
    """
    state, config = load_checkpoint(path)
    if config.get("optim", {}).get("use_ema", True):
        module.load_state_dict({k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")})
    else:
        module.load_state_dict(state["model"])
    return module


def load_tokenizer(path: Path) -> torch.nn.Module:
    """The tokenizer of a training checkpoint ``tokenizer.pt``, built from its config, with ``load_weights``' weights."""
    config = TokenizerConfig(**load_checkpoint(path)[1]["tokenizer"])  # JSON lists become tuples in the config itself
    return load_weights(path, make_tokenizer(config))


def start_contexts(dataset: EpisodeDataset, frames: int, count: int = START_CONTEXTS, seed: int = 0):
    """The first ``frames`` frames (and the actions between them) of ``count`` episodes."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(count, len(dataset)), replace=False)
    frames_out = np.stack([dataset.read(int(i), "frames", 0, frames) for i in picks])
    actions_out = np.stack([dataset.read(int(i), "actions", 0, frames - 1) for i in picks])
    return torch.from_numpy(frames_out), torch.from_numpy(actions_out)


def export_world_model(out: Path, data: str | Path, tokenizer: TokenizerConfig, dynamics: DynamicsConfig) -> Path:
    dataset = EpisodeDataset(data)
    model = WorldModel(tokenizer, dynamics, EnvSpec(
        env_id=dataset.env_id, task=dataset.task,
        observation_space=space_to_json(dataset.observation_space), action_space=space_to_json(dataset.action_space),
        env_kwargs={"task": dataset.task, "size": dataset.meta.size, "action_repeat": dataset.meta.action_repeat},
        max_episode_steps=int(dataset.lengths.max()),
    ))
    load_weights(out / "tokenizer.pt", model.tokenizer)
    load_weights(out / "dynamics.pt", model.dynamics)
    model.start_frames, model.start_actions = start_contexts(dataset, dynamics.context_length - 1)
    return model.save(out / "world_model.safetensors")


def train_world_model(data: str, out: str, tokenizer: TokenizerConfig, tokenizer_optim: OptimConfig | None, dynamics: DynamicsConfig,
                      dynamics_optim: OptimConfig, shortcut: ShortcutConfig = ShortcutConfig(), lengths: BatchLengths = BatchLengths(),
                      device: str = "auto", require_lpips: bool = False) -> Path:
    """Tokenizer (skipped when ``tokenizer_optim`` is None: OUT has one), latents, dynamics, export."""
    out_dir = Path(out)
    if tokenizer_optim is not None:
        train_tokenizer(data, out, tokenizer, tokenizer_optim, device, require_lpips=require_lpips)
    dev = training_device(device)
    context = init_distributed(dev)
    latents = out_dir / "latents.safetensors"
    if context.is_main and not latents.exists():
        encode_dataset(load_weights(out_dir / "tokenizer.pt", make_tokenizer(tokenizer)).to(dev), data, latents, dev)
    if context.enabled:
        torch.distributed.barrier()
    dynamics = dynamics_config_for(EpisodeDataset(data), tokenizer, dynamics)
    train_dynamics(latents, out, dynamics, dynamics_optim, shortcut, lengths, device)
    if context.is_main:
        return export_world_model(out_dir, data, tokenizer, dynamics)
    return out_dir / "world_model.safetensors"
