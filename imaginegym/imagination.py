"""The imagination environment: a trained world model as a Gymnasium env, single or batched.

    env = gym.make("imaginegym/Imagined-v0", world_model="cartpole-swingup")       # pixels, like the real env
    env = gym.make("imaginegym/Imagined-v0", world_model=wm, obs_mode="latent")     # flat Box(-1, 1, (K*D,))
    env = gym.make("imaginegym/Imagined-v0", world_model=wm, obs_mode="state")      # latents + the model's state (K*D + W,)
    vec = imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=64, world_model=wm)  # one model call per pass
    real = LatentObservation(gym.make("imaginegym/DMC-v0", **wm.env_spec.env_kwargs), wm)  # same latent space
    room = gym.make("imaginegym/Imagined-v0", world_model="darkroom", task=(2, 7))  # a task-conditioned model
    room.reset(options={"task": (4, 1)})                                              # another goal, as the real env takes it

A reset encodes a window of real context frames and fills the env's row of the KV cache
with them (re-noised to tau_ctx). A step denoises the next frame's latents in
``num_denoise_steps`` shortcut steps against the cache, reads the reward and continue
heads as the frame enters the cache, and decodes it (pixel mode). The cache row is a ring
buffer, so memory stays constant however long an episode runs. Everything random (which
context window, all diffusion noise) comes from each env's own ``np_random``: a seed fixes
the episode, and a vector env seeded s gives the episodes of single envs seeded s, s+1, ...
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from einops import rearrange
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from imaginegym.data.store import EpisodeDataset, task_numbers
from imaginegym.models import noise
from imaginegym.models.dynamics import KVCache
from imaginegym.resources import check_fits
from imaginegym.world_model import WorldModel, resolve_device
from imaginegym.validation import check_count

OBS_MODES = ("pixels", "latent", "state")
RENDER_FPS = 30  # frames per second of recorded videos; the model does not know the task's timestep
ResetReturn = tuple[np.ndarray, dict[str, Any]]
StepReturn = tuple[np.ndarray, float, bool, bool, dict[str, Any]]


def load_world_model(world_model: str | os.PathLike | WorldModel, device: str | torch.device = "auto") -> WorldModel:
    """A `WorldModel` as given (on its own device), or loaded from a bundled name, file or run dir."""
    if isinstance(world_model, WorldModel):
        if str(device) != "auto" and resolve_device(device).type != world_model.device.type:
            raise ValueError(
                f"the world model is on {world_model.device} but device={str(device)!r}: "
                f"move it first (world_model.to({str(device)!r})) or pass device='auto'"
            )
        return world_model
    return WorldModel.load(world_model, device)


def latent_space(world_model: WorldModel) -> spaces.Box:
    """The latent observation space: float32 (K*D,) in [-1, 1], the tokenizer's tanh range."""
    c = world_model.dynamics_config
    return spaces.Box(-1.0, 1.0, (c.latent_tokens * c.latent_dim,), np.float32)


def state_space(world_model: WorldModel) -> spaces.Box:
    """The model-state observation space: float32 (K*D + W,), the frame's latents then the dynamics' state of it.

    The state is the dynamics transformer's normalised last-layer hidden of the latest frame (width W),
    which has attended to the frames and actions before it: what the model knows of velocities, beyond
    one frame. The real env gives the same through `ModelStateObservation`."""
    c = world_model.dynamics_config
    # An RMS-normalised vector has no entry beyond sqrt(W) in size; the norm's gains scale that, token means stay inside.
    reach = world_model.dynamics.norm.weight.detach().abs().cpu().numpy() * np.sqrt(c.width)
    latents = np.ones(c.latent_tokens * c.latent_dim)
    high = np.concatenate([latents, reach]).astype(np.float32)
    return spaces.Box(-high, high, dtype=np.float32)


def frame_space_of(world_model: WorldModel, obs_mode: str) -> spaces.Box:
    """One observation of ``obs_mode`` (before any frame stack)."""
    return {"pixels": lambda wm: wm.observation_space, "latent": latent_space, "state": state_space}[obs_mode](world_model)


CHUNK = 1024  # frames encoded or decoded per tokenizer call: bounds the activations whatever the number of envs


def memory_per_env(world_model: WorldModel, obs_mode: str) -> int:
    """Bytes one env of a batch holds: its KV-cache row, and its observation in the buffers a step fills and returns."""
    c, dynamics = world_model.dynamics_config, world_model.dynamics
    cache = 2 * c.depth * c.context_length * dynamics.tokens_per_frame * c.width * 4  # keys and values, float32
    if obs_mode == "pixels":
        observation = int(np.prod(world_model.observation_space.shape)) * np.dtype(world_model.observation_space.dtype).itemsize
    else:
        observation = (c.latent_tokens * c.latent_dim + (c.width if obs_mode == "state" else 0)) * 4
    latents = c.latent_tokens * c.latent_dim * 4 * 4  # state, step output, info, copies
    # A step's activations grow with the batch too: the MLP's hidden layer and the attention scores over the cache, a few copies.
    s = dynamics.tokens_per_frame
    activations = 4 * 4 * (s * c.width * c.mlp_ratio + c.heads * s * c.context_length * s)
    # Observations: the stack, the vector env's buffer, reset and step outputs, decoded chunks, returned copies; 13 of them
    # matches the ~180 KiB per env measured at 10,000 envs of 64x64 pixels (2.8 GB in all).
    return cache + 13 * observation + latents + activations


