"""A model-based loop: collect real episodes with the current policy, update the world model on all data so
far, train the policy in imagination from real starts, repeat.

    imaginegym agent mbrl --task cartpole-swingup --real-steps 50000 --out runs/mbrl

Everything lives in OUT: ``data/`` (every real episode, the first ones from Ornstein-Uhlenbeck noise, then
each iteration's from its policy), ``world_model/`` (one training run that continues on the grown dataset),
``agent/`` (one PPO run that continues in each new imagined env), ``policies/`` (the policy each iteration
collected with), ``loop.json`` (finished phases and the curve), ``curve.png`` and TensorBoard logs. Every
real env step of the data counts; evaluation episodes (deterministic, not kept) do not. Killed at any
moment, the same command resumes from the last finished phase, and each phase from its own checkpoints.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from imaginegym.agents.sb3.config import LR_SCHEDULES, AgentConfig
from imaginegym.agents.sb3.evaluate import evaluate_policy
from imaginegym.agents.sb3.policy import AgentPolicy, PolicyFile, export_policy
from imaginegym.agents.sb3.train import train_agent
from imaginegym.data import CollectConfig, EpisodeDataset, collect
from imaginegym.data.atomic import write_json_atomic
from imaginegym.training.loop import OptimConfig
from imaginegym.training.pipeline import train_world_model
from imaginegym.training.recipes import cartpole_recipe
from imaginegym.validation import check_count

PHASES = ("collect", "world_model", "agent", "evaluate")


@dataclass(frozen=True)
class LoopConfig:
    """One model-based run; each field is one `imaginegym agent mbrl` flag."""

    task: str = "cartpole-swingup"  # a dm_control task as domain-task
    size: int = 64  # frame size in pixels
    max_episode_steps: int | None = None  # cut real episodes after this many steps (None: the task's own limit, 500)
    real_steps: int = 50_000  # real env steps (agent steps) of data in all, every one counted (x action repeat 2 = frames)
    initial_episodes: int = 10  # Ornstein-Uhlenbeck noise episodes before the first model
    episodes_per_iteration: int = 10  # real episodes each iteration collects with its policy
    tokenizer_steps_first: int = 3000  # tokenizer updates on the first data
    tokenizer_steps_per_iteration: int = 500  # more tokenizer updates after each collection
    dynamics_steps_first: int = 8000  # dynamics updates on the first data
    dynamics_steps_per_iteration: int = 2000  # more dynamics updates after each collection
    dynamics_rollout_length: int = 8  # imagined frames of each rollout-training window (the model learns from its own imagination)
    dynamics_recent_fraction: float = 0.0  # share of each model-update batch from the last iteration's episodes (0: uniform over all data)
    dynamics_context_length: int | None = None  # frames the dynamics attends to (None: the recipe's 8, or init_model's own)
    dynamics_rollout_episode_start_fraction: float = 0.0  # share of rollout-training batches whose windows begin at an episode's first frame
    dynamics_rollout_min_context: int = 0  # > 0: those batches draw their real frames from [this, context length] (a reset shows one)
    agent_steps_per_iteration: int = 150_000  # imagined env steps of PPO per iteration
    agent_normalize_reward: bool = False  # PPO on rewards scaled by a running std of the return (SB3 VecNormalize)
    agent_lr_schedule: str = "constant"  # constant | linear: PPO's learning rate falls to 0 at the end of each iteration's training
    horizon: int = 32  # imagined episode length, from real contexts of the data
    agent_episode_start_fraction: float = 0.0  # share of imagined episodes that start at a real episode's first frames (else anywhere in one)
    agent_obs: str = "latent"  # latent: the last 4 latents | state: each frame's latents and the world model's state of it
    agent_fresh: bool = False  # a new policy each iteration (agent/iteration_N) instead of one continued across iterations
    num_envs: int = 32  # imagined envs stepped together
    eval_episodes: int = 3  # deterministic real episodes per iteration (not kept, not counted)
    seed: int = 0
    device: str = "auto"
    workers: int = 1  # collection processes
    init_data: str | None = None  # start from a copy of this dataset (its steps counted) instead of initial_episodes of OU noise
    init_model: str | None = None  # continue this world model (bundled name or path) with its tokenizer frozen, instead of training one; dynamics_steps_first are its first steps here

    def __post_init__(self):
        if self.agent_lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"agent_lr_schedule={self.agent_lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
        if self.agent_obs not in ("latent", "state"):
            raise ValueError(f"agent_obs={self.agent_obs!r}: use latent (4 stacked latents) or state (the latents and the model's state)")
        if not 0 <= self.agent_episode_start_fraction <= 1:
            raise ValueError(f"agent_episode_start_fraction={self.agent_episode_start_fraction} must lie in [0, 1] (0: imagined episodes start anywhere)")
        if not 0 <= self.dynamics_recent_fraction <= 1:
            raise ValueError(f"dynamics_recent_fraction={self.dynamics_recent_fraction} must lie in [0, 1] (0: uniform over all data)")
        if self.dynamics_context_length is not None and self.dynamics_context_length < 2:
            raise ValueError(f"dynamics_context_length={self.dynamics_context_length}: the dynamics attends to >= 2 frames "
                             "(None: the recipe's, or init_model's own)")
        if self.dynamics_rollout_min_context < 0 or not 0 <= self.dynamics_rollout_episode_start_fraction <= 1:
            raise ValueError(f"dynamics_rollout_min_context={self.dynamics_rollout_min_context} must be >= 0 and "
                             f"dynamics_rollout_episode_start_fraction={self.dynamics_rollout_episode_start_fraction} must lie in [0, 1]")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={self.max_episode_steps} must be >= 1 (or None: the task's own limit)")
        for name in ("size", "real_steps", "initial_episodes", "episodes_per_iteration", "tokenizer_steps_first", "dynamics_steps_first",
                     "agent_steps_per_iteration", "horizon", "num_envs", "eval_episodes", "workers", "dynamics_rollout_length"):
            check_count(name, getattr(self, name))
        for name in ("tokenizer_steps_per_iteration", "dynamics_steps_per_iteration"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")


class ModelBasedLoop:
    """Runs `LoopConfig` in ``out``, resuming from ``out/loop.json``."""

    def __init__(self, config: LoopConfig, out: str | Path, progress: bool = True):
        self.config, self.out, self.progress = config, Path(out), progress
        self.out.mkdir(parents=True, exist_ok=True)
        self.state_file = self.out / "loop.json"
        if self.state_file.is_file():
            self.state = json.loads(self.state_file.read_text())
            # a loop saved before a field existed ran with that field's default
            self.state["config"] = {**{k: v for k, v in asdict(LoopConfig()).items() if k != "device"}, **self.state["config"]}
            ours = {k: v for k, v in json.loads(json.dumps(asdict(config))).items() if k != "device"}
            if {k: v for k, v in self.state["config"].items() if k != "real_steps"} != {k: v for k, v in ours.items() if k != "real_steps"}:
                raise ValueError(f"{out} holds a loop with other settings ({self.state['config']}): resume with those (a larger "
                                 "--real-steps continues it), or choose another --out")
            self.state["config"]["real_steps"] = config.real_steps  # more real steps: more iterations of the same loop
        else:
            self.state = {"config": {k: v for k, v in asdict(config).items() if k != "device"}, "done": [], "curve": [], "wall_s": 0.0}
        self.data, self.world_model, self.agent = self.out / "data", self.out / "world_model", self.out / "agent"

    # ------------------------------------------------------------------ bookkeeping
    def _done(self, iteration: int, phase: str) -> bool:
        return [iteration, phase] in self.state["done"]

    def _finish(self, iteration: int, phase: str, started: float) -> None:
        self.state["done"].append([iteration, phase])
        self.state["wall_s"] += time.time() - started
        write_json_atomic(self.state_file, self.state)

    def real_steps(self) -> int:
        return int(EpisodeDataset(self.data).lengths.sum()) if (self.data / "dataset.json").is_file() else 0

    def initial_episodes(self) -> int:
        """Episodes of iteration 0: ``init_data``'s, or ``initial_episodes`` of OU noise."""
        c = self.config
        return len(EpisodeDataset(c.init_data)) if c.init_data else c.initial_episodes

    def episodes_before(self, iteration: int) -> int:
        c = self.config
        return 0 if iteration == 0 else self.initial_episodes() + (iteration - 1) * c.episodes_per_iteration

    def iterations(self) -> int:
        """Iterations whose data together reach ``real_steps`` (episodes of the task's full length)."""
        c = self.config
        dataset = EpisodeDataset(self.data)
        steps_per_episode = max(1, int(dataset.lengths.max()))
        extra = max(0, c.real_steps - int(dataset.lengths[:self.initial_episodes()].sum()))
        return 1 + math.ceil(extra / (c.episodes_per_iteration * steps_per_episode))

    # ------------------------------------------------------------------ phases
    def collect(self, iteration: int) -> None:
        c = self.config
        if iteration == 0 and c.init_data:
            copy_dataset(Path(c.init_data), self.data)
            return
        if iteration == 0:
            config, episodes = self.collect_config("ou"), c.initial_episodes
        else:
            # A copy that carries the world model it observes through: the loop's own model changes in the next phase.
            saved = export_policy(self.agent_dir(iteration - 1) / "policy", str(self.world_model), self.out / "policies" / f"iteration_{iteration:03d}")
            config, episodes = self.collect_config(PolicyFile(str(saved))), c.episodes_per_iteration
        collect(self.data, config, episodes, workers=c.workers, resume=True, progress=self.progress, first=self.episodes_before(iteration))

    def collect_config(self, policy) -> CollectConfig:
        c = self.config
        return CollectConfig(task=c.task, policy=policy, seed=c.seed * 1_000_000, size=c.size, max_episode_steps=c.max_episode_steps)

    def train_world_model(self, iteration: int) -> None:
        c = self.config
        tokenizer, dynamics, shortcut, lengths = cartpole_recipe()
        tokenizer = replace(tokenizer, image_size=c.size)
        if c.dynamics_context_length is not None and not c.init_model:
            dynamics = replace(dynamics, context_length=c.dynamics_context_length)
        tokenizer_steps = c.tokenizer_steps_first + iteration * c.tokenizer_steps_per_iteration
        dynamics_steps = c.dynamics_steps_first + iteration * c.dynamics_steps_per_iteration
        tokenizer_optim = None if c.init_model else OptimConfig(steps=tokenizer_steps, batch_size=32, lr=1e-3, warmup_steps=100,
                                                                use_ema=False, seed=c.seed)
        train_world_model(
            str(self.data), str(self.world_model), tokenizer, tokenizer_optim, dynamics,
            OptimConfig(steps=dynamics_steps, batch_size=64, lr=5e-4 if c.init_model else 1e-3, warmup_steps=200, seed=c.seed), shortcut,
            replace(lengths, rollout_start=0 if c.init_model else c.dynamics_steps_first // 2, rollout_length=c.dynamics_rollout_length,
                    recent_episodes=c.episodes_per_iteration if c.dynamics_recent_fraction and iteration else 0,
                    recent_fraction=c.dynamics_recent_fraction, rollout_min_context=c.dynamics_rollout_min_context,
                    rollout_episode_start_fraction=c.dynamics_rollout_episode_start_fraction),
            c.device, init_from=c.init_model, context_length=c.dynamics_context_length if c.init_model else None,
        )

    def agent_dir(self, iteration: int) -> Path:
        """The run of the policy that iteration ``iteration`` trains: one run continued, or one per iteration (``agent_fresh``)."""
        return self.agent / f"iteration_{iteration:03d}" if self.config.agent_fresh else self.agent

    def agent_config(self, iteration: int) -> AgentConfig:
        c = self.config
        steps = c.agent_steps_per_iteration if c.agent_fresh else (iteration + 1) * c.agent_steps_per_iteration
        return AgentConfig(env=f"imagined:{self.world_model}", steps=steps, num_envs=c.num_envs,
                           horizon=c.horizon, start_data=str(self.data), seed=c.seed + (iteration if c.agent_fresh else 0), device=c.device,
                           normalize_reward=c.agent_normalize_reward, lr_schedule=c.agent_lr_schedule,
                           episode_start_fraction=c.agent_episode_start_fraction, obs=c.agent_obs,
                           frame_stack=4 if c.agent_obs == "latent" else 1)

    def evaluate(self, iteration: int) -> dict:
        c = self.config
        dataset = EpisodeDataset(self.data)
        first = self.episodes_before(iteration)
        collected = [float(dataset.read(i, "rewards").sum()) for i, e in enumerate(dataset.episode_ids) if e >= first]
        result = evaluate_policy(AgentPolicy.load(self.agent_dir(iteration) / "policy"), c.eval_episodes, seed=10_000_000 + 1000 * iteration,
                                 device=c.device, progress=self.progress, gif=self.out / "eval" / f"iteration_{iteration:03d}.gif")
        summary = result.summary()
        return {"iteration": iteration, "real_steps": self.real_steps(), "collected_return_mean": float(np.mean(collected)),
                "eval_return_mean": summary["real_mean"], "eval_return_std": summary["real_std"],
                "imagined_return_mean": summary["imagined_mean"], "wall_s": self.state["wall_s"]}

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[dict]:
        """Iterate until the data holds ``real_steps``; returns the curve (one point per iteration)."""
        iteration = 0
        while True:
            for phase in PHASES:
                if self._done(iteration, phase):
                    continue
                started = time.time()
                if phase == "collect":
                    self.collect(iteration)
                elif phase == "world_model":
                    self.train_world_model(iteration)
                elif phase == "agent":
                    train_agent(self.agent_config(iteration), self.agent_dir(iteration), progress=self.progress)
                else:
                    point = self.evaluate(iteration)
                    self.state["curve"].append(point)
                    self.log(point)
                self._finish(iteration, phase, started)
            iteration += 1
            if iteration >= self.iterations():
                return self.state["curve"]

    def log(self, point: dict) -> None:
        frames = point["real_steps"] * 2  # action repeat 2 (the DMC default)
        with SummaryWriter(self.out / "tensorboard" / "loop") as writer:
            for key in ("collected_return_mean", "eval_return_mean", "imagined_return_mean"):
                writer.add_scalar(f"loop/{key}", point[key], frames)
        print(f"iteration {point['iteration']}: {point['real_steps']} real steps, collected return {point['collected_return_mean']:.1f}, "
              f"eval {point['eval_return_mean']:.1f} ± {point['eval_return_std']:.1f} (imagined {point['imagined_return_mean']:.1f}), "
              f"{point['wall_s'] / 60:.1f} min")
        plot_curve(self.state["curve"], self.out / "curve.png")


def copy_dataset(source: Path, target: Path) -> None:
    """A copy of the dataset ``source`` at ``target``, whole or not at all (copied beside it, then renamed)."""
    if (target / "dataset.json").is_file():
        return
    EpisodeDataset(source)  # a clear error for a path that holds no dataset
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)


def plot_curve(curve: list[dict], path: Path, baseline: list[tuple[int, float]] | None = None) -> Path:
    """Real return against real env frames: evaluation and collection returns of each iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [2 * p["real_steps"] for p in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(frames, [p["eval_return_mean"] for p in curve], yerr=[p["eval_return_std"] for p in curve], marker="o", label="evaluation (deterministic)")
    ax.plot(frames, [p["collected_return_mean"] for p in curve], marker=".", label="collection episodes")
    ax.plot(frames, [p["imagined_return_mean"] for p in curve], linestyle="--", label="imagined (same starts)")
    if baseline:
        ax.plot(*zip(*baseline), marker="x", label="model-free baseline")
    ax.set_xlabel("real env frames")
    ax.set_ylabel("return (500 steps)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
