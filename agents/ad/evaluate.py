"""In-context evaluation: an agent meets each task with an empty memory and plays ``episodes`` episodes in a row.

    imaginegym ad eval --agent darkroom-ad --env imaginegym/DarkRoom-v0 --tasks test --episodes 50 --out results.json
    imaginegym ad eval --agent darkroom-ad --env imagined:darkroom      # the same agent in the imagined DarkRoom

The figure is the mean return of the last 10 episodes as a fraction of the task's optimum
(``env.unwrapped.optimal_return()``, the real env's for an imagined one), per task and averaged. All tasks run together, one env
and one memory row each, so their episodes must end at the same step (the DarkRoom family's
fixed horizons do).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm


def task_selection(env_id: str, tasks: str | list[Any]) -> list[Any]:
    """``test`` / ``train`` (the env's fixed split), ``all``, or a list of tasks."""
    if not isinstance(tasks, str):
        return list(tasks)
    from imaginegym.envs import darkroom

    env = gym.make(env_id)
    try:
        if not hasattr(env.unwrapped, "tasks"):
            raise ValueError(f"{env_id} has no tasks: evaluate in-context agents in an env whose task is chosen at reset")
        name = type(env.unwrapped).__name__
        if tasks == "all":
            return list(env.unwrapped.tasks)
        if tasks not in ("train", "test"):
            raise ValueError(f"tasks={tasks!r}: use train, test, all or a list of tasks")
        return list((darkroom.train_tasks if tasks == "train" else darkroom.test_tasks)(name))
    finally:
        env.close()


def imagined_env_maker(world_model, device: str = "cpu", num_denoise_steps: int | None = None):
    """``make_env(task)`` for `evaluate_in_context` in a task-conditioned world model's imagined env, and its real env id.

    ``world_model``: a bundled name ("darkroom"), a file, a run directory or a loaded `WorldModel` (shared by every task's env).
    """
    from imaginegym.imagination import ImaginationEnv, load_world_model

    model = load_world_model(world_model, device)
    if not model.dynamics_config.task_dim:
        raise ValueError(f"the world model of {model.env_spec.env_id} was trained on one task: in-context evaluation needs a model "
                         "trained on learning histories of many tasks (`imaginegym ad histories`, then `imaginegym train world-model`)")

    def make_env(task):
        return ImaginationEnv(model, task=task, num_denoise_steps=num_denoise_steps, render_mode=None)

    return make_env, model.env_spec.env_id


def optimal_return(env: gym.Env, env_id: str, task: Any) -> float:
    """The task's optimum from the env, or for an imagined env (which cannot know it) from the real env of the task."""
    if hasattr(env.unwrapped, "optimal_return"):
        return float(env.unwrapped.optimal_return())
    real = gym.make(env_id, task=task)
    try:
        return float(real.unwrapped.optimal_return())
    finally:
        real.close()


def evaluate_in_context(agent, env_id: str | None = None, tasks: str | list[Any] = "test", episodes: int = 50, seed: int = 0,
                        progress: bool = True, make_env=None) -> dict[str, Any]:
    """Returns per episode and task, and the last-10 figure. ``make_env(task)`` builds each task's env (default:
    ``gym.make(env_id, task=task)``; an imagined env for the same figure in imagination)."""
    env_id = env_id or agent.env_id
    selected = task_selection(env_id, tasks)
    envs = [make_env(task) if make_env else gym.make(env_id, task=task) for task in selected]
    for env in envs:
        agent.check_env(env)
    optimal = np.array([optimal_return(env, env_id, task) for env, task in zip(envs, selected)])
    returns = np.zeros((episodes, len(envs)))
    agent.reset(batch=len(envs))
    bar = tqdm(total=episodes, unit="episode", desc="in-context evaluation", disable=not progress, dynamic_ncols=True)
    try:
        for episode in range(episodes):
            obs = np.stack([env.reset(seed=seed + 1000 * episode + i)[0] for i, env in enumerate(envs)])
            done = np.zeros(len(envs), dtype=bool)
            while not done.all():
                actions = agent.act_batch(obs)
                steps = [env.step(a) for env, a in zip(envs, actions)]
                rewards = np.array([s[1] for s in steps], dtype=np.float32)
                terminated, truncated = np.array([s[2] for s in steps]), np.array([s[3] for s in steps])
                if len(set((terminated | truncated).tolist())) > 1:
                    raise ValueError(f"{env_id}'s episodes ended at different steps: in-context evaluation runs its tasks in lockstep, "
                                     "which needs a fixed horizon (the DarkRoom family has one)")
                agent.observe_batch(actions, rewards, terminated, truncated)
                returns[episode] += rewards
                obs, done = np.stack([s[0] for s in steps]), terminated | truncated
            bar.update()
    finally:
        bar.close()
        for env in envs:
            env.close()
    fraction = returns[-10:].mean(0) / optimal
    return {"env_id": env_id, "tasks": [np.asarray(t).tolist() for t in selected], "episodes": episodes, "seed": seed,
            "returns": returns.T.tolist(), "optimal_return": optimal.tolist(),
            "fraction_of_optimal_last10": fraction.tolist(), "mean_fraction_of_optimal_last10": float(fraction.mean()),
            "min_fraction_of_optimal_last10": float(fraction.min()),
            "mean_return_by_episode": returns.mean(1).tolist()}


def write_results(result: dict[str, Any], path: str | os.PathLike) -> Path:
    from imaginegym.data.atomic import write_json_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
    return path


def source_learning_curve(env_id: str, tasks: str | list[Any] = "test", episodes: int = 50, seed: int = 0, source=None) -> np.ndarray:
    """The source algorithm's own learning curve: mean return per episode over ``tasks``, each learned from scratch."""
    from imaginegym.agents.ad.histories import HistoriesConfig, run_source
    from imaginegym.agents.ad.sources import SourceConfig

    config = HistoriesConfig(env=env_id, episodes=episodes, seed=seed, source=source or SourceConfig())
    selected = task_selection(env_id, tasks)
    returns = np.zeros((episodes, len(selected)))
    for run, task in enumerate(selected):
        for k, episode in run_source(config, run, task):
            returns[k, run] = float(episode.rewards.sum())
    return returns.mean(1)


def plot_learning_curves(curves: dict[str, Any], optimal: float, path: str | os.PathLike, title: str = "") -> Path:
    """Mean return per episode of each curve (label -> values), with the optimum dashed, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    ax.axhline(optimal, color="gray", linestyle="--", linewidth=1, label="optimal")
    ax.set_xlabel("episode (in context / of learning)")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from imaginegym.data.atomic import atomic_write

    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