def check_memory(world_model: WorldModel, num_envs: int, obs_mode: str) -> None:
    """Refuse a batch whose buffers would not fit in memory, before allocating any of them."""
    # The tokenizer's activations over one chunk of frames (measured: ~0.6 GB for 64x64 frames) do not grow with the batch.
    chunk = CHUNK * int(np.prod(world_model.observation_space.shape)) * 4 * 12
    check_fits(num_envs, memory_per_env(world_model, obs_mode), chunk, device=world_model.device,
               what="its KV cache and observation buffers", hint=", or obs_mode='latent' (no frame buffers)" if obs_mode == "pixels" else "")


def stacked_space(space: spaces.Box, frame_stack: int) -> spaces.Box:
    """``frame_stack`` frames of ``space``, oldest first: Gymnasium's `FrameStackObservation` space (k, *shape)."""
    return batch_space(space, frame_stack)


def check_max_episode_steps(steps: int | None) -> int | None:
    """A positive step limit or None (no limit), else a ValueError."""
    if steps is not None and steps < 1:
        raise ValueError(f"max_episode_steps={steps}: use a positive number of steps, or None (no limit)")
    return steps


@dataclass
class ImaginedSteps:
    """One step of some envs of a batch (B of them), as numpy arrays."""

    observations: np.ndarray  # (B, *obs_shape): uint8 frames or float32 latents
    rewards: np.ndarray  # float64 (B,), from the reward head
    terminated: np.ndarray  # bool (B,), continue probability < 0.5 (never for a model whose training episodes never terminated)
    truncated: np.ndarray  # bool (B,), the step count reached max_episode_steps
    latents: np.ndarray  # float32 (B, K*D)
    continue_probs: np.ndarray  # float64 (B,)


