"""`InContextAgent`: an AD or Compressed AD model acting in any Gymnasium env, learning in context.

    from imaginegym.agents.ad import InContextAgent
    agent = InContextAgent.load("darkroom-compressed-ad")   # bundled name or a path
    agent.reset()                                           # forget everything: a new task
    action = agent.act(obs)                                 # choose
    agent.observe(action, reward, next_obs, terminated, truncated)  # remember

The agent streams across episodes and never clears its memory by itself: call `reset` for a
new task. AD keeps the last ``context`` transitions (a sliding window); Compressed AD keeps
``n_latent`` latents and at most ``window`` recent transitions, folding the oldest ``segment``
into the latents whenever the window fills, so its per-step time and memory stay constant
however long the history grows. ``act_batch`` / ``observe_batch`` drive N envs at once (one
task each), as the evaluation does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from safetensors.torch import load_file, save_file

from imaginegym.agents.ad.model import ADModel, CompressedADModel, ModelConfig, build_model
from imaginegym.data.atomic import atomic_write, write_json_atomic
from imaginegym.data.spaces import space_from_json, space_to_json
from imaginegym.world_model import PRETRAINED_DIR

CONFIG_FILE, WEIGHTS_FILE = "in_context_agent.json", "in_context_agent.safetensors"
FORMAT_VERSION = 1


def resolve_agent_dir(name_or_path: str | os.PathLike) -> Path:
    """A directory holding ``in_context_agent.json``: the path itself, or a bundled agent of that name."""
    path = Path(name_or_path)
    if (path / CONFIG_FILE).is_file():
        return path
    if path.is_dir() and (path / "agent" / CONFIG_FILE).is_file():
        return path / "agent"  # a training run directory
    bundled = PRETRAINED_DIR / str(name_or_path)
    if (bundled / CONFIG_FILE).is_file():
        return bundled
    names = sorted(p.parent.name for p in PRETRAINED_DIR.glob(f"*/{CONFIG_FILE}"))
    raise FileNotFoundError(f"no in-context agent at {str(name_or_path)!r}: give a bundled agent ({', '.join(names) or 'none bundled'}), "
                            f"a training run directory (`imaginegym ad train --out DIR`) or a directory holding {CONFIG_FILE}")


class InContextAgent:
    """Acts from its memory of everything since the last `reset`; see the module docstring."""

    def __init__(self, model: ADModel | CompressedADModel, env_id: str | None = None, greedy: bool = False, seed: int | None = None,
                 temperature: float = 1.0):
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0 (1: sample the learned distribution; greedy=True: its most likely action)")
        self.model = model.eval()
        self.env_id = env_id
        self.greedy, self.temperature = greedy, float(temperature)
        self.device = next(model.parameters()).device
        self.observation_space: spaces.Space = model.observation_space
        self.action_space: spaces.Space = model.action_space
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0 if seed is None else seed)
        self.batch = 0
        self.reset()

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    # ---- files ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the weights (safetensors) and the JSON config into ``directory``, atomically; returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_write(directory / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        write_json_atomic(directory / CONFIG_FILE, {"format_version": FORMAT_VERSION, "env_id": self.env_id, **self.model.spec()})
        return directory

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu", greedy: bool = False,
             seed: int | None = None, temperature: float = 1.0) -> InContextAgent:
        """A bundled agent name (e.g. "darkroom-ad"), a training run directory, or a directory written by `save`."""
        from imaginegym.world_model import resolve_device

        directory = resolve_agent_dir(name_or_path)
        data = json.loads((directory / CONFIG_FILE).read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory / CONFIG_FILE} is not an in-context agent of format {FORMAT_VERSION}: retrain it with this imaginegym")
        model = build_model(ModelConfig(**data["config"]), space_from_json(data["observation_space"]), space_from_json(data["action_space"]))
        try:
            model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        except RuntimeError as error:
            raise ValueError(f"{directory / WEIGHTS_FILE} does not fit the architecture in {CONFIG_FILE}: {str(error).splitlines()[0]}") from error
        return cls(model.to(resolve_device(device)), env_id=data.get("env_id"), greedy=greedy, seed=seed, temperature=temperature)

    def check_env(self, env) -> None:
        """Raise a ValueError unless ``env``'s spaces are the ones the agent was trained on."""
        for what, mine, theirs in (("observation", self.observation_space, env.observation_space), ("action", self.action_space, env.action_space)):
            if space_to_json(mine) != space_to_json(theirs):
                raise ValueError(f"the agent was trained on {what} space {mine}, this env has {theirs}"
                                 + (f": use {self.env_id}" if self.env_id else ""))

    # ---- memory ----------------------------------------------------------------------------
    def reset(self, batch: int = 1) -> None:
        """Forget everything (a new task); ``batch`` envs are driven together by `act_batch`."""
        self.batch = batch
        d = self.config.d_model
        self.tokens = torch.zeros(batch, 0, d, device=self.device)  # committed transitions, oldest first
        self.latents = self.model.initial(batch).detach().clone() if isinstance(self.model, CompressedADModel) else None
        discrete = isinstance(self.action_space, spaces.Discrete)
        if discrete:
            self._prev_action = torch.full((batch,), int(self.action_space.n), dtype=torch.long, device=self.device)
        else:
            self._prev_action = torch.zeros(batch, int(np.prod(self.action_space.shape)) + 1, device=self.device)
            self._prev_action[:, -1] = 1.0
        self._prev_reward = torch.zeros(batch, device=self.device)
        self._prev_done = torch.ones(batch, dtype=torch.bool, device=self.device)
        self._query: torch.Tensor | None = None
        self.transitions = 0  # committed since the reset

    @torch.no_grad()
    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        """Actions for ``batch`` observations (one per env), from the memory and these observations."""
        obs_t = torch.as_tensor(np.asarray(obs), device=self.device)
        if obs_t.shape[0] != self.batch:
            raise ValueError(f"{obs_t.shape[0]} observations for a memory of batch={self.batch}: call reset(batch={obs_t.shape[0]}) first")
        query = self.model.embed_norm(self.model.embed(obs_t.unsqueeze(1), self._prev_action.unsqueeze(1), self._prev_reward.unsqueeze(1),
                                                       self._prev_done.unsqueeze(1)))
        sequence = torch.cat([self.tokens, query], dim=1)
        out = self.model(sequence) if self.latents is None else self.model(self.latents, sequence)
        self._query = query
        action = self.model.head.sample(out[:, -1], self.generator, self.greedy, self.temperature)
        if isinstance(self.action_space, spaces.Box):
            action = action.clamp(torch.as_tensor(self.action_space.low, device=self.device),
                                  torch.as_tensor(self.action_space.high, device=self.device))
            return action.cpu().numpy().reshape(self.batch, *self.action_space.shape).astype(self.action_space.dtype)
        return action.cpu().numpy()

    @torch.no_grad()
    def observe_batch(self, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Remember the transitions that followed the last `act_batch` (the next observations come with the next `act_batch`)."""
        if self._query is None:
            raise RuntimeError("observe() before act(): the agent remembers the transition that follows its own action")
        self.tokens = torch.cat([self.tokens, self._query], dim=1)
        self._query = None
        self.transitions += 1
        if isinstance(self.action_space, spaces.Discrete):
            self._prev_action = torch.as_tensor(np.asarray(actions), dtype=torch.long, device=self.device).view(self.batch)
        else:
            flat = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.device).view(self.batch, -1)
            self._prev_action = torch.cat([flat, torch.zeros(self.batch, 1, device=self.device)], dim=1)
        self._prev_reward = torch.as_tensor(np.asarray(rewards, dtype=np.float32), device=self.device).view(self.batch)
        self._prev_done = torch.as_tensor(np.asarray(terminated) | np.asarray(truncated), device=self.device).view(self.batch)
        config = self.config
        if self.latents is None:
            self.tokens = self.tokens[:, -(config.context - 1):] if config.context > 1 else self.tokens[:, :0]
        elif self.tokens.shape[1] >= config.window:
            self.latents = self.model.compress(self.latents, self.tokens[:, :config.segment])
            self.tokens = self.tokens[:, config.segment:]

    def act(self, obs: Any) -> Any:
        """The action for one env's observation (memory of batch 1)."""
        if self.batch != 1:
            raise ValueError(f"act() drives one env, the memory holds batch={self.batch}: call reset() first, or use act_batch()")
        action = self.act_batch(np.asarray(obs)[None])[0]
        return int(action) if isinstance(self.action_space, spaces.Discrete) else action

    def observe(self, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool) -> None:
        """Remember one step of one env. ``next_obs`` is not stored: the next `act` brings it (or the reset's)."""
        del next_obs
        self.observe_batch(np.asarray([action]), np.asarray([reward]), np.asarray([terminated]), np.asarray([truncated]))

    def memory_bytes(self) -> int:
        """Bytes of the tensors the agent keeps between steps (constant for Compressed AD once its window has filled)."""
        size = self.tokens.numel() * self.tokens.element_size()
        return size + (self.latents.numel() * self.latents.element_size() if self.latents is not None else 0)
