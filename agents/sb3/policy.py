"""A trained SB3 policy as two plain files, its weights (safetensors) and a JSON config: no unpickling to load.

    policy = AgentPolicy.load("cartpole-swingup-ppo")      # bundled name, or a directory holding policy.json
    env = policy.real_env()                                 # the real env, observed as the policy was trained
    obs, _ = env.reset(seed=0)
    action = policy.act(obs)

A policy acts on the observations of the world model it was trained with (latents or pixels, the last
``frame_stack`` of them); `real_env` and `imagined_env` build both worlds with exactly those observations.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from safetensors.torch import load_file, save_file
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

from imaginegym.data.atomic import atomic_write, write_json_atomic
from imaginegym.data.spaces import space_from_json, space_to_json
from imaginegym.imagination import ImaginationEnv, ModelStateTracker, real_twin
from imaginegym.world_model import PRETRAINED_DIR, WorldModel

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}
POLICY_CLASSES: dict[str, type[BasePolicy]] = {"ppo": ActorCriticPolicy, "sac": SACPolicy}
ACTIVATIONS: dict[str, type[nn.Module]] = {"Tanh": nn.Tanh, "ReLU": nn.ReLU, "ELU": nn.ELU}
CONFIG_FILE, WEIGHTS_FILE = "policy.json", "policy.safetensors"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PolicyConfig:
    """What rebuilds a policy and its observations; saved as ``policy.json``."""

    algo: str  # "ppo" or "sac"
    world_model: str  # bundled name or path of the world model whose observations the policy reads
    obs_mode: str  # "latent", "state" or "pixels"
    frame_stack: int  # observations are the last frame_stack frames (or latents)
    observation_space: dict[str, Any]  # JSON of the gymnasium space
    action_space: dict[str, Any]
    net_arch: Any  # SB3's resolved net_arch (a list, or a dict of pi/vf or pi/qf lists)
    activation: str  # a key of ACTIVATIONS
    training: dict[str, Any] = field(default_factory=dict)  # how it was trained (for the record)

    def __post_init__(self):
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo={self.algo!r}: use one of {', '.join(ALGORITHMS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}: use one of {', '.join(ACTIVATIONS)}")


def resolve_policy_dir(name_or_path: str | os.PathLike) -> Path:
    """A directory holding ``policy.json``: the path itself, or a bundled policy of that name."""
    path = Path(name_or_path)
    if (path / CONFIG_FILE).is_file():
        return path
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a directory without {CONFIG_FILE}: is the training run finished? "
                                "(`imaginegym agent train` writes it at the end)")
    bundled = PRETRAINED_DIR / str(name_or_path)
    if (bundled / CONFIG_FILE).is_file():
        return bundled
    names = sorted(p.parent.name for p in PRETRAINED_DIR.glob(f"*/{CONFIG_FILE}"))
    raise FileNotFoundError(f"no policy at {str(name_or_path)!r}: give a bundled policy ({', '.join(names) or 'none bundled'}) "
                            f"or a directory holding {CONFIG_FILE} and {WEIGHTS_FILE}")


class AgentPolicy:
    """A trained policy with the settings of its observations; `act` maps observations to actions."""

    def __init__(self, config: PolicyConfig, policy: BasePolicy):
        self.config, self.policy = config, policy.eval()
        self.observation_space: spaces.Space = space_from_json(config.observation_space)
        self.action_space: spaces.Space = space_from_json(config.action_space)

    @classmethod
    def from_model(cls, model: BaseAlgorithm, world_model: str, obs_mode: str, frame_stack: int, training: dict | None = None) -> AgentPolicy:
        """The policy of a trained SB3 ``model`` (PPO or SAC)."""
        algo = next((name for name, algorithm in ALGORITHMS.items() if isinstance(model, algorithm)), None)
        if algo is None:
            raise ValueError(f"{type(model).__name__} is not one of {', '.join(a.__name__ for a in ALGORITHMS.values())}")
        policy = model.policy
        config = PolicyConfig(
            algo=algo, world_model=str(world_model), obs_mode=obs_mode, frame_stack=frame_stack,
            observation_space=space_to_json(model.observation_space), action_space=space_to_json(model.action_space),
            net_arch=policy.net_arch, activation=policy.activation_fn.__name__, training=dict(training or {}),
        )
        return cls(config, policy)

    @staticmethod
    def build(config: PolicyConfig, device: str | torch.device = "cpu") -> BasePolicy:
        """An untrained SB3 policy network of ``config``'s architecture."""
        policy_class = POLICY_CLASSES[config.algo]
        return policy_class(space_from_json(config.observation_space), space_from_json(config.action_space), lambda _: 0.0,
                            net_arch=config.net_arch, activation_fn=ACTIVATIONS[config.activation]).to(device)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``policy.safetensors`` and ``policy.json`` into ``directory`` (atomically); returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.policy.state_dict().items()}
        with atomic_write(directory / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        write_json_atomic(directory / CONFIG_FILE, {"format_version": FORMAT_VERSION, **asdict(self.config)})
        return directory

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> AgentPolicy:
        """A bundled policy name (e.g. "cartpole-swingup-ppo") or a directory written by `save`."""
        directory = resolve_policy_dir(name_or_path)
        data = json.loads((directory / CONFIG_FILE).read_text())
        if data.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"{directory / CONFIG_FILE} is not a policy of format {FORMAT_VERSION}: retrain it with this imaginegym")
        config = PolicyConfig(**data)
        if not Path(config.world_model).is_absolute() and (directory / config.world_model).exists():
            config = PolicyConfig(**{**data, "world_model": str(directory / config.world_model)})  # a model beside the policy
        policy = cls.build(config, device)
        try:
            policy.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device=str(device)))
        except RuntimeError as error:
            raise ValueError(f"{directory / WEIGHTS_FILE} does not fit the architecture in {CONFIG_FILE}: {str(error).splitlines()[0]}") from error
        return cls(config, policy)

    @torch.no_grad()
    def act(self, observation: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The action for one observation (or a batch of them), in the env's action space."""
        action, _ = self.policy.predict(observation, deterministic=deterministic)
        return action

    def real_env(self, device: str | torch.device = "auto", **env_kwargs: Any) -> gym.Env:
        """The real env the policy acts in, with the observations it was trained on (see `real_twin`)."""
        return real_twin(self.config.world_model, self.config.obs_mode, self.config.frame_stack, device, **env_kwargs)

    def imagined_env(self, world_model: WorldModel | None = None, **kwargs: Any) -> ImaginationEnv:
        """The imagined twin of `real_env` (``kwargs``: those of `ImaginationEnv`)."""
        return ImaginationEnv(world_model or self.config.world_model, obs_mode=self.config.obs_mode, frame_stack=self.config.frame_stack, **kwargs)

    def source(self, directory: str | os.PathLike, deterministic: bool = False) -> PolicyFile:
        """A `PolicySource` for `imaginegym.data.collect` of this policy saved in ``directory``."""
        return PolicyFile(str(self.save(directory)), deterministic)


def export_policy(policy: str | os.PathLike, world_model: str, out: str | os.PathLike) -> Path:
    """A copy of ``policy`` in ``out`` that observes and imagines through ``world_model``, ready to ship.

    A policy saved by training names its world model by the path it was trained with (``runs/...``). An
    exported one names a bundled model (``world_model`` a bundled name), or carries the model's weights
    beside it (``world_model`` a path: its ``world_model.safetensors`` is copied into ``out``), so the
    directory works on any machine and `AgentPolicy.load` can bundle it under ``imaginegym/pretrained``.

    Raises:
        ValueError: ``world_model``'s tokenizer is not the policy's (its latents would mean something
            else to the policy), or it imagines another env.
    """
    import shutil

    from imaginegym.agents.sb3.evaluate import same_observations
    from imaginegym.world_model import resolve_model_path

    source = AgentPolicy.load(policy)
    same_observations(source, world_model, "cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights, name = resolve_model_path(world_model), str(world_model)
    if Path(world_model).exists():  # a path (as `resolve_model_path` reads it first), not a bundled name: ship a copy
        with atomic_write(out / "world_model.safetensors") as tmp:
            shutil.copyfile(weights, tmp)
        name = "world_model.safetensors"  # beside the policy: `load` resolves it there
    training = {**source.config.training, "exported_from": str(policy), "exported_world_model": str(world_model)}
    return AgentPolicy(replace(source.config, world_model=name, training=training), source.policy).save(out)


@dataclass(frozen=True)
class PolicyFile:
    """A saved policy as a `imaginegym.data.PolicySource`: each episode's policy sees raw frames.

    It pickles as its path, so spawned collection workers load it themselves, once each. The
    episode's policy encodes each frame with the policy's world model, keeps the last
    ``frame_stack`` (the first repeated, as `real_env` does) and acts; with ``deterministic=False`` it
    samples its actions from a torch generator seeded with the episode's seed.
    """

    path: str
    deterministic: bool = False

    @property
    def name(self) -> str:
        return f"agent:{self.path}" + (":deterministic" if self.deterministic else "")

    def make(self, action_space: spaces.Space, seed: int) -> EpisodePolicy:
        policy, world_model = _loaded(self.path)
        if action_space != policy.action_space:
            raise ValueError(f"the policy at {self.path} acts in {policy.action_space}, the env in {action_space}")
        return EpisodePolicy(policy, world_model, seed, self.deterministic)


_LOADED: dict[str, tuple[AgentPolicy, WorldModel]] = {}  # per process: a worker loads each policy once


def _loaded(path: str) -> tuple[AgentPolicy, WorldModel]:
    if path not in _LOADED:
        policy = AgentPolicy.load(path)
        _LOADED[path] = policy, WorldModel.load(policy.config.world_model)
    return _LOADED[path]


class EpisodePolicy:
    """One episode of a `PolicyFile`: raw frames in, actions out."""

    def __init__(self, policy: AgentPolicy, world_model: WorldModel, seed: int, deterministic: bool):
        self.agent, self.world_model, self.deterministic = policy, world_model, deterministic
        self.history: list[np.ndarray] = []
        self.generator = torch.Generator().manual_seed(seed)
        # "state" observations: the dynamics follows the episode's frames and this policy's actions
        self.tracker = ModelStateTracker(world_model) if policy.config.obs_mode == "state" else None
        self.seed, self.last_action = seed, None

    def observe(self, observation: np.ndarray) -> np.ndarray:
        """The policy's observation of a raw frame, as `real_twin` gives it."""
        mode = self.agent.config.obs_mode
        if mode == "latent":
            return self.world_model.encode(observation).flatten().cpu().numpy()
        if mode == "state":
            if self.last_action is None:
                return self.tracker.start(observation, self.seed)
            return self.tracker.advance(observation, self.last_action)
        return observation

    @torch.no_grad()
    def __call__(self, observation: np.ndarray) -> np.ndarray:
        self.last_action = self._act(self.observe(observation))
        return self.last_action

    def _act(self, frame: np.ndarray) -> np.ndarray:
        k = self.agent.config.frame_stack
        self.history = (self.history or [frame] * k)[1:] + [frame] if k > 1 else [frame]
        obs = np.stack(self.history) if k > 1 else frame
        if self.deterministic:
            return self.agent.act(obs)
        policy = self.agent.policy
        tensor, _ = policy.obs_to_tensor(obs)
        distribution = policy.get_distribution(tensor) if isinstance(policy, ActorCriticPolicy) else None
        if distribution is None:  # SAC: its actor's squashed Gaussian
            mean, log_std, kwargs = policy.actor.get_action_dist_params(tensor)
            action = torch.tanh(mean + log_std.exp() * torch.randn(mean.shape, generator=self.generator))
        else:
            gaussian = distribution.distribution
            action = gaussian.mean + gaussian.stddev * torch.randn(gaussian.mean.shape, generator=self.generator)
        action = action.cpu().numpy()[0]
        low, high = self.agent.action_space.low, self.agent.action_space.high
        if isinstance(policy, ActorCriticPolicy):
            return np.clip(action, low, high).astype(np.float32)
        return (low + 0.5 * (action + 1.0) * (high - low)).astype(np.float32)  # SAC's actions live in [-1, 1]