class ImaginedBatch:
    """N imagined envs that advance together: one KV cache, each env's latent and step count.

    `ImaginationEnv` is a batch of one and `ImaginationVectorEnv` a batch of N. Methods take
    the rows (env indices) to act on and one numpy Generator per env of the batch, so each
    env draws its randomness from its own generator whichever envs act beside it.
    """

    def __init__(
        self,
        world_model: WorldModel,
        num_envs: int,
        obs_mode: str = "pixels",
        num_denoise_steps: int | None = None,
        context_length: int | None = None,
        max_episode_steps: int | None = None,
        frame_stack: int = 1,
        start_dataset: str | os.PathLike | None = None,
        task: Any = None,
        episode_start_fraction: float = 0.0,
    ) -> None:
        wm = self.world_model = world_model
        if num_denoise_steps is None:
            num_denoise_steps = wm.dynamics_config.denoise_steps
        window = wm.dynamics_config.context_length - 1  # past frames a prediction attends to
        if obs_mode not in OBS_MODES:
            raise ValueError(
                f"obs_mode={obs_mode!r}: use 'pixels' (frames, the real env's space), 'latent' "
                "(a flat float32 Box(-1, 1, (K*D,)) of the tokenizer's latents) or 'state' (the latents and the "
                "dynamics model's state of the frame, (K*D + W,))"
            )
        num_envs = check_count("num_envs", num_envs)
        noise.step_level(num_denoise_steps, wm.dynamics_config.k_max)  # raises for a step count the model lacks
        if context_length is None:  # the model's own default: all it attends to, or its env's reset observation alone
            context_length = min(window, wm.env_spec.start_context or window)
        if not 1 <= context_length <= window:
            raise ValueError(
                f"context_length={context_length}: this model attends to {window} past frames; "
                f"use 1 to {window} (None gives {window})"
            )
        max_episode_steps = check_max_episode_steps(wm.env_spec.max_episode_steps if max_episode_steps is None else max_episode_steps)
        self.num_envs, self.obs_mode, self.num_denoise_steps = num_envs, obs_mode, num_denoise_steps
        self.context_length, self.max_episode_steps = context_length, max_episode_steps
        self.frame_stack = check_count("frame_stack", frame_stack)
        self.start_dataset = None if start_dataset is None else os.fspath(start_dataset)
        if not 0.0 <= episode_start_fraction <= 1.0:
            raise ValueError(f"episode_start_fraction={episode_start_fraction}: give a share in [0, 1] of the resets from a dataset that "
                             "start at an episode's first frames (0: windows anywhere in the episodes)")
        self.episode_start_fraction = float(episode_start_fraction)
        frame_space = frame_space_of(wm, obs_mode)
        self.observation_space = frame_space if frame_stack == 1 else stacked_space(frame_space, frame_stack)
        self.action_space = wm.action_space
        check_memory(wm, num_envs * frame_stack, obs_mode)
        self.cache = wm.dynamics.new_cache(num_envs)
        self.latent_shape = (wm.dynamics_config.latent_tokens, wm.dynamics_config.latent_dim)  # (K, D)
        self.latents = torch.zeros(num_envs, *self.latent_shape, device=wm.device)  # (N, K, D)
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self.started = np.zeros(num_envs, dtype=bool)
        # Each env's last frame_stack observations, oldest first (the earliest repeated while there are fewer).
        self.history = np.zeros((num_envs, frame_stack, *frame_space.shape), dtype=frame_space.dtype)
        self._datasets: dict[str, EpisodeDataset] = {}
        if self.start_dataset is not None:
            self._dataset(self.start_dataset)  # a bad path fails here, not at the first reset
        # Each env's task (a task-conditioned model): as given, and as the numbers the dynamics reads.
        self.tasks: list[Any] = [None] * num_envs
        self.task_vectors = torch.zeros(num_envs, wm.dynamics_config.task_dim, device=wm.device)
        if wm.dynamics_config.task_dim:
            if task is None and not wm.env_spec.tasks:
                raise ValueError(f"the world model is conditioned on the task ({wm.dynamics_config.task_dim} numbers) and lists no "
                                 "training tasks to start from: pass task=...")
            self.set_task(np.arange(num_envs), wm.env_spec.tasks[0] if task is None else task)
        elif task is not None:
            self.set_task(np.arange(num_envs), task)  # raises: this model has no tasks

    # ------------------------------------------------------------------ tasks
    def set_task(self, rows: np.ndarray, task: Any) -> None:
        """Give envs ``rows`` the task ``task`` for their next and later episodes (until set again).

        A task is what the real env takes: the numbers of its tuple (DarkRoom's goal (x, y), DarkKeyToDoor's
        ((key), (door))) or, for an env that lists its tasks (``env.unwrapped.tasks``), an index into that list.

        Raises:
            ValueError: the model was trained on one task, or ``task`` is not one of this model's shape.
        """
        wm = self.world_model
        dim = wm.dynamics_config.task_dim
        if not dim:
            raise ValueError(f"task={task!r}: the world model was trained on one task ({wm.env_spec.task or wm.env_spec.env_id}); "
                             "only a model trained on runs of several tasks (a DarkRoom family's histories) takes a task")
        example = wm.env_spec.tasks[0] if wm.env_spec.tasks else None
        if isinstance(task, (int, np.integer)) and not isinstance(task, (bool, np.bool_)):
            listed = self._real_tasks()
            if not 0 <= int(task) < len(listed):
                raise ValueError(f"task index {task}: {wm.env_spec.env_id} lists {len(listed)} tasks; give 0..{len(listed) - 1} or a task like {example}")
            task = listed[int(task)]
        numbers = task_numbers(task, where="task")
        if numbers.size != dim:
            raise ValueError(f"task={task!r} has {numbers.size} numbers, but the world model was trained on tasks of {dim}, like {example}")
        for row in rows:
            self.tasks[int(row)] = np.asarray(task).tolist()
        self.task_vectors[torch.as_tensor(rows, device=wm.device)] = torch.from_numpy(numbers).to(wm.device)

    def _real_tasks(self) -> tuple[Any, ...]:
        if not hasattr(self, "_listed_tasks"):
            spec = self.world_model.env_spec
            env = gym.make(spec.env_id, **spec.env_kwargs)
            self._listed_tasks = tuple(getattr(env.unwrapped, "tasks", ()))
            env.close()
        if not self._listed_tasks:
            raise ValueError(f"{self.world_model.env_spec.env_id} lists no tasks to index: give the task itself")
        return self._listed_tasks

    # ------------------------------------------------------------------ reset
    def sample_context(self, rng: np.random.Generator, options: dict[str, Any] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Context frames (C, *obs_shape) and the C-1 actions between them, on the model's device.

        ``options``: None (a window of ``start_dataset``, or of the model's bundled start
        contexts), {"dataset": path} (a window of an episode dataset) or {"context_frames": (C, H, W, 3) uint8,
        "context_actions": (C-1, A)} (given, e.g. from a real env; C = 1 needs no actions). A "task"
        option is taken by `reset` before this.
        """
        wm, c = self.world_model, self.context_length
        options = dict(options or ({"dataset": self.start_dataset} if self.start_dataset else {}))
        unknown = set(options) - {"dataset", "context_frames", "context_actions"}
        if unknown or ("dataset" in options and "context_frames" in options):
            raise ValueError(
                f"reset options {sorted(options)}: give none, {{'dataset': path}}, or "
                "{'context_frames': (C, H, W, 3) uint8, 'context_actions': (C-1, A)}"
            )
        if "context_actions" in options and "context_frames" not in options:
            raise ValueError("reset options have context_actions but no context_frames: give both")
        if "context_frames" in options:
            return self._given_context(options["context_frames"], options.get("context_actions"))
        if "dataset" in options:
            path = os.fspath(options["dataset"])
            dataset = self._dataset(path)
            long_enough = np.flatnonzero(dataset.lengths + 1 >= c)
            if len(long_enough) == 0:
                raise ValueError(f"no episode of {path} has {c} frames: pass a smaller context_length")
            i = int(long_enough[rng.integers(len(long_enough))])
            # an episode's first frames (the real env's initial states) for a share of resets, else a window anywhere
            from_first = self.episode_start_fraction > 0 and rng.random() < self.episode_start_fraction
            start = 0 if from_first else int(rng.integers(dataset.lengths[i] + 2 - c))
            frames = wm.check_frames(dataset.read(i, "frames", start, start + c), f"frames of {path}")
            actions = dataset.read(i, "actions", start, start + c - 1).reshape(c - 1, *wm.action_space.shape)
            return frames, wm.check_actions(actions, (c - 1,), f"actions of {path}")
        starts, available = wm.start_frames, (wm.start_frames.shape[1] if wm.start_frames.dim() > 1 else 0)
        if available < c:
            raise ValueError(
                f"this world model bundles {len(starts) if available else 0} start contexts of {available} frames, "
                f"fewer than context_length={c}: pass a smaller context_length, or reset with "
                "options={'dataset': path} or {'context_frames': ..., 'context_actions': ...}"
            )
        i, start = int(rng.integers(len(starts))), int(rng.integers(available - c + 1))
        return starts[i, start : start + c], wm.check_actions(wm.start_actions[i, start : start + c - 1], (c - 1,))

    def _dataset(self, path: str) -> EpisodeDataset:
        if path not in self._datasets:
            dataset = EpisodeDataset(path)
            if dataset.observation_space != self.world_model.observation_space or dataset.action_space != self.world_model.action_space:
                raise ValueError(
                    f"{path} holds episodes of {dataset.task or dataset.env_id} with observations {dataset.observation_space} and actions "
                    f"{dataset.action_space}, but the world model was trained on {self.world_model.env_spec.task}: give a dataset of that env"
                )
            self._datasets[path] = dataset
        return self._datasets[path]

    def _given_context(self, frames, actions) -> tuple[torch.Tensor, torch.Tensor]:
        wm = self.world_model
        frames = wm.check_frames(frames, "context_frames")
        obs_shape = wm.observation_space.shape
        if frames.dim() != len(obs_shape) + 1 or len(frames) == 0:
            raise ValueError(
                f"context_frames have shape {tuple(frames.shape)}: give (C, {', '.join(map(str, obs_shape))}) "
                "with C >= 1, e.g. frame[None] for a single frame"
            )
        c = len(frames)
        if actions is None and c > 1:
            raise ValueError(f"{c} context_frames need the {c - 1} context_actions taken between them")
        if actions is None:
            actions = np.zeros((0, *wm.action_space.shape), dtype=wm.action_space.dtype)
        if len(actions) != c - 1:
            raise ValueError(
                f"{len(actions)} context_actions for {c} context_frames: give C-1 = {c - 1}, "
                "the action taken after each frame but the last"
            )
        return frames, wm.check_actions(actions, (c - 1,), "context_actions")

    @torch.no_grad()
    def reset(self, rows: np.ndarray, rngs: Sequence[np.random.Generator], options: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
        """Start envs ``rows`` (int (B,)) from context; each draws its context, then its noise.

        Returns the first observations (B, *obs_shape) (the last context frame, or its
        latents) and latents float32 (B, K*D).
        """
        options = dict(options or {})
        if "task" in options:
            self.set_task(rows, options.pop("task"))
        options = options or None
        observations, latents = [], []
        rows_per_chunk = max(1, CHUNK // self.context_length)  # a chunk's context frames, encoder activations and prefill stay bounded
        for start in range(0, len(rows), rows_per_chunk):
            chunk_observations, chunk_latents = self._reset_rows(rows[start : start + rows_per_chunk], rngs, options)
            observations.append(chunk_observations)
            latents.append(chunk_latents)
        return np.concatenate(observations), np.concatenate(latents)

    def _reset_rows(self, rows: np.ndarray, rngs: Sequence[np.random.Generator], options: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
        wm = self.world_model
        frames, actions, noise_ctx = [], [], []
        for row in rows:
            context_frames, context_actions = self.sample_context(rngs[row], options)
            frames.append(context_frames)
            actions.append(context_actions)
            noise_ctx.append(rngs[row].standard_normal((len(context_frames), *self.latent_shape), dtype=np.float32))
        frames, actions = torch.stack(frames), torch.stack(actions)  # (B, C, *obs_shape), (B, C-1, ...)
        z = wm.encode(frames)  # (B, C, K, D)
        per_frame_actions, action_mask = wm.context_inputs(actions, frames.shape[1])
        index = torch.as_tensor(rows, device=wm.device)
        task = self.task_vectors[index] if wm.dynamics_config.task_dim else None
        wm.dynamics.prefill(self.cache, index, z, per_frame_actions, action_mask, torch.from_numpy(np.stack(noise_ctx)).to(wm.device), task)
        self.latents[index] = z[:, -1]
        self.steps[rows], self.started[rows] = 0, True
        latents = rearrange(z[:, -1], "b k d -> b (k d)").cpu().numpy()
        k = self.frame_stack
        if self.obs_mode == "pixels":
            recent = frames[:, -k:]  # (B, <=k, *frame_shape)
        elif self.obs_mode == "latent":
            recent = rearrange(z[:, -k:], "b c k d -> b c (k d)")
        else:  # the model's state exists for the last context frame only, as for a real env's first frame
            recent = torch.cat([rearrange(z[:, -1], "b k d -> b (k d)"), self.cache.state[index]], dim=1)[:, None]
        recent = recent.cpu().numpy()
        self.history[rows] = np.concatenate([np.repeat(recent[:, :1], k - recent.shape[1], axis=1), recent], axis=1)
        return self.observe(rows), latents

    def observe(self, rows: np.ndarray) -> np.ndarray:
        """The observations of envs ``rows``: their current frames, or with ``frame_stack`` > 1 their last frames (B, k, ...)."""
        return self.history[rows, -1] if self.frame_stack == 1 else self.history[rows]

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, rows: np.ndarray, actions: torch.Tensor, rngs: Sequence[np.random.Generator]) -> ImaginedSteps:
        """Advance envs ``rows`` (int (B,)) by one imagined step; actions (B, A) checked by the model."""
        wm = self.world_model
        shape = (self.num_denoise_steps + 1, *self.latent_shape)
        noise_steps = torch.from_numpy(np.stack([rngs[row].standard_normal(shape, dtype=np.float32) for row in rows]))
        index = torch.as_tensor(rows, device=wm.device)
        z, reward, continue_prob = wm.dynamics.imagine_step(self.cache, index, actions, noise_steps.to(wm.device), wm.projection)
        z = z.clamp(-1, 1)  # the last Euler step returns z0_hat up to rounding; keep the space's bounds exact
        self.latents[index] = z
        self.steps[rows] += 1
        latents = rearrange(z, "b k d -> b (k d)").cpu().numpy()
        if self.obs_mode == "pixels":
            frames = torch.cat([wm.decode(chunk).cpu() for chunk in z.split(CHUNK)]).numpy()
        elif self.obs_mode == "latent":
            frames = latents
        else:
            frames = np.concatenate([latents, self.cache.state[index].cpu().numpy()], axis=1)
        if self.frame_stack > 1:  # shift in place: no copy of the whole stack on this hot path
            self.history[rows, :-1] = self.history[rows, 1:]
        self.history[rows, -1] = frames
        observations = self.observe(rows)
        continue_probs = continue_prob.double().cpu().numpy()
        limit = self.max_episode_steps
        return ImaginedSteps(
            observations=observations,
            rewards=reward.double().cpu().numpy(),
            terminated=(continue_probs < 0.5) & wm.env_spec.terminates,
            truncated=self.steps[rows] >= limit if limit is not None else np.zeros(len(rows), dtype=bool),
            latents=latents,
            continue_probs=continue_probs,
        )

    @torch.no_grad()
    def render(self, rows: np.ndarray) -> np.ndarray:
        """Decoded current frames uint8 (B, H, W, 3) of envs ``rows`` (after a reset: the
        tokenizer's reconstruction of the last context frame)."""
        latents = self.latents[torch.as_tensor(rows, device=self.world_model.device)]
        return torch.cat([self.world_model.decode(chunk).cpu() for chunk in latents.split(CHUNK)]).numpy()


class ImaginationSettings:
    """The settings of an imagined env, read from its batch; max_episode_steps may be changed."""

    _batch: ImaginedBatch

    @property
    def obs_mode(self) -> str:
        return self._batch.obs_mode

    @property
    def num_denoise_steps(self) -> int:
        return self._batch.num_denoise_steps

    @property
    def context_length(self) -> int:
        return self._batch.context_length

    @property
    def max_episode_steps(self) -> int | None:
        return self._batch.max_episode_steps

    @max_episode_steps.setter
    def max_episode_steps(self, steps: int | None) -> None:
        self._batch.max_episode_steps = check_max_episode_steps(steps)

    @property
    def frame_stack(self) -> int:
        return self._batch.frame_stack

    @property
    def start_dataset(self) -> str | None:
        return self._batch.start_dataset

    @property
    def episode_start_fraction(self) -> float:
        return self._batch.episode_start_fraction

    @property
    def tasks(self) -> tuple[Any, ...]:
        """Each env's task (a task-conditioned model; None otherwise), as set by ``task=`` or ``reset(options={"task": ...})``."""
        return tuple(self._batch.tasks)

    @property
    def kv_cache(self) -> KVCache:
        """The envs' KV cache: a ring buffer per env, its tensors' shapes fixed at construction."""
        return self._batch.cache


class ImaginationEnv(ImaginationSettings, gym.Env[np.ndarray, np.ndarray]):
    """A world model's imagined twin of a real env, with the same spaces (pixels) or latents.

    Observations: ``obs_mode="pixels"``: decoded frames in the real env's observation space
    (uint8 (H, W, 3)); ``"latent"``: float32 (K*D,) in [-1, 1], as `LatentObservation` gives
    for a real env; ``"state"``: float32 (K*D + W,), the latents then the dynamics model's state of
    the frame (`state_space`), as `ModelStateObservation` gives for a real env. Actions: the real env's action space; a Box action out of bounds is
    clipped, as the real DMC env does; a wrong shape, NaN or infinity raises ValueError.
    Reward: the reward head's prediction (float). ``terminated``: continue probability
    < 0.5 (never, when no training episode terminated: ``world_model.env_spec.terminates``). ``truncated``: the step count reached ``max_episode_steps``. ``info``: "latent"
    float32 (K*D,) and (after a step) "continue_prob" float.

    Reset (see `ImaginedBatch.sample_context`): by default a window of ``context_length``
    frames from ``start_dataset`` or the model's bundled real start contexts; ``options={"dataset": path}`` a
    window of an episode dataset; ``options={"context_frames": frames, "context_actions":
    actions}`` a context of C frames (C-1 actions; none for C = 1) from a real env. The
    first observation is the last context frame (pixels) or its latents.

    Args:
        world_model: a `WorldModel`, a bundled name ("cartpole-swingup"), a .safetensors
            file or a training run directory.
        obs_mode: "pixels", "latent" or "state".
        num_denoise_steps: shortcut sampling steps per env step, a power of two <= k_max
            (default: the model's ``dynamics_config.denoise_steps``, 4 for the cartpole models,
            1 for the deterministic DarkRoom).
        context_length: frames of context at a sampled reset (default: the model's
            context_length - 1, all it attends to; 1 for a model whose training episodes all
            start from the same observation, ``env_spec.start_context``: its imagined episodes
            start where the real ones do).
        max_episode_steps: truncation limit (default: the real env's, from the model).
            Through ``gym.make`` Gymnasium takes this argument for a TimeLimit wrapper,
            which can only shorten episodes; construct the env directly to lengthen them.
        device: "auto" (cuda when available), "cpu", "cuda", ... (a given `WorldModel`
            stays where it is).
        render_mode: "rgb_array" (`render()` returns the decoded current frame) or None.
        frame_stack: k > 1 observes the last k frames (or latents) (k, *frame_shape), oldest
            first, as Gymnasium's ``FrameStackObservation(env, k, padding_type="reset")`` does
            for the real env (`real_twin`); a reset fills them from its context frames.
        start_dataset: an episode dataset whose windows are the contexts of resets without
            options (default: the model's bundled start contexts).
        episode_start_fraction: the share of resets from a dataset whose context is an episode's
            first frames, where the real env's episodes start (default 0: a window anywhere). An
            agent trained from windows anywhere rarely practises the start (a swing-up from below).
        task: for a task-conditioned model (trained on runs of many tasks, like the DarkRoom
            family's; ``world_model.env_spec.tasks`` lists them): the task, as the real env takes
            it (DarkRoom's goal (x, y), or an index into its task list), kept for later episodes
            until ``reset(options={"task": ...})`` changes it, as in the real env. Default: the
            first training task.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": RENDER_FPS}

    @property
    def task(self) -> Any:
        """The current task (a task-conditioned model), as a list; None for a model of one task."""
        return self._batch.tasks[0]

    def __init__(
        self,
        world_model: str | os.PathLike | WorldModel,
        obs_mode: str = "pixels",
        num_denoise_steps: int | None = None,
        context_length: int | None = None,
        max_episode_steps: int | None = None,
        device: str | torch.device = "auto",
        render_mode: str | None = "rgb_array",
        frame_stack: int = 1,
        start_dataset: str | os.PathLike | None = None,
        task: Any = None,
        episode_start_fraction: float = 0.0,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: use 'rgb_array' or None")
        self.world_model = load_world_model(world_model, device)
        self._batch = ImaginedBatch(self.world_model, 1, obs_mode, num_denoise_steps, context_length, max_episode_steps, frame_stack,
                                    start_dataset, task, episode_start_fraction)
        self.observation_space, self.action_space = self._batch.observation_space, self._batch.action_space
        self.render_mode = render_mode
        self._row = np.zeros(1, dtype=np.int64)
        self._ended = False  # the last step terminated or truncated the episode

    @torch.no_grad()
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> ResetReturn:
        super().reset(seed=seed)
        observations, latents = self._batch.reset(self._row, [self.np_random], options)
        self._ended = False
        return observations[0], {"latent": latents[0]}

    @torch.no_grad()
    def step(self, action: np.ndarray) -> StepReturn:
        if not self._batch.started[0]:
            raise ResetNeeded("call reset() before step(): an imagined episode starts from a context")
        if self._ended:
            raise ResetNeeded("the episode has ended (terminated or truncated): call reset() before step(), as for any Gymnasium env")
        actions = self.world_model.check_actions(action, (), "action")[None]
        out = self._batch.step(self._row, actions, [self.np_random])
        self._ended = bool(out.terminated[0] or out.truncated[0])
        info = {"latent": out.latents[0], "continue_prob": float(out.continue_probs[0])}
        return out.observations[0], float(out.rewards[0]), bool(out.terminated[0]), bool(out.truncated[0]), info

    def render(self) -> np.ndarray | None:
        """The decoded current frame, uint8 (H, W, 3), or None when render_mode is None."""
        if self.render_mode is None:
            return None
        if not self._batch.started[0]:
            raise ResetNeeded("call reset() before render(): there is no frame yet")
        return self._batch.render(self._row)[0]


class ImaginationVectorEnv(ImaginationSettings, VectorEnv):
    """``num_envs`` imagined envs in one batch: each denoising pass is one model call for all.

    Spaces, observations, rewards and flags as `ImaginationEnv`, batched (rewards float64,
    flags bool, infos "latent" (N, K*D) and "continue_prob" (N,) with Gymnasium's "_key"
    masks). ``reset(seed=s)`` seeds env i with s + i (or ``seed=[...]``, one per env), as
    ``gym.make_vec`` does, and each env has its own generator, so the envs replay the
    episodes of single `ImaginationEnv`s with those seeds.

    Autoreset (``metadata["autoreset_mode"]``): ``AutoresetMode.NEXT_STEP`` (default): the
    step after an env is done resets it (default context) and returns its first
    observation with reward 0, not done. ``AutoresetMode.DISABLED``: reset done envs with
    ``reset(options={"reset_mask": mask})`` (bool (N,)) before stepping again; the other
    envs keep their state.

    Args:
        num_envs: number of envs N.
        autoreset_mode: an `AutoresetMode` (or its value, "NextStep" or "Disabled").
        task: every env's first task; ``reset(options={"task": t})`` sets ``t`` for the envs it resets.
        Others: as `ImaginationEnv`; ``max_episode_steps`` passes through ``make_vec``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": RENDER_FPS, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        world_model: str | os.PathLike | WorldModel,
        obs_mode: str = "pixels",
        num_denoise_steps: int | None = None,
        context_length: int | None = None,
        max_episode_steps: int | None = None,
        device: str | torch.device = "auto",
        render_mode: str | None = "rgb_array",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        frame_stack: int = 1,
        start_dataset: str | os.PathLike | None = None,
        task: Any = None,
        episode_start_fraction: float = 0.0,
    ) -> None:
        num_envs = check_count("num_envs", num_envs)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: use 'rgb_array' or None")
        autoreset_mode = AutoresetMode(autoreset_mode)
        if autoreset_mode == AutoresetMode.SAME_STEP:
            raise ValueError(
                "autoreset_mode=SAME_STEP is not supported: use NEXT_STEP or DISABLED "
                "(imaginegym.sb3_vec_env.ImaginationSB3VecEnv gives same-step resets for Stable-Baselines3)"
            )
        self.world_model = load_world_model(world_model, device)
        self._batch = ImaginedBatch(self.world_model, num_envs, obs_mode, num_denoise_steps, context_length, max_episode_steps,
                                    frame_stack, start_dataset, task, episode_start_fraction)
        self.num_envs, self.render_mode = num_envs, render_mode
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.autoreset_mode = autoreset_mode
        self.single_observation_space, self.single_action_space = self._batch.observation_space, self._batch.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._observations = np.zeros(self.observation_space.shape, dtype=self.observation_space.dtype)
        self._done = np.zeros(num_envs, dtype=bool)  # done at the last step, not reset since
        self._all = np.arange(num_envs)

    @property
    def np_random(self) -> tuple[np.random.Generator, ...]:
        """Each env's generator (created unseeded on first use, like `gym.Env.np_random`)."""
        return tuple(self._rng(i) for i in range(self.num_envs))

    def _rng(self, i: int) -> np.random.Generator:
        if self._rngs[i] is None:
            self._rngs[i], _ = seeding.np_random()
        return self._rngs[i]

    @torch.no_grad()
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None) -> ResetReturn:
        """Reset all envs, or those of ``options["reset_mask"]``; other options as `ImaginationEnv`."""
        n = self.num_envs
        seeds = [None] * n if seed is None else [seed + i for i in range(n)] if isinstance(seed, int) else list(seed)
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} envs: give one int (env i gets seed + i) or {n} seeds")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(n, dtype=bool)
        mask = np.asarray(mask)
        if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
            raise ValueError(
                f"reset_mask {mask!r}: give a bool numpy array of shape ({n},) with True for each env to reset"
            )
        rows = np.flatnonzero(mask)
        for i in rows:
            if seeds[i] is not None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
        observations, latents = self._batch.reset(rows, self.np_random, options)
        self._observations[rows] = observations
        self._done[rows] = False
        all_latents = np.zeros((n, latents.shape[1]), dtype=np.float32)
        all_latents[rows] = latents
        return self._observations.copy(), {"latent": all_latents, "_latent": mask.copy()}

    @torch.no_grad()
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        if not self._batch.started.all():
            raise ResetNeeded(f"envs {np.flatnonzero(~self._batch.started).tolist()} were never reset: call reset() before step()")
        if self.autoreset_mode == AutoresetMode.DISABLED and self._done.any():
            raise ValueError(
                f"envs {np.flatnonzero(self._done).tolist()} are done and autoreset_mode is DISABLED: "
                "reset them with reset(options={'reset_mask': terminated | truncated}) first"
            )
        actions = self.world_model.check_actions(actions, (n,), "actions")
        rewards, continue_probs = np.zeros(n), np.zeros(n)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        latents = np.zeros((n, int(np.prod(self._batch.latent_shape))), dtype=np.float32)
        resets, steps = np.flatnonzero(self._done), np.flatnonzero(~self._done)
        if len(resets):  # NEXT_STEP autoreset: reward 0, not done
            self._observations[resets], latents[resets] = self._batch.reset(resets, self.np_random, None)
        if len(steps):
            out = self._batch.step(steps, actions[torch.as_tensor(steps, device=actions.device)], self.np_random)
            self._observations[steps], latents[steps] = out.observations, out.latents
            rewards[steps], continue_probs[steps] = out.rewards, out.continue_probs
            terminated[steps], truncated[steps] = out.terminated, out.truncated
        self._done = terminated | truncated
        stepped = np.zeros(n, dtype=bool)
        stepped[steps] = True
        infos = {"latent": latents, "_latent": np.ones(n, dtype=bool), "continue_prob": continue_probs, "_continue_prob": stepped}
        return self._observations.copy(), rewards, terminated, truncated, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """Each env's decoded current frame, uint8 (H, W, 3), or None when render_mode is None."""
        if self.render_mode is None:
            return None
        if not self._batch.started.all():
            raise ResetNeeded("call reset() before render(): there are no frames yet")
        return tuple(self._batch.render(self._all))


