"""Train PPO or SAC (Stable-Baselines3) in a real env or its imagined twin, resumably.

    from imaginegym.agents.sb3 import AgentConfig, train_agent
    policy = train_agent(AgentConfig(env="imagined:cartpole-swingup", steps=200_000), "runs/ppo")

``env`` is ``imagined:MODEL`` (many imagined envs in one batch, episodes of ``horizon`` steps from
real contexts, truncation bootstrapped by SB3) or ``real:MODEL`` (the model's real env, observed
through its tokenizer the same way). MODEL is a bundled world model name or a path. Checkpoints
(``checkpoint.pt``: state dicts only, read with ``weights_only=True``; SAC's replay buffer as .npz)
are written every ``checkpoint_every`` steps; the same call resumes from them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor, VecNormalize
from tqdm.auto import tqdm

from imaginegym.data.atomic import atomic_write, write_json_atomic
from imaginegym.imagination import load_world_model, real_twin
from imaginegym.sb3_vec_env import ImaginationSB3VecEnv
from imaginegym.agents.sb3.config import AgentConfig
from imaginegym.agents.sb3.policy import ACTIVATIONS, ALGORITHMS, AgentPolicy

CHECKPOINT_FILE, REPLAY_FILE = "checkpoint.pt", "replay_buffer.npz"


def make_env(config: AgentConfig, world_model=None) -> VecEnv:
    """The SB3 VecEnv ``config`` trains in (monitored, so episode returns reach TensorBoard, unscaled by
    ``normalize_reward``'s `VecNormalize`, which wraps the monitor)."""
    wm = load_world_model(world_model or config.model, config.device)
    if config.world == "imagined":
        env = ImaginationSB3VecEnv(config.num_envs, wm, obs_mode=config.obs, frame_stack=config.frame_stack,
                                   max_episode_steps=config.horizon, start_dataset=config.start_data,
                                   episode_start_fraction=config.episode_start_fraction)
    else:
        env = DummyVecEnv([lambda: real_twin(wm, config.obs, config.frame_stack)] * config.num_envs)
    env.seed(config.seed)
    env = VecMonitor(env)
    if config.normalize_reward:
        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=config.gamma)
    return env


def make_algorithm(config: AgentConfig, env: VecEnv, out: Path) -> BaseAlgorithm:
    policy_kwargs = {"net_arch": list(config.net_arch), "activation_fn": ACTIVATIONS[config.activation]}
    # SB3 calls a schedule with the progress remaining, 1 - num_timesteps / steps (a resumed run learns up to ``steps``)
    lr = config.lr if config.lr_schedule == "constant" else LinearSchedule(config.lr, 0.0, 1.0)
    common = {"learning_rate": lr, "gamma": config.gamma, "seed": config.seed, "device": _policy_device(config),
              "tensorboard_log": str(out / "tensorboard"), "policy_kwargs": policy_kwargs, "verbose": 0}
    if config.algo == "ppo":
        return ALGORITHMS["ppo"]("MlpPolicy", env, n_steps=config.ppo_rollout_steps, batch_size=config.ppo_batch_size,
                                 n_epochs=config.ppo_epochs, ent_coef=config.ppo_entropy, **common)
    return ALGORITHMS["sac"]("MlpPolicy", env, buffer_size=config.sac_buffer_size, learning_starts=config.sac_learning_starts,
                             gradient_steps=config.sac_gradient_steps, **common)


def _policy_device(config: AgentConfig) -> str:
    from imaginegym.world_model import resolve_device

    return str(resolve_device(config.device))


