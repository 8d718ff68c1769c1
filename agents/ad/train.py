"""Train AD or Compressed AD on learning histories, resumably.

    imaginegym ad train --model ad --data data/darkroom-histories --out runs/darkroom-ad
    imaginegym ad train --model compressed-ad --data data/darkroom-histories --out runs/darkroom-cad

Samples: a run and a start position drawn uniformly over the whole run, so early, middle and
late learning are all trained on.
- AD: ``context`` consecutive transitions; the action is predicted at every position.
- Compressed AD: windows start at a segment boundary b of their run, b spread log-uniformly
  over the whole run, so every compression depth from 0 to the run's length / ``segment`` is
  trained (the agent meets them all as it streams from an empty memory through a learning
  history), the early ones, where the source explores and the latents must remember where,
  more often. The latents at boundary b - ``burn_in`` - ``grad_depth`` come from a store of
  every run's latents at every boundary, folded from the run's start by the model itself and
  refreshed every ``latent_refresh`` steps (R2D2's stored recurrent states); the next
  ``burn_in`` segments are folded without gradient by the current weights, the last
  ``grad_depth`` with it, and the decoder predicts the ``window`` transitions that follow.
  Accuracy is logged per depth range.

Writes OUT/checkpoint.pt (state dicts, `torch.load(weights_only=True)`), OUT/tensorboard,
and OUT/agent (the `InContextAgent`: weights as safetensors and a JSON config).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from imaginegym.agents.ad.model import ModelConfig, build_model
from imaginegym.validation import check_count

CHECKPOINT_FILE, AGENT_DIR = "checkpoint.pt", "agent"


@dataclass(frozen=True)
class TrainConfig:
    """One `imaginegym ad train` run (with the model's `ModelConfig`); each field is one flag."""

    data: str = ""  # learning histories (`imaginegym ad histories --out DATA`)
    steps: int = 8_000  # optimizer steps (a resumed run continues to this)
    batch_size: int = 32  # sequences per step
    lr: float = 6e-4  # AdamW peak learning rate (linear warm-up, cosine decay to a tenth)
    warmup: int = 500  # warm-up steps
    weight_decay: float = 0.01  # AdamW weight decay
    label_smoothing: float = 0.0  # Discrete actions: cross-entropy label smoothing
    grad_depth: int = 3  # Compressed AD: foldings the gradient flows through (the latest ones before the window)
    burn_in: int = 4  # Compressed AD: foldings before those, without gradient, by the current weights (from the stored latents)
    latent_refresh: int = 100  # Compressed AD: steps between refreshes of the stored latents of every run
    checkpoint_every: int = 1000  # steps between resumable checkpoints
    eval_every: int = 2000  # steps between in-context evaluations on held-out tasks (0: never)
    eval_episodes: int = 30  # in-context episodes per held-out task at those evaluations
    eval_tasks: int = 16  # held-out tasks at those evaluations (the first of the split; 0: all)
    seed: int = 0  # sampling and initial weights
    device: str = "auto"  # cpu, cuda, cuda:N or auto
    threads: int = 0  # torch CPU threads (0: torch's default)
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every"):
            check_count(name, getattr(self, name))
        check_count("latent_refresh", self.latent_refresh)
        for name in ("warmup", "grad_depth", "burn_in", "eval_every", "eval_episodes", "eval_tasks", "threads"):
            check_count(name, getattr(self, name), 0)
        if not self.data:
            raise ValueError("data='': give the learning histories to train on (--data DIR, written by `imaginegym ad histories`)")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")


class Histories:
    """Every run of a learning-histories dataset in memory, as the model reads them.

    Per transition t of a run: ``obs[t]``, ``action[t]`` (the target) and the token inputs
    ``prev_action``, ``prev_reward``, ``prev_done`` of step t - 1 (at a run's start: no
    action, reward 0, done). Runs are concatenated; ``starts[r]`` and ``lengths[r]`` place run r.
    """

    def __init__(self, path: str | os.PathLike):
        from gymnasium import spaces

        from imaginegym.data import EpisodeDataset

        if not (Path(path) / "dataset.json").is_file():
            raise FileNotFoundError(f"no learning histories at {path}: write them with `imaginegym ad histories --out {path}`")
        with EpisodeDataset(path) as ds:
            if not ds.runs:
                raise ValueError(f"{path} holds no runs (learning histories): write them with `imaginegym ad histories --out {path}`")
            self.observation_space, self.action_space = ds.observation_space, ds.action_space
            self.env_id = ds.env_id
            obs, actions, rewards, dones, lengths, tasks = [], [], [], [], [], []
            for run in ds.runs:
                run_obs, run_actions, run_rewards, run_dones = [], [], [], []
                for position in run.positions:
                    frames = ds.read(position, "frames")
                    run_obs.append(frames[:-1])
                    run_actions.append(ds.read(position, "actions"))
                    run_rewards.append(ds.read(position, "rewards"))
                    ended = ds.read(position, "terminated") | ds.read(position, "truncated")
                    ended[-1] = True
                    run_dones.append(ended)
                obs.append(np.concatenate(run_obs)), actions.append(np.concatenate(run_actions))
                rewards.append(np.concatenate(run_rewards)), dones.append(np.concatenate(run_dones))
                lengths.append(len(actions[-1])), tasks.append(run.task)
        self.discrete = isinstance(self.action_space, spaces.Discrete)
        self.obs = np.concatenate(obs)
        self.action = np.concatenate(actions)
        self.lengths = np.asarray(lengths)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.tasks = tasks
        reward, done = np.concatenate(rewards).astype(np.float32), np.concatenate(dones)
        self.prev_reward = np.concatenate([[0.0], reward[:-1]]).astype(np.float32)
        self.prev_done = np.concatenate([[True], done[:-1]])
        if self.discrete:
            none = int(self.action_space.n)
            self.prev_action = np.concatenate([[none], self.action[:-1]]).astype(np.int64)
            self.prev_action[self.starts] = none
        else:
            flat = self.action.reshape(len(self.action), -1).astype(np.float32)
            previous = np.concatenate([np.zeros((1, flat.shape[1]), np.float32), flat[:-1]])
            self.prev_action = np.concatenate([previous, np.zeros((len(flat), 1), np.float32)], axis=1)
            self.prev_action[self.starts] = 0.0
            self.prev_action[self.starts, -1] = 1.0
        self.prev_reward[self.starts], self.prev_done[self.starts] = 0.0, True

    def __len__(self) -> int:
        return len(self.lengths)

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
        """``batch`` windows of ``length`` consecutive transitions, runs and starts uniform."""
        long_enough = np.flatnonzero(self.lengths >= length)
        if not len(long_enough):
            raise ValueError(f"no run holds {length} transitions (the longest has {self.lengths.max()}): collect longer histories "
                             "(--episodes) or train a shorter context")
        runs = rng.choice(long_enough, batch)
        offsets = rng.integers(0, self.lengths[runs] - length + 1)
        index = (self.starts[runs] + offsets)[:, None] + np.arange(length)
        return {"obs": self.obs[index], "prev_action": self.prev_action[index], "prev_reward": self.prev_reward[index],
                "prev_done": self.prev_done[index], "action": self.action[index], "run_position": offsets / self.lengths[runs]}


def to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}