def env_spec_mismatches(env: gym.Env, world_model: WorldModel) -> list[str]:
    """``"name: env vs model"`` for each setting of the model's env (id, task, size, action repeat...) that ``env`` has otherwise.

    Frames of the same size from another task or action repeat fit the tokenizer but not the dynamics, so the
    settings themselves are compared: the registered id (when the env was made by ``gym.make``) and each of the
    model's ``env_kwargs`` that the unwrapped env exposes as an attribute.
    """
    spec = world_model.env_spec
    mismatches = []
    if env.spec is not None and env.spec.id != spec.env_id:
        mismatches.append(f"id: {env.spec.id!r} vs {spec.env_id!r}")
    for name, value in spec.env_kwargs.items():
        actual = getattr(env.unwrapped, name, value)
        if actual != value:
            mismatches.append(f"{name}: {actual!r} vs {value!r}")
    return mismatches


def check_real_env(env: gym.Env, world_model: WorldModel) -> None:
    """Raise a ValueError unless ``env`` is the real env ``world_model`` was trained on (spaces and settings)."""
    fix = "make the env with the model's settings: gym.make(wm.env_spec.env_id, **wm.env_spec.env_kwargs)"
    expected = world_model.observation_space
    if env.observation_space != expected:
        raise ValueError(f"the env observes {env.observation_space} but the world model was trained on {expected}: {fix}")
    if env.action_space != world_model.action_space:
        raise ValueError(f"the env acts in {env.action_space} but the world model was trained on {world_model.action_space}: {fix}")
    mismatches = env_spec_mismatches(env, world_model)
    if mismatches:
        raise ValueError(f"the env differs from the one the world model was trained on: {'; '.join(mismatches)}: {fix}")


