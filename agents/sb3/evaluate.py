"""Evaluate a policy in the real env and in its imagined twin, side by side.

Each real episode starts from ``env.reset(seed=seed + i)``; its imagined twin starts from the same
first frame and runs the same number of steps under the same policy. The imagined-vs-real return gap
tells whether the policy exploits the model (imagined return far above the real one) or the model
undersells it. A GIF shows the first episode in both worlds (left: real, right: imagined).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from tqdm.auto import tqdm

from imaginegym.data.atomic import write_json_atomic
from imaginegym.agents.sb3.policy import AgentPolicy
from imaginegym.validation import check_count


@dataclass
class Evaluation:
    """Returns per episode in both worlds, and their summary."""

    real_returns: list[float]
    imagined_returns: list[float]
    episode_steps: list[int]

    @property
    def real_mean(self) -> float:
        return float(np.mean(self.real_returns))

    @property
    def imagined_mean(self) -> float:
        return float(np.mean(self.imagined_returns)) if self.imagined_returns else float("nan")

    def summary(self) -> dict:
        real, imagined = np.asarray(self.real_returns), np.asarray(self.imagined_returns)
        out = {"episodes": len(real), "real_mean": float(real.mean()), "real_std": float(real.std()), **asdict(self)}
        if len(imagined):
            out.update(imagined_mean=float(imagined.mean()), imagined_std=float(imagined.std()),
                       gap=float(imagined.mean() - real.mean()),
                       relative_gap=float((imagined.mean() - real.mean()) / max(abs(real.mean()), 1e-8)))
        return out


def run_real(policy: AgentPolicy, env, seed: int, frames: list | None = None) -> tuple[float, int, np.ndarray]:
    """One real episode; returns its return, its length and its first frame (appending frames when asked)."""
    obs, _ = env.reset(seed=seed)
    first = env.unwrapped.render()
    total, steps, done = 0.0, 0, False
    if frames is not None:
        frames.append(first)
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
        total, steps, done = total + float(reward), steps + 1, terminated or truncated
        if frames is not None:
            frames.append(env.unwrapped.render())
    return total, steps, first


def run_imagined(policy: AgentPolicy, env, first_frame: np.ndarray, steps: int, seed: int, frames: list | None = None) -> float:
    """``steps`` imagined steps from ``first_frame`` under the policy; returns the imagined return."""
    env.max_episode_steps = steps  # as long as the real episode, whatever the model's own episode length
    obs, _ = env.reset(seed=seed, options={"context_frames": first_frame[None]})
    if frames is not None:
        frames.append(env.render())
    total = 0.0
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
        total += float(reward)
        if frames is not None:
            frames.append(env.render())
        if terminated or truncated:
            break
    return total


def evaluate_policy(policy: AgentPolicy, episodes: int = 10, seed: int = 0, imagined: bool = True, gif: str | os.PathLike | None = None,
                    device: str = "auto", progress: bool = True, imagined_model: str | os.PathLike | None = None) -> Evaluation:
    """Mean, std and per-episode returns of ``policy`` in the real env and (``imagined``) in its imagined twin.

    ``imagined_model``: imagine with another world model than the policy's (e.g. a retrained one); it must
    share the policy's observations, i.e. for latent observations the same tokenizer weights.
    """
    check_count("episodes", episodes)
    real_env = policy.real_env(device)
    imagined_env = None
    if imagined:
        other = None if imagined_model is None else same_observations(policy, imagined_model, device)
        imagined_env = policy.imagined_env(other, device=device)
    result = Evaluation([], [], [])
    real_frames, imagined_frames = ([], []) if gif else (None, None)
    for i in tqdm(range(episodes), desc="evaluate", unit="episode", disable=not progress):
        record = gif is not None and i == 0
        total, steps, first = run_real(policy, real_env, seed + i, real_frames if record else None)
        result.real_returns.append(total)
        result.episode_steps.append(steps)
        if imagined_env is not None:
            result.imagined_returns.append(run_imagined(policy, imagined_env, first, steps, seed + i, imagined_frames if record else None))
    real_env.close()
    if gif:
        write_side_by_side(gif, real_frames, imagined_frames)
    return result


def same_observations(policy: AgentPolicy, world_model: str | os.PathLike, device: str = "auto"):
    """``world_model`` loaded, after checking that the policy observes its imagination as it was trained to."""
    from imaginegym.imagination import load_world_model
    from imaginegym.training.latents import tokenizer_digest

    model, own = load_world_model(world_model, device), load_world_model(policy.config.world_model, "cpu")
    if policy.config.obs_mode == "latent" and tokenizer_digest(model.tokenizer) != tokenizer_digest(own.tokenizer):
        raise ValueError(f"{world_model} has other tokenizer weights than the policy's world model {policy.config.world_model}: "
                         "its latents mean something else to this policy; imagine with a model that continued the policy's "
                         "(`imaginegym train world-model --init-from ... --freeze-tokenizer`)")
    if policy.config.obs_mode == "state" and tokenizer_digest(model.dynamics) != tokenizer_digest(own.dynamics):
        raise ValueError(f"{world_model} has other dynamics weights than the policy's world model {policy.config.world_model}: "
                         "this policy observes the model's own state, which another model's dynamics compute otherwise; "
                         "evaluate it in imagination with its own world model")
    if model.env_spec.observation_space != own.env_spec.observation_space or model.env_spec.action_space != own.env_spec.action_space:
        raise ValueError(f"{world_model} imagines another env than the policy's world model {policy.config.world_model}")
    return model


def write_side_by_side(path: str | os.PathLike, real: list[np.ndarray], imagined: list[np.ndarray] | None, every: int = 2) -> Path:
    """A GIF of real frames (left) beside imagined ones (right), every ``every``-th step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    for t in range(0, len(real), every):
        left = real[t]
        right = imagined[min(t, len(imagined) - 1)] if imagined else np.zeros_like(left)
        frames.append(np.concatenate([left, right], axis=1))
    imageio.mimsave(path, frames, duration=0.04, loop=0)
    return path


def save_evaluation(result: Evaluation, path: str | os.PathLike, **extra) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {**extra, **result.summary()})
    return path
