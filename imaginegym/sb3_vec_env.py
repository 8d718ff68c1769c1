"""Imagined envs as a Stable-Baselines3 `VecEnv`: one batched model call per denoising pass.

    from imaginegym.sb3_vec_env import ImaginationSB3VecEnv
    env = VecMonitor(ImaginationSB3VecEnv(64, world_model="cartpole-swingup", obs_mode="latent"))
    PPO("MlpPolicy", env).learn(100_000)

SB3 resets a done env within the same step: `step_wait` returns the first observation of
the next episode, with the last one in ``info["terminal_observation"]``, and
``info["TimeLimit.truncated"]`` telling truncation from termination, exactly as SB3's
`DummyVecEnv` of single `ImaginationEnv`s with the same seeds would.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from imaginegym.imagination import ImaginationVectorEnv
from imaginegym.world_model import WorldModel


def split_infos(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium's batched infos (arrays with "_key" masks) -> one dict per env, as single envs give."""
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, values in infos.items():
        if key.startswith("_"):
            continue
        for i in np.flatnonzero(infos[f"_{key}"]):
            value = values[i]
            out[i][key] = value.item() if isinstance(value, np.generic) else np.array(value)
    return out


class ImaginationSB3VecEnv(VecEnv):
    """``num_envs`` imagined envs (an `ImaginationVectorEnv` without autoreset) for SB3.

    Observations, actions and infos as `ImaginationEnv`; rewards float32 (N,), dones bool
    (N,). ``seed(s)`` seeds env i with s + i at the next reset, as for SB3's other VecEnvs.
    The envs are one batch, not N objects: `get_attr` returns the batch's attribute once
    per index, `set_attr` and `env_method` act on the batch (so on every env), and
    `env_is_wrapped` is False (no env has a wrapper of its own).

    Args:
        num_envs: number of envs N.
        world_model: a `WorldModel`, a bundled name, a .safetensors file or a run directory.
        **kwargs: the other arguments of `ImaginationVectorEnv` (obs_mode,
            num_denoise_steps, context_length, max_episode_steps, device, render_mode).
    """

    def __init__(self, num_envs: int, world_model: str | os.PathLike | WorldModel, **kwargs: Any) -> None:
        self.venv = ImaginationVectorEnv(num_envs, world_model, autoreset_mode=AutoresetMode.DISABLED, **kwargs)
        super().__init__(num_envs, self.venv.single_observation_space, self.venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        if any(self._options):  # per-env options: one reset each
            obs = None
            for i, options in enumerate(self._options):
                mask = np.arange(self.num_envs) == i
                obs, infos = self.venv.reset(seed=self._seeds, options={**options, "reset_mask": mask})
                self.reset_infos[i] = split_infos(infos, self.num_envs)[i]
        else:
            obs, infos = self.venv.reset(seed=self._seeds)
            self.reset_infos = split_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, vector_infos = self.venv.step(self._actions)
        dones = terminated | truncated
        infos = split_infos(vector_infos, self.num_envs)
        for i, info in enumerate(infos):
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = obs[i].copy()
            reset_obs, reset_infos = self.venv.reset(options={"reset_mask": dones})
            obs[dones] = reset_obs[dones]
            for i, info in enumerate(split_infos(reset_infos, self.num_envs)):
                if dones[i]:
                    self.reset_infos[i] = info
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        return [None] * self.num_envs if frames is None else list(frames)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._check_all(indices, f"set_attr({attr_name!r})")
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        self._check_all(indices, f"env_method({method_name!r})")
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result] * self.num_envs

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def _check_all(self, indices: VecEnvIndices, what: str) -> None:
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError(
                f"{what} with indices={indices}: the imagined envs share one batch and its attributes, "
                "so this acts on all envs at once; pass indices=None"
            )