class ModelStateTracker:
    """Follows real episodes through a world model's dynamics, frame by frame, for `state_space` observations.

    ``start`` begins an episode from its first frame; ``advance`` commits the next real frame and the
    action that led to it, as imagination commits the frames it generates (re-noised to tau_ctx,
    flagged as the model's own), so a policy sees in the real env the state it saw in imagination.
    Each episode's noise comes from a generator seeded at ``start``.
    """

    def __init__(self, world_model: WorldModel) -> None:
        if world_model.dynamics_config.task_dim:
            raise ValueError("state observations of a real env need a model of one task; this one is conditioned on the task "
                             f"({world_model.dynamics_config.task_dim} numbers): observe its real env with obs_mode='latent'")
        self.world_model = world_model
        self.cache = world_model.dynamics.new_cache(1)
        self.rows = torch.zeros(1, dtype=torch.long, device=world_model.device)
        c = world_model.dynamics_config
        self.latent_shape = (c.latent_tokens, c.latent_dim)
        self.rng = np.random.default_rng()

    def _observation(self, z: torch.Tensor) -> np.ndarray:
        return torch.cat([z.reshape(1, -1), self.cache.state], dim=1)[0].float().cpu().numpy()

    @torch.no_grad()
    def start(self, frame: np.ndarray, seed: int | None = None) -> np.ndarray:
        """The observation of an episode's first frame (H, W, 3) uint8."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        wm = self.world_model
        z = wm.encode(frame[None, None])  # (1, 1, K, D)
        actions, mask = wm.context_inputs(torch.zeros(1, 0, *wm.action_space.shape, device=wm.device), 1)
        noise_ctx = torch.from_numpy(self.rng.standard_normal((1, 1, *self.latent_shape), dtype=np.float32)).to(wm.device)
        wm.dynamics.prefill(self.cache, self.rows, z, actions, mask, noise_ctx)
        return self._observation(z[:, -1])

    @torch.no_grad()
    def advance(self, frame: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The observation of the frame (H, W, 3) uint8 that ``action`` led to."""
        wm = self.world_model
        z = wm.encode(frame[None, None])[:, 0]  # (1, K, D)
        actions = wm.check_actions(np.asarray(action)[None], (1,), "action")
        noise_ctx = torch.from_numpy(self.rng.standard_normal((1, *self.latent_shape), dtype=np.float32)).to(wm.device)
        wm.dynamics.observe_step(self.cache, self.rows, z, actions, noise_ctx)
        return self._observation(z)