class Checkpoints(BaseCallback):
    """A tqdm bar over env steps, and a resumable checkpoint every ``every`` steps."""

    def __init__(self, out: Path, every: int, total: int):
        super().__init__()
        self.out, self.every, self.total = out, every, total
        self.bar: tqdm | None = None
        self.last = 0

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", desc="train agent", dynamic_ncols=True)
        self.last = self.num_timesteps

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self.bar.n)
        if self.num_timesteps - self.last >= self.every:
            save_training_state(self.model, self.out)
            self.last = self.num_timesteps
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def save_training_state(model: BaseAlgorithm, out: Path) -> None:
    """Network and optimizer state dicts, step counters (and SAC's replay buffer): what `load_training_state` resumes."""
    state = {"parameters": model.get_parameters(), "num_timesteps": model.num_timesteps, "n_updates": getattr(model, "_n_updates", 0)}
    if getattr(model, "log_ent_coef", None) is not None:
        state["log_ent_coef"] = model.log_ent_coef.detach().cpu()
    normalizer = model.get_vec_normalize_env()
    if normalizer is not None:  # the running return statistics the rewards are scaled by
        stats = normalizer.ret_rms
        state["return_statistics"] = torch.tensor([float(stats.mean), float(stats.var), float(stats.count)], dtype=torch.float64)
    if isinstance(model, OffPolicyAlgorithm):
        buffer = model.replay_buffer
        arrays = {name: getattr(buffer, name) for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")}
        with atomic_write(out / REPLAY_FILE) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, pos=buffer.pos, full=buffer.full, **arrays)
    with atomic_write(out / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)


def load_training_state(model: BaseAlgorithm, out: Path) -> None:
    state = torch.load(out / CHECKPOINT_FILE, map_location=model.device, weights_only=True)
    model.set_parameters(state["parameters"], exact_match=True, device=model.device)
    model.num_timesteps, model._n_updates = int(state["num_timesteps"]), int(state["n_updates"])
    if "log_ent_coef" in state:
        with torch.no_grad():
            model.log_ent_coef.copy_(state["log_ent_coef"].to(model.device))
    normalizer = model.get_vec_normalize_env()
    if normalizer is not None and "return_statistics" in state:
        mean, var, count = state["return_statistics"].tolist()
        normalizer.ret_rms.mean, normalizer.ret_rms.var, normalizer.ret_rms.count = np.float64(mean), np.float64(var), count
    if isinstance(model, OffPolicyAlgorithm) and (out / REPLAY_FILE).is_file():
        with np.load(out / REPLAY_FILE) as arrays:
            buffer = model.replay_buffer
            for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
                getattr(buffer, name)[...] = arrays[name]
            buffer.pos, buffer.full = int(arrays["pos"]), bool(arrays["full"])


def train_agent(config: AgentConfig, out: str | os.PathLike, world_model=None, progress: bool = True) -> AgentPolicy:
    """Train (or resume) the run in ``out``; writes ``out/policy`` (`AgentPolicy`), checkpoints and TensorBoard logs.

    Args:
        world_model: a loaded `WorldModel` to use instead of loading ``config.env``'s model (same model).

    Returns:
        The trained policy, also saved in ``out/policy``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "agent.json"
    if run_file.is_file():
        previous = json.loads(run_file.read_text())
        fixed = {k: v for k, v in previous.items() if k not in ("steps", "checkpoint_every", "device", "threads")}
        asked = {k: v for k, v in json.loads(json.dumps(asdict(config))).items() if k in fixed}
        changed = [f"{k}: {fixed[k]!r} (run) vs {asked[k]!r}" for k in fixed if fixed[k] != asked[k]]
        if changed:
            raise ValueError(f"{out} holds an agent run with other settings ({'; '.join(changed)}): resume it with its settings "
                             "(only steps may grow) or choose another output directory")
    write_json_atomic(run_file, asdict(config))
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(config, out, world_model, progress)
    finally:
        torch.set_num_threads(threads)


def _train(config: AgentConfig, out: Path, world_model, progress: bool) -> AgentPolicy:
    env = make_env(config, world_model)
    model = make_algorithm(config, env, out)
    if (out / CHECKPOINT_FILE).is_file():
        load_training_state(model, out)
    remaining = config.steps - model.num_timesteps
    if remaining > 0:
        callback = Checkpoints(out, config.checkpoint_every, config.steps) if progress else None
        model.learn(remaining, callback=callback, reset_num_timesteps=False, tb_log_name=config.algo)
        save_training_state(model, out)
    env.close()
    training = {**asdict(config), "trained_steps": model.num_timesteps}
    policy = AgentPolicy.from_model(model, config.model, config.obs, config.frame_stack, training)
    policy.save(out / "policy")
    return AgentPolicy.load(out / "policy")

