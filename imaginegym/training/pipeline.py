"""The whole world-model recipe: tokenizer -> encode the dataset once -> dynamics -> export.

Every stage resumes: a finished stage is skipped, an interrupted one continues from its
checkpoint. The result is ``out/world_model.safetensors`` (see ``WorldModel.save``).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from imaginegym.data.atomic import write_json_atomic
from imaginegym.data.store import EpisodeDataset
from imaginegym.data.spaces import space_to_json
from imaginegym.models.dynamics import DynamicsConfig
from imaginegym.models.shortcut import ShortcutConfig
from imaginegym.models.tokenizer import TokenizerConfig, make_tokenizer
from imaginegym.training.checkpoint import load_checkpoint, save_initial_checkpoint
from imaginegym.training.distributed import init_distributed, training_device
from imaginegym.training.dynamics_trainer import BatchLengths, train_dynamics
from imaginegym.training.latents import LatentEpisodes, encode_dataset, latents_key, read_latents_key
from imaginegym.training.loop import OptimConfig
from imaginegym.training.tokenizer_trainer import check_tokenizer_fits, train_tokenizer
from imaginegym.world_model import EnvSpec, WorldModel

START_CONTEXTS = 16
RUN_FILE = "run.json"  # the dataset a run directory trains on
RUN_OUTPUTS = ("tokenizer.pt", "latents.safetensors", "dynamics.pt", "world_model.safetensors", "tensorboard", "eval", RUN_FILE)


def dynamics_config_for(dataset: EpisodeDataset, tokenizer: TokenizerConfig, dynamics: DynamicsConfig) -> DynamicsConfig:
    """Fill the dynamics fields that follow from the tokenizer and the dataset: its action space and its tasks.

    A dataset of runs with tasks (the DarkRoom family's learning histories) gives a task-conditioned model."""
    space = dataset.action_space
    if hasattr(space, "n"):
        kind, dim = "discrete", int(space.n)
    else:
        kind, dim = "box", int(np.prod(space.shape))
    tasks = dataset.task_vectors()
    return replace(dynamics, latent_tokens=tokenizer.latent_tokens, latent_dim=tokenizer.token_dim, action_kind=kind, action_dim=dim,
                   task_dim=0 if tasks is None else tasks.shape[1])


def dataset_tasks(dataset: EpisodeDataset) -> list | None:
    """The distinct tasks of a dataset's runs, in the order they first appear (None: no tasks)."""
    tasks = {}
    for shard in dataset.shards:
        if shard.run_task is not None:
            tasks.setdefault(shard.run_task, json.loads(shard.run_task))
    return list(tasks.values()) or None


def env_kwargs_for(dataset: EpisodeDataset) -> dict:
    """The settings to remake the dataset's env with: DMC's task, frame size and action repeat (none for the DarkRoom family)."""
    kwargs = {}
    if dataset.task:
        kwargs["task"] = dataset.task
    if dataset.meta.size is not None:
        kwargs.update(size=dataset.meta.size, action_repeat=dataset.meta.action_repeat)
    return kwargs


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


def check_run(dataset: EpisodeDataset, tokenizer: TokenizerConfig, dynamics: DynamicsConfig, lengths: BatchLengths) -> DynamicsConfig:
    """Every setting checked against the data before any stage trains; returns the full dynamics config.

    Raises:
        ValueError: a setting does not fit the dataset (frame size, episode lengths, action space), naming the fix.
    """
    check_tokenizer_fits(dataset, tokenizer)
    frames = int(dataset.lengths.max()) + 1
    if dynamics.context_length > frames:
        raise ValueError(f"the dynamics' context_length={dynamics.context_length} frames exceeds the longest episode of {dataset.root} "
                         f"({frames} frames): lower context_length or collect longer episodes")
    if lengths.rollout_every and dynamics.context_length + lengths.rollout_length + 1 > frames:
        raise ValueError(f"rollout_length={lengths.rollout_length}: context_length + rollout_length = {dynamics.context_length + lengths.rollout_length} "
                         f"frames exceed every episode ({frames} frames); lower rollout_length")
    return dynamics_config_for(dataset, tokenizer, dynamics)


def dataset_identity(dataset: EpisodeDataset) -> dict:
    """Where a dataset lives and what it holds (env, task, spaces, size, action repeat): what a run directory trains on."""
    return {"path": str(dataset.root.resolve()), **dataset.meta.to_json()}


def _describe(identity: dict) -> str:
    return f"{identity['path']} ({identity.get('task') or identity.get('env_id', '?')}, {identity.get('size', '?')} px)"


def claim_run_dir(out: Path, dataset: EpisodeDataset, restart: bool = False) -> None:
    """Record in ``out/run.json`` the dataset a run trains on; refuse a directory holding a run on another dataset.

    A run continues (more steps, a grown dataset) only on its own dataset: on another one, its checkpoints would
    resume, and the exported model would carry the new task's name with weights trained on the old data.

    Args:
        restart: start over: delete the other run's checkpoints, latents, logs and model in ``out`` first.

    Raises:
        ValueError: ``out`` holds a run on another dataset and ``restart`` is False.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a run directory: choose another path")
    identity = dataset_identity(dataset)
    recorded = None
    if (out / RUN_FILE).is_file():
        recorded = json.loads((out / RUN_FILE).read_text())["dataset"]
    elif (out / "tokenizer.pt").is_file():  # a run from before run.json: its tokenizer names its dataset
        recorded = {"path": str(Path(load_checkpoint(out / "tokenizer.pt")[1]["data"]).resolve())}
    if recorded is not None and any(recorded[key] != identity[key] for key in recorded):
        if not restart:
            raise ValueError(
                f"{out} holds a run on the dataset {_describe(recorded)}, not on {_describe(identity)}: choose another output "
                f"directory, train on the run's own dataset, or start over in {out} (restart=True, --restart), which deletes that run"
            )
        for name in RUN_OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_FILE, {"dataset": identity})


def ensure_latents(out: Path, data: str | Path, tokenizer: TokenizerConfig, device: torch.device) -> Path:
    """``out/latents.safetensors``, encoded again when the dataset's episodes or the tokenizer's weights changed since."""
    path = out / "latents.safetensors"
    module = load_weights(out / "tokenizer.pt", make_tokenizer(tokenizer))
    dataset = EpisodeDataset(data)
    key = latents_key(dataset, module)
    if path.exists():
        old = read_latents_key(path)
        if old == key:
            return path
        changed = [part for part in ("dataset", "tokenizer") if (old or {}).get(part) != key[part]]
        print(f"{path}: the {' and the '.join(changed)} changed since it was encoded; encoding again")
    return encode_dataset(module.to(device), dataset, path, device, key)


def check_dynamics_latents(out: Path, latents: Path) -> None:
    """Refuse to export dynamics trained in another tokenizer's latent space; warn when they missed new episodes."""
    trained_on = load_checkpoint(out / "dynamics.pt")[1].get("latents")
    if trained_on is None:  # a run from before latents were keyed
        return
    current = read_latents_key(latents)
    if trained_on["tokenizer"] != current["tokenizer"]:
        raise ValueError(
            f"{out / 'dynamics.pt'} was trained on the latents of an earlier tokenizer, which has trained on since: its predictions "
            "would not match the exported tokenizer. Raise the dynamics steps to train it on the new latents, or start over (--restart)"
        )
    if trained_on["dataset"] != current["dataset"]:
        warnings.warn(
            f"{out / 'dynamics.pt'} finished its steps before the dataset grew: it has not trained on the new episodes. "
            "Raise the dynamics steps to train on them.", stacklevel=2,
        )


def export_world_model(out: Path, data: str | Path, tokenizer: TokenizerConfig, dynamics: DynamicsConfig) -> Path:
    dataset = EpisodeDataset(data)
    check_dynamics_latents(out, out / "latents.safetensors")
    episodes = LatentEpisodes(out / "latents.safetensors")
    terminates = any(bool(episodes.read(i, "terminated").any()) for i in range(len(episodes)))
    # A world of discrete or vector observations whose episodes all start alike (the DarkRoom family) starts its imagined
    # episodes from that observation alone. Pixel worlds keep their context: small frames of different reset states can
    # look alike, and their models read velocities off several frames.
    first = dataset.read(0, "frames", 0, 1)
    same_start = tokenizer.kind in ("mlp", "embedding") and all(
        np.array_equal(dataset.read(i, "frames", 0, 1), first) for i in range(1, len(dataset)))
    model = WorldModel(tokenizer, dynamics, EnvSpec(
        env_id=dataset.env_id, task=dataset.task,
        observation_space=space_to_json(dataset.observation_space), action_space=space_to_json(dataset.action_space),
        env_kwargs=env_kwargs_for(dataset), max_episode_steps=int(dataset.lengths.max()), tasks=dataset_tasks(dataset),
        terminates=terminates, start_context=1 if same_start else None,
    ))
    load_weights(out / "tokenizer.pt", model.tokenizer)
    load_weights(out / "dynamics.pt", model.dynamics)
    model.start_frames, model.start_actions = start_contexts(dataset, 1 if same_start else dynamics.context_length - 1)
    return model.save(out / "world_model.safetensors")


def train_world_model(data: str, out: str, tokenizer: TokenizerConfig, tokenizer_optim: OptimConfig | None, dynamics: DynamicsConfig,
                      dynamics_optim: OptimConfig, shortcut: ShortcutConfig = ShortcutConfig(), lengths: BatchLengths = BatchLengths(),
                      device: str = "auto", require_lpips: bool = False, restart: bool = False, init_from: str | Path | None = None,
                      context_length: int | None = None) -> Path:
    """Tokenizer (skipped when ``tokenizer_optim`` is None: OUT has one), latents, dynamics, export.

    Every setting is checked against the dataset first (`check_run`), and OUT must hold no run on another
    dataset (`claim_run_dir`; ``restart`` deletes such a run). Rerun on a grown dataset, the stages continue:
    latents are encoded again whenever the dataset or the tokenizer changed.

    Args:
        init_from: a trained world model (bundled name, run directory or .safetensors) to start from instead of
            random weights: its tokenizer and dynamics configs replace ``tokenizer`` and ``dynamics`` (the
            architecture is the model's), and a new run in OUT starts from its weights (`save_initial_checkpoint`).
            With ``tokenizer_optim`` None its tokenizer stays as it is, so its latents keep their meaning (a policy
            that observes them runs unchanged in the new model).
        context_length: with ``init_from``, the frames its dynamics attends to instead of its own. No weight
            depends on it (positions are rotary), so a continued run can lengthen the model's memory, e.g. to
            cover the cart of DMC cartpole leaving the view for ~20 frames in a swing-up.
    """
    out_dir = Path(out)
    dev = training_device(device)
    dataset = EpisodeDataset(data)
    initial = None
    if init_from is not None:
        initial = WorldModel.load(init_from, device="cpu")
        if initial.env_spec.task != dataset.task or initial.observation_space != dataset.observation_space \
                or initial.action_space != dataset.action_space:
            raise ValueError(f"init_from={init_from} imagines {initial.env_spec.task or initial.env_spec.env_id} ({initial.observation_space}, "
                             f"actions {initial.action_space}), but --data {data} holds {dataset.task or dataset.env_id} episodes "
                             f"({dataset.observation_space}, actions {dataset.action_space}): start from a model of the same env")
        tokenizer, dynamics = initial.tokenizer_config, initial.dynamics_config
        if context_length is not None:
            dynamics = replace(dynamics, context_length=context_length)
    elif context_length is not None:
        raise ValueError(f"context_length={context_length} changes the context of the model given by init_from, but none was given: "
                         "set the new model's context with its dynamics config (--dynamics-context-length)")
    dynamics = check_run(dataset, tokenizer, dynamics, lengths)
    if initial is not None and replace(initial.dynamics_config, context_length=dynamics.context_length) != dynamics:
        raise ValueError(f"init_from={init_from}: its dynamics ({initial.dynamics_config}) does not fit --data {data} ({dynamics})")
    context = init_distributed(dev)
    if context.is_main:
        claim_run_dir(out_dir, dataset, restart)
    if initial is not None and context.is_main:
        origin = {"initialized_from": str(init_from), "data": str(Path(data).resolve())}
        if not (out_dir / "tokenizer.pt").is_file():
            save_initial_checkpoint(out_dir / "tokenizer.pt", initial.tokenizer, {"tokenizer": asdict(tokenizer), **origin})
        if not (out_dir / "dynamics.pt").is_file():
            save_initial_checkpoint(out_dir / "dynamics.pt", initial.dynamics, {"dynamics": asdict(dynamics), **origin})
    if tokenizer_optim is None and not (out_dir / "tokenizer.pt").is_file():
        raise FileNotFoundError(f"{out_dir / 'tokenizer.pt'} does not exist: train the tokenizer first (`imaginegym train tokenizer --out {out}`)"
                                " or train both (`imaginegym train world-model`)")
    if context.enabled:
        torch.distributed.barrier()
    if tokenizer_optim is not None:
        train_tokenizer(data, out, tokenizer, tokenizer_optim, device, require_lpips=require_lpips)
    latents = out_dir / "latents.safetensors"
    if context.is_main:
        ensure_latents(out_dir, data, tokenizer, dev)
    if context.enabled:
        torch.distributed.barrier()
    train_dynamics(latents, out, dynamics, dynamics_optim, shortcut, lengths, device)
    if context.is_main:
        return export_world_model(out_dir, data, tokenizer, dynamics)
    return out_dir / "world_model.safetensors"