class ModelStateObservation(gym.Wrapper):
    """A real env observed as ``ImaginationEnv(obs_mode="state")`` is: each frame's latents and the model's state of it.

    The dynamics model follows the episode (one cached pass per step, the frame and the action taken),
    so the observation (K*D + W,) carries what the model has inferred from the frames before it, e.g.
    the pole's angular velocity, exactly as it does in imagination.

        real = ModelStateObservation(gym.make("imaginegym/DMC-v0", **wm.env_spec.env_kwargs), wm)
    """

    def __init__(self, env: gym.Env, world_model: str | os.PathLike | WorldModel, device: str | torch.device = "auto") -> None:
        super().__init__(env)
        self.world_model = load_world_model(world_model, device)
        check_real_env(env, self.world_model)
        self.observation_space = state_space(self.world_model)
        self.tracker = ModelStateTracker(self.world_model)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> ResetReturn:
        frame, info = self.env.reset(seed=seed, options=options)
        return self.tracker.start(frame, seed), info

    def step(self, action: np.ndarray) -> StepReturn:
        frame, reward, terminated, truncated, info = self.env.step(action)
        return self.tracker.advance(frame, action), reward, terminated, truncated, info  # the model clips it as the env does


class LatentObservation(gym.ObservationWrapper):
    """A real env whose observations are the world model's latents, as in imagination.

    Each frame is encoded by the tokenizer into float32 (K*D,) in [-1, 1], the observation
    space of ``ImaginationEnv(obs_mode="latent")``, so one policy runs in both:

        real = LatentObservation(gym.make("imaginegym/DMC-v0", **wm.env_spec.env_kwargs), wm)
    """

    def __init__(self, env: gym.Env, world_model: str | os.PathLike | WorldModel, device: str | torch.device = "auto") -> None:
        super().__init__(env)
        self.world_model = load_world_model(world_model, device)
        check_real_env(env, self.world_model)
        self.observation_space = latent_space(self.world_model)

    @torch.no_grad()
    def observation(self, observation: np.ndarray) -> np.ndarray:
        z = self.world_model.encode(observation[None])[0]  # (K, D)
        return rearrange(z, "k d -> (k d)").float().cpu().numpy()