def _schedule(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class LatentStore:
    """Every run's latents at every segment boundary (boundary j: after folding its first j segments), as the model
    folded them at the last `refresh`. Runs are folded together, one boundary at a time, without gradient."""

    def __init__(self, histories: Histories, segment: int):
        self.histories, self.segment = histories, segment
        self.boundaries = histories.lengths // segment + 1  # per run, boundaries 0..lengths // segment
        self.latents: torch.Tensor | None = None  # (runs, max boundaries, n_latent, d), on the CPU

    @torch.no_grad()
    def refresh(self, model, device: torch.device, chunk: int = 64) -> None:
        h, s = self.histories, self.segment
        was_training = model.training
        model.eval()
        most = int(self.boundaries.max())
        store = torch.zeros(len(h), most, model.config.n_latent, model.config.d_model)
        for first in range(0, len(h), chunk):
            runs = np.arange(first, min(first + chunk, len(h)))
            latents = model.initial(len(runs)).clone()
            store[runs, 0] = latents.cpu()
            for j in range(1, most):
                live = runs[self.boundaries[runs] > j]
                if not len(live):
                    break
                index = h.starts[live][:, None] + (j - 1) * s + np.arange(s)
                tokens = model.tokens(to_tensors(_inputs(h, index), device))
                rows = torch.as_tensor(np.searchsorted(runs, live), device=latents.device)
                latents[rows] = model.compress(latents[rows], tokens)
                store[live, j] = latents[rows].cpu()
        self.latents = store
        model.train(was_training)


def _inputs(h: Histories, index: np.ndarray) -> dict[str, np.ndarray]:
    return {"obs": h.obs[index], "prev_action": h.prev_action[index], "prev_reward": h.prev_reward[index],
            "prev_done": h.prev_done[index], "action": h.action[index]}


def _compressed_batch(model, h: Histories, rng: np.random.Generator, config: TrainConfig, device: torch.device, store: LatentStore):
    """Windows at segment boundaries b (log-uniform over each run: every depth, the early ones of exploration more
    often), latents from the store at b - burn_in - grad_depth, folded on without gradient for ``burn_in`` segments
    (so the model's current weights, not the store's older ones, made the latents it reads) and with it for
    ``grad_depth``. -> (outputs, window batch, depths)."""
    mc, g, burn = model.config, config.grad_depth, config.burn_in
    s, w = mc.segment, mc.window
    folds = burn + g
    long_enough = np.flatnonzero(h.lengths >= w)
    runs = rng.choice(long_enough, config.batch_size)
    most = (h.lengths[runs] - w) // s + 1  # boundaries a window can start at
    b = np.minimum(np.floor(np.exp(rng.uniform(0, np.log(most + 1)))).astype(np.int64) - 1, most - 1)  # log-uniform in 0..most-1
    first = np.maximum(b - folds, 0)  # the stored boundary the folds start from
    offsets = (b - folds)[:, None] * s + np.arange(folds * s + w)  # fold slots, then the window
    index = h.starts[runs][:, None] + np.maximum(offsets, 0)
    batch = to_tensors(_inputs(h, index), device)
    tokens = model.tokens(batch)
    stored = store.latents[runs, first].to(device)
    at_start = torch.as_tensor(first == 0, device=device)[:, None, None]
    latents = torch.where(at_start, model.initial(config.batch_size), stored)
    for k in range(folds):
        fold = torch.as_tensor(b - folds + k >= 0, device=device)[:, None, None]  # slot k holds a segment of this run
        if not bool(fold.any()):
            continue
        segment = tokens[:, k * s:(k + 1) * s]
        if k < burn:
            with torch.no_grad():
                latents = torch.where(fold, model.compress(latents, segment.detach()), latents)
        else:
            latents = torch.where(fold, model.compress(latents, segment), latents)
    out = model(latents, tokens[:, folds * s:])
    window = {k: v[:, folds * s:] for k, v in batch.items()}
    return out, window, b


DEPTH_BINS = (0, 1, 2, 5, 10, 20, 50, 100)


def depth_bin(depth: int) -> str:
    """The TensorBoard name of a compression depth's range, e.g. 7 -> "5-9"."""
    for low, high in zip(DEPTH_BINS, DEPTH_BINS[1:]):
        if depth < high:
            return str(low) if high == low + 1 else f"{low}-{high - 1}"
    return f"{DEPTH_BINS[-1]}+"


def batch_loss(model, histories: Histories, rng: np.random.Generator, config: TrainConfig, device: torch.device,
               store: LatentStore | None = None):
    """-> (loss, accuracy, depth) of one sampled batch (depth None for AD, else each sequence's compression depth)."""
    mc = model.config
    if mc.model == "ad":
        batch = to_tensors(histories.sample(rng, config.batch_size, mc.context), device)
        out = model(model.tokens(batch))
        depth = None
    else:
        out, batch, depth = _compressed_batch(model, histories, rng, config, device, store)
    loss = model.head.loss(out, batch["action"], config.label_smoothing).mean()
    hits = model.head.correct(out, batch["action"]).float()
    if depth is not None:
        return loss, hits.mean(), (depth, hits.mean(1).detach().cpu().numpy())
    return loss, hits.mean(), None


def train_in_context(config: TrainConfig, out: str | os.PathLike, progress: bool = True) -> Path:
    """Train (or resume) an in-context model; returns OUT/agent, the saved `InContextAgent`."""
    from torch.utils.tensorboard import SummaryWriter

    from imaginegym.agents.ad.agent import InContextAgent
    from imaginegym.training.checkpoint import load_checkpoint, save_checkpoint
    from imaginegym.world_model import resolve_device

    out = Path(out)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    histories = Histories(config.data)
    torch.manual_seed(config.seed)
    model = build_model(config.model, histories.observation_space, histories.action_space).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, rng = 0, np.random.default_rng(config.seed)
    checkpoint = out / CHECKPOINT_FILE
    if checkpoint.is_file():
        state, saved = load_checkpoint(checkpoint, device)
        if saved["model"] != asdict(config.model):
            raise ValueError(f"{out} holds a run of another model ({saved['model']}): use another --out, or delete it to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        rng = np.random.default_rng([config.seed, step])
    out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(out / "tensorboard"))
    bar = tqdm(total=config.steps, initial=step, unit="step", desc=f"train {config.model.model}", disable=not progress, dynamic_ncols=True)
    depth_hits: dict[str, list[float]] = {}
    store = LatentStore(histories, config.model.segment) if config.model.model == "compressed-ad" else None
    try:
        model.train()
        while step < config.steps:
            if store is not None and (store.latents is None or step % config.latent_refresh == 0):
                store.refresh(model, device)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * _schedule(step, config)
            loss, accuracy, depth = batch_loss(model, histories, rng, config, device, store)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            bar.update()
            if step % 50 == 0:
                writer.add_scalar("train/loss", loss.item(), step)
                writer.add_scalar("train/accuracy", accuracy.item(), step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy.item():.3f}")
            if depth is not None:
                for d, hit in zip(*depth):
                    depth_hits.setdefault(depth_bin(int(d)), []).append(float(hit))
                if step % 200 == 0:
                    for name, hits in depth_hits.items():
                        writer.add_scalar(f"accuracy_by_depth/{name}", float(np.mean(hits)), step)
                    depth_hits.clear()
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
                                {"model": asdict(config.model), "train": {k: v for k, v in asdict(config).items() if k != "model"}})
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                agent = InContextAgent(model, env_id=histories.env_id)
                result = _quick_eval(agent, histories, config)
                model.train()
                if result is not None:
                    writer.add_scalar("eval/return_last10_fraction_of_optimal", result, step)
                    bar.write(f"step {step}: held-out return, last 10 of {config.eval_episodes} episodes: {result:.1%} of optimal")
    finally:
        bar.close()
        writer.close()
    agent = InContextAgent(model.eval(), env_id=histories.env_id)
    return agent.save(out / AGENT_DIR)


def _quick_eval(agent, histories: Histories, config: TrainConfig) -> float | None:
    from imaginegym.agents.ad.evaluate import evaluate_in_context, task_selection

    try:
        tasks = task_selection(histories.env_id, "test")
        result = evaluate_in_context(agent, histories.env_id, tasks=tasks[:config.eval_tasks or None], episodes=config.eval_episodes,
                                     seed=config.seed, progress=False)
    except ValueError:
        return None  # an env without a held-out split
    return float(np.mean(result["fraction_of_optimal_last10"]))


def config_from_json(data: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{**data["train"], "model": ModelConfig(**data["model"])})
