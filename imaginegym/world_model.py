"""WorldModel = tokenizer + dynamics (with reward and continue heads): encode, decode, imagine.

A world model is one safetensors file: the weights, a few real start contexts for resets
without a dataset, and the configuration as JSON in the file's metadata, so
``WorldModel.load(path)`` needs nothing else and never unpickles anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open
from torch import nn

from imaginegym.data.atomic import atomic_write
from imaginegym.data.spaces import space_from_json
from imaginegym.models.dynamics import Dynamics, DynamicsConfig
from imaginegym.models.tokenizer import TokenizerConfig, make_tokenizer

FORMAT_VERSION = 1
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


@dataclass(frozen=True)
class EnvSpec:
    """What the model was trained on; the imagined env copies its spaces from here."""

    env_id: str
    task: str
    observation_space: dict[str, Any]  # JSON of a gymnasium space
    action_space: dict[str, Any]
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. size, action_repeat
    max_episode_steps: int | None = None
    # The tasks of the training runs (DarkRoom goals [x, y], ...) for a task-conditioned model; None: one task.
    # The imagined env starts on the first, and takes any other by reset(options={"task": ...}).
    tasks: list[Any] | None = None
    # False when no training episode terminated (DMC, the DarkRoom family: episodes only truncate): imagined
    # episodes then end by truncation alone, never by an error of the continue head, which had nothing to learn.
    terminates: bool = True
    # Frames of real context an imagined episode starts from by default (None: all the model attends to).
    # 1 when every training episode starts from the same discrete or vector observation (the DarkRoom family): an imagined
    # episode then starts where the real one does, at its reset observation, and lasts as long.
    start_context: int | None = None


def _config_to_json(tokenizer: TokenizerConfig, dynamics: DynamicsConfig, env: EnvSpec) -> str:
    return json.dumps({"format_version": FORMAT_VERSION, "tokenizer": asdict(tokenizer), "dynamics": asdict(dynamics), "env": asdict(env)})


def _config_from_json(text: str, where: str) -> tuple[TokenizerConfig, DynamicsConfig, EnvSpec]:
    data = json.loads(text)
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{where} has world-model format {version}, this imaginegym reads format {FORMAT_VERSION}: "
            "retrain it with this version (`imaginegym train world-model`) or install the imaginegym that wrote it"
        )
    return TokenizerConfig(**data["tokenizer"]), DynamicsConfig(**data["dynamics"]), EnvSpec(**data["env"])


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A bundled model name (e.g. "cartpole-swingup") or a path to a .safetensors file or run directory."""
    path = Path(name_or_path)
    bundled = PRETRAINED_DIR / str(name_or_path) / "world_model.safetensors"
    if path.is_dir():
        if (path / "world_model.safetensors").is_file():
            return path / "world_model.safetensors"
        # A run directory still training, or an unrelated folder, must not stand in for a bundled model of the same name.
        also = f"; the bundled model {str(name_or_path)!r} is at {bundled}: pass that path to use it" if bundled.is_file() else ""
        raise FileNotFoundError(
            f"{str(name_or_path)!r} is a directory without world_model.safetensors (an unfinished run? `imaginegym train "
            f"world-model --out {name_or_path}` exports it at the end){also}"
        )
    if path.is_file():
        return path
    if bundled.is_file():
        return bundled
    names = sorted(p.parent.name for p in PRETRAINED_DIR.glob("*/world_model.safetensors"))
    raise FileNotFoundError(
        f"no world model at {str(name_or_path)!r}: give a bundled name ({', '.join(names) or 'none bundled'}), "
        "a .safetensors file, or a training run directory (`imaginegym train world-model --out DIR`)"
    )