def real_twin(world_model: str | os.PathLike | WorldModel, obs_mode: str = "pixels", frame_stack: int = 1,
              device: str | torch.device = "auto", **env_kwargs: Any) -> gym.Env:
    """The real env a world model imagines, observed as its imagined twin is: same spaces, same frame stack.

    ``gym.make(env_id, **env_kwargs)`` with the model's settings (``env_kwargs`` override them, e.g.
    ``render_mode``), wrapped in `LatentObservation` for ``obs_mode="latent"``, in `ModelStateObservation`
    for ``"state"``, and in Gymnasium's
    ``FrameStackObservation(..., padding_type="reset")`` for ``frame_stack`` > 1, so a policy trained in
    ``ImaginationEnv(world_model, obs_mode, frame_stack=frame_stack)`` acts in it unchanged.
    """
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode={obs_mode!r}: use 'pixels', 'latent' or 'state'")
    frame_stack = check_count("frame_stack", frame_stack)
    wm = load_world_model(world_model, device)
    env = gym.make(wm.env_spec.env_id, **{**wm.env_spec.env_kwargs, **env_kwargs})
    if obs_mode == "latent":
        env = LatentObservation(env, wm)
    elif obs_mode == "state":
        env = ModelStateObservation(env, wm)
    if frame_stack > 1:
        env = gym.wrappers.FrameStackObservation(env, frame_stack, padding_type="reset")
    return env