class WorldModel(nn.Module):
    """Tokenizer + action-conditioned dynamics.

        wm = WorldModel.load("cartpole-swingup")
        z = wm.encode(frames)                  # uint8 (B, T, H, W, 3) -> float (B, T, K, D)
        frames = wm.decode(z)                  # -> uint8 (B, T, H, W, 3)
        out = wm.imagine(context_frames, context_actions, actions)   # open loop
    """

    def __init__(self, tokenizer: TokenizerConfig, dynamics: DynamicsConfig, env: EnvSpec):
        super().__init__()
        if (tokenizer.latent_tokens, tokenizer.token_dim) != (dynamics.latent_tokens, dynamics.latent_dim):
            raise ValueError(
                f"tokenizer gives {tokenizer.latent_tokens} tokens x {tokenizer.token_dim} dims but dynamics "
                f"expects {dynamics.latent_tokens} x {dynamics.latent_dim}: build the dynamics config from the tokenizer's"
            )
        self.tokenizer_config, self.dynamics_config, self.env_spec = tokenizer, dynamics, env
        self.tokenizer = make_tokenizer(tokenizer)
        # Convolution weights in channels-last layout: decoding runs about 1.4x faster on CPU
        # (pixel frames differ by at most one level of 255). Saved files stay contiguous.
        self.tokenizer.to(memory_format=torch.channels_last)
        self.dynamics = Dynamics(dynamics)
        self.observation_space = space_from_json(env.observation_space)
        self.action_space = space_from_json(env.action_space)
        # Real start contexts for resets without a dataset: frames (N, C, H, W, 3), actions (N, C-1, A).
        self.register_buffer("start_frames", torch.zeros(0, dtype=torch.uint8), persistent=False)
        self.register_buffer("start_actions", torch.zeros(0), persistent=False)

    def set_context_noise(self, tau: float) -> None:
        """Imagine with context frames at noise level ``tau`` (tau_ctx) instead of the trained one."""
        self.dynamics_config = replace(self.dynamics_config, context_noise=tau)  # validates tau
        self.dynamics.config = self.dynamics_config

    def set_opacity_floor(self, floor: float) -> None:
        """Decode with opacities at or below ``floor`` counted as 0 (a CNN tokenizer over a median background)."""
        self.tokenizer.set_opacity_floor(floor)
        self.tokenizer_config = self.tokenizer.config

    @property
    def device(self) -> torch.device:
        return self.dynamics.no_action.device

    # ------------------------------------------------------------------ validation
    def check_frames(self, frames: torch.Tensor | np.ndarray, name: str = "frames") -> torch.Tensor:
        """Observations as a tensor on the model's device, or a ValueError naming what is wrong."""
        frames = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
        space = self.observation_space
        shape = tuple(space.shape)
        if frames.dim() < len(shape) or tuple(frames.shape[frames.dim() - len(shape):]) != shape:
            raise ValueError(
                f"{name} have shape {tuple(frames.shape)}, the world model expects (..., {', '.join(map(str, shape))}): "
                f"was it trained on {self.env_spec.task} at this size?"
            )
        expected = torch.from_numpy(np.zeros(0, dtype=space.dtype)).dtype
        if frames.dtype != expected:
            raise ValueError(f"{name} have dtype {frames.dtype}, the world model expects {expected} (the env's observations)")
        if frames.is_floating_point() and not torch.isfinite(frames).all():
            raise ValueError(f"{name} contain NaN or infinity")
        return frames.to(self.device)

    def check_actions(self, actions: torch.Tensor | np.ndarray, lead: tuple[int, ...], name: str = "actions") -> torch.Tensor:
        """Actions (*lead, A) float (Box, clipped to its bounds) or (*lead,) int (Discrete)."""
        if not isinstance(actions, torch.Tensor):
            array = np.asarray(actions)
            if array.dtype.kind not in "biuf":  # strings, None, objects: no numbers to act on
                expected = f"{lead} integers" if self.dynamics_config.action_kind == "discrete" else f"floats of shape {(*lead, self.dynamics_config.action_dim)}"
                raise ValueError(f"{name} {actions!r} are not numbers: the world model expects {expected} (the env's action_space)")
            actions = torch.as_tensor(array)
        if self.dynamics_config.action_kind == "discrete":
            if tuple(actions.shape) != lead:
                raise ValueError(f"{name} have shape {tuple(actions.shape)}, expected {lead} (one integer action each)")
            if actions.is_floating_point() or (actions.numel() and (actions.min() < 0 or actions.max() >= self.dynamics_config.action_dim)):
                raise ValueError(f"{name} must be integers in [0, {self.dynamics_config.action_dim}), got {actions.tolist()}")
            return actions.long().to(self.device)
        a = self.dynamics_config.action_dim
        if tuple(actions.shape) != (*lead, a):
            raise ValueError(
                f"{name} have shape {tuple(actions.shape)}, the world model expects {(*lead, a)}: "
                f"was it trained on {self.env_spec.task}?"
            )
        actions = actions.float()
        if not torch.isfinite(actions).all():
            raise ValueError(f"{name} contain NaN or infinity: {actions.tolist()}")
        low = torch.as_tensor(self.action_space.low, dtype=torch.float32, device=actions.device)
        high = torch.as_tensor(self.action_space.high, dtype=torch.float32, device=actions.device)
        return torch.maximum(torch.minimum(actions, high), low).to(self.device)

    # ------------------------------------------------------------------ encode / decode
    @torch.no_grad()
    def encode(self, frames) -> torch.Tensor:
        """Observations (..., *obs_shape) -> latents float (..., K, D) in [-1, 1]."""
        return self.tokenizer.encode(self.check_frames(frames))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (..., K, D) -> observations (uint8 frames (..., H, W, 3) for pixels)."""
        return self.tokenizer.decode_observation(latents.to(self.device))

    @property
    def projection(self):
        """For discrete observations (an embedding tokenizer), a map of raw latents onto the latents of the observation they
        decode to; None for pixels and vectors.

        Imagination applies it to each generated frame before it becomes context: the frame is then exactly the cell the env
        reports, and small errors of the latents cannot add up from step to step until the decoded cell jumps (without it,
        the DarkRoom model let an agent that stays put drift to another cell within 20 steps in 14 of 20 trials)."""
        if self.tokenizer_config.kind != "embedding":
            return None
        return lambda z: self.tokenizer.encode(self.tokenizer.decode_observation(z))

    def context_inputs(self, context_actions: torch.Tensor, frames: int):
        """Per-frame actions (B, C, ...) and mask (B, C) from the C-1 actions between C frames."""
        b = context_actions.shape[0]
        first = context_actions.new_zeros((b, 1, *context_actions.shape[2:]))  # also for C = 1 (no actions)
        actions = torch.cat([first, context_actions], dim=1)
        mask = torch.ones(b, frames, dtype=torch.bool, device=actions.device)
        mask[:, 0] = False
        return actions, mask

    @torch.no_grad()
    def imagine(self, context_frames, context_actions, actions, num_denoise_steps: int | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Open-loop imagination from real context.

        context_frames (B, C, H, W, 3) uint8; context_actions (B, C-1, A): the actions between
        them; actions (B, H, A): the actions to imagine. Returns ``frames`` (B, H, H_img, W_img, 3)
        uint8, ``latents`` (B, H, K, D), ``rewards`` (B, H) (reward of each action) and
        ``continues`` (B, H) (probability that the episode goes on).
        """
        frames = self.check_frames(context_frames, "context_frames")
        b, c = frames.shape[:2]
        ctx_actions = self.check_actions(context_actions, (b, c - 1), "context_actions")
        actions = self.check_actions(actions, (b, actions.shape[1]))
        num_denoise_steps = num_denoise_steps or self.dynamics_config.denoise_steps
        z_ctx = self.tokenizer.encode(frames)
        per_frame, mask = self.context_inputs(ctx_actions, c)
        cache = self.dynamics.new_cache(b)
        rows = torch.arange(b, device=self.device)
        k, d = self.dynamics_config.latent_tokens, self.dynamics_config.latent_dim

        def randn(*shape):
            return torch.randn(*shape, generator=generator, device="cpu" if generator is None else generator.device).to(self.device)

        self.dynamics.prefill(cache, rows, z_ctx, per_frame, mask, randn(*z_ctx.shape))
        latents, rewards, continues = [], [], []
        for t in range(actions.shape[1]):
            z, r, p = self.dynamics.imagine_step(cache, rows, actions[:, t], randn(b, num_denoise_steps + 1, k, d), self.projection)
            latents.append(z), rewards.append(r), continues.append(p)
        latents = torch.stack(latents, 1)
        return {"frames": self.decode(latents), "latents": latents, "rewards": torch.stack(rewards, 1), "continues": torch.stack(continues, 1)}

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write one .safetensors file atomically (weights, start contexts, config as JSON)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"tokenizer.{k}": v for k, v in self.tokenizer.state_dict().items()}
        tensors.update({f"dynamics.{k}": v for k, v in self.dynamics.state_dict().items()})
        if self.start_frames.numel():
            tensors["start_frames"], tensors["start_actions"] = self.start_frames, self.start_actions
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"imaginegym": _config_to_json(self.tokenizer_config, self.dynamics_config, self.env_spec)}
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> "WorldModel":
        """A bundled name ("cartpole-swingup"), a .safetensors file, or a run directory."""
        path = resolve_model_path(name_or_path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a safetensors world model ({error}); export one with `imaginegym train world-model`") from error
        if "imaginegym" not in meta:
            raise ValueError(f"{path} holds no imaginegym configuration: is it a world model written by `WorldModel.save`?")
        model = cls(*_config_from_json(meta["imaginegym"], str(path)))
        tensors = load_file(str(path))
        try:
            model.tokenizer.load_state_dict({k[10:]: v for k, v in tensors.items() if k.startswith("tokenizer.")})
            model.dynamics.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("dynamics.")})
        except RuntimeError as error:
            raise ValueError(
                f"{path}: its weights do not fit the architecture its configuration describes in this imaginegym "
                f"(was it written by another version?): {str(error).splitlines()[0]} Re-export or retrain it."
            ) from error
        if "start_frames" in tensors:
            model.start_frames, model.start_actions = tensors["start_frames"], tensors["start_actions"]
        return model.to(resolve_device(device)).eval()


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> cuda when available, else cpu; any other device is checked to exist here.

    Raises:
        ValueError: ``device`` is not a device name, or names a CUDA (or MPS) device this machine lacks.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from error
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={str(device)!r}, but this PyTorch sees no CUDA device (torch.cuda.is_available() is False): "
                             "use device='cpu', or 'auto' to take a GPU only when there is one")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device={str(device)!r}, but this machine has {count} CUDA device(s): use cuda:0 to cuda:{count - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={str(device)!r}, but MPS is not available here: use device='cpu' or 'auto'")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={str(device)!r}: imaginegym runs on 'cpu', 'cuda' or 'mps'")
    return resolved
