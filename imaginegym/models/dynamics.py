"""Action-conditioned dynamics: a block-causal transformer over frames (DreamerV4-style).

Each frame is S = K + 2 tokens: [action | noise level & step size | K latent tokens]
(DreamerV4's layout), or, with ``condition_tokens=False``, S = K latent tokens to which
the action and noise-level embeddings are added: with K = 1 a third of the tokens, so
imagination passes and training steps cost about a third.
Tokens attend within their frame and to earlier frames; time enters through RoPE on the
frame index. The network predicts clean latents (x-prediction). The reward head and the
continue head read frame t+1 for the action taken at frame t (the action token of frame
t+1 is a_t). At inference a ring-buffer KV cache holds the last ``context_length - 1``
frames, so each imagined step costs the same however long the rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from imaginegym.models import noise
from imaginegym.models.transformer import Block, rope_angles
from imaginegym.validation import check_count


@dataclass(frozen=True)
class DynamicsConfig:
    latent_tokens: int = 4  # K, tokens per frame from the tokenizer
    latent_dim: int = 128  # D, dims per latent token
    action_kind: str = "box"  # "box" (continuous, actions (..., A)) or "discrete" (actions (...) int)
    action_dim: int = 1  # A for box, the number of actions for discrete
    width: int = 256  # transformer width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads (width must divide by them)
    mlp_ratio: int = 4  # MLP hidden width / width
    context_length: int = 16  # frames a prediction sees, itself included (= training window)
    k_max: int = 64  # finest step size 1/k_max
    prior_input: bool = False  # each frame's tokens also see its prior (the previous frame's estimate)
    context_noise: float = noise.TAU_CTX  # tau_ctx: the noise level of context frames at inference
    condition_tokens: bool = True  # action and noise level as tokens of their own; else added to the latent tokens
    mark_imagined: bool = False  # context frames the model imagined itself carry a learned flag (for rollout training)
    # Numbers per task for a multi-task env whose task is hidden from the observations (DarkRoom's goal (x, y)):
    # every frame's conditioning then includes the task's embedding. 0: one task (DMC).
    task_dim: int = 0
    # Shortcut steps per imagined frame unless the imagined env is told otherwise (its num_denoise_steps).
    # 1 suits a deterministic world (DarkRoom): one x-prediction from pure noise is its exact next frame,
    # and every further step only adds noise back.
    denoise_steps: int = 4

    def __post_init__(self):
        if self.action_kind not in ("box", "discrete"):
            raise ValueError(f"action_kind={self.action_kind!r}; use 'box' or 'discrete'")
        for name in ("latent_tokens", "latent_dim", "action_dim", "width", "depth", "heads", "mlp_ratio"):
            check_count(name, getattr(self, name))
        check_count("context_length", self.context_length, minimum=2)  # a past frame and the frame to predict
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"width={self.width} with heads={self.heads} gives heads of {self.width / self.heads:g} dims: "
                             "width must divide into heads of an even number of dims (RoPE rotates pairs), e.g. heads=4 for width=256")
        noise.step_levels(self.k_max)
        check_count("task_dim", self.task_dim, minimum=0)
        noise.step_level(self.denoise_steps, self.k_max)  # a power of two <= k_max
        if not 0 < self.context_noise < 1:
            raise ValueError(f"context_noise={self.context_noise} must lie in (0, 1); DreamerV4 uses 0.1")


def sliding_causal_mask(frames: int, window: int, device=None) -> torch.Tensor:
    """(T, T) bool: frame i sees frames j with i - window < j <= i."""
    index = torch.arange(frames, device=device)
    offset = index[:, None] - index[None, :]
    return (offset >= 0) & (offset < window)


class KVCache:
    """Keys and values of the last ``capacity`` frames of each env, in a ring buffer.

    Frame t lives in slot ``t % capacity``; one more slot at the end holds the frame being
    generated. ``valid`` marks filled slots and ``time`` is the index of each env's next
    frame. Envs of one batch may be at different times.
    """

    def __init__(self, depth: int, batch: int, heads: int, capacity: int, tokens_per_frame: int, head_dim: int,
                 latent_tokens: int, latent_dim: int, device, dtype, width: int = 0):
        shape = (depth, batch, heads, (capacity + 1) * tokens_per_frame, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.time = torch.zeros(batch, dtype=torch.long, device=device)
        self.prior = torch.zeros(batch, latent_tokens, latent_dim, device=device, dtype=dtype)  # next frame's prior mean
        # The model's state of each env's latest frame: its normalised last-layer hidden, averaged over the frame's tokens.
        self.state = torch.zeros(batch, width, device=device, dtype=dtype)
        self.task: torch.Tensor | None = None  # (batch, task_dim) each env's task, for a task-conditioned model
        self.capacity = capacity
        self.tokens_per_frame = tokens_per_frame
        self.batch = batch
        self.all_rows = torch.arange(batch, device=device)

    def is_all(self, rows: torch.Tensor) -> bool:
        return len(rows) == self.batch and bool(torch.equal(rows, self.all_rows))

    def layer(self, layer: int, rows: torch.Tensor, everyone: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, (capacity + 1) * S, dh) of envs ``rows``: views when all envs step."""
        if everyone:
            return self.k[layer], self.v[layer]
        return self.k[layer][rows], self.v[layer][rows]

    def key_mask(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, (capacity + 1) * S): valid cached tokens, then the new frame's own tokens."""
        s = self.tokens_per_frame
        cached = self.valid[rows].repeat_interleave(s, dim=1)
        own = torch.ones(len(rows), s, dtype=torch.bool, device=cached.device)
        return torch.cat([cached, own], dim=1)[:, None, None, :]

    def write(self, layer: int, rows: torch.Tensor, times: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v (B, H, F * S, dh) of frames at ``times`` (B, F) for envs ``rows`` (B,)."""
        s = self.tokens_per_frame
        slots = times % self.capacity  # (B, F)
        index = (slots[..., None] * s + torch.arange(s, device=slots.device)).flatten(1)  # (B, F*S)
        self.k[layer][rows[:, None], :, index] = rearrange(k, "b h n d -> b n h d")
        self.v[layer][rows[:, None], :, index] = rearrange(v, "b h n d -> b n h d")

    def reset(self, rows: torch.Tensor) -> None:
        self.valid[rows] = False
        self.time[rows] = 0
        self.prior[rows] = 0
        self.state[rows] = 0


class Dynamics(nn.Module):
    def __init__(self, config: DynamicsConfig):
        super().__init__()
        self.config = c = config
        self.first_latent = 2 if c.condition_tokens else 0  # index of the first latent token of a frame
        self.tokens_per_frame = c.latent_tokens + self.first_latent
        self.head_dim = c.width // c.heads
        self.latent_in = nn.Linear(c.latent_dim, c.width)
        self.latent_out = nn.Linear(c.width, c.latent_dim)
        # With ``prior_input`` a frame's latent tokens embed [z_tau, prior]: every context frame
        # then carries its own change from the frame before (a velocity), which attention
        # reads off one frame instead of subtracting two (DIAMOND stacks past frames likewise).
        self.prior_in = nn.Linear(c.latent_dim, c.width, bias=False) if c.prior_input else None
        if c.action_kind == "box":
            self.action_in = nn.Linear(c.action_dim, c.width)
        else:
            self.action_in = nn.Embedding(c.action_dim, c.width)
        self.no_action = nn.Parameter(torch.randn(c.width) * 0.02)  # for unlabeled video and episode starts
        self.register_buffer("tau_freqs", torch.exp(torch.linspace(0, math.log(1000.0), 32)), persistent=False)
        self.tau_mlp = nn.Sequential(nn.Linear(64, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.step_embed = nn.Embedding(noise.step_levels(c.k_max), c.width)
        self.token_type = nn.Parameter(torch.randn(self.tokens_per_frame, c.width) * 0.02)
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.RMSNorm(c.width)
        self.reward_head = nn.Sequential(nn.Linear(c.width, c.width), nn.SiLU(), nn.Linear(c.width, 1))
        self.continue_head = nn.Sequential(nn.Linear(c.width, c.width), nn.SiLU(), nn.Linear(c.width, 1))
        # Per-dimension statistics of the tokenizer's latents (set from the training data).
        # Diffusion runs on standardized latents: a fixed camera leaves most latent dims nearly
        # constant and the moving parts in small fluctuations, which raw unit-variance noise
        # (even tau_ctx = 0.1 on context frames) would drown.
        self.register_buffer("latent_mean", torch.zeros(c.latent_tokens, c.latent_dim))
        self.register_buffer("latent_std", torch.ones(c.latent_tokens, c.latent_dim))
        # With ``mark_imagined`` the context frames the model generated itself (in imagination, and
        # in the rollout windows of ``shortcut.rollout_forcing_loss``) carry this embedding, and real
        # ones do not: the model may then trust real context fully, and learn to correct the drift
        # of its own frames, without one costing the other. Zero at first: a no-op until trained.
        self.imagined_embed = nn.Parameter(torch.zeros(c.width)) if c.mark_imagined else None
        # With ``task_dim`` the task (standardized by the training tasks' statistics) enters every frame's
        # conditioning, beside its action: the reward of a DarkRoom cell depends on the hidden goal.
        self.task_in = nn.Sequential(nn.Linear(c.task_dim, c.width), nn.SiLU(), nn.Linear(c.width, c.width)) if c.task_dim else None
        # (None without tasks: no entries in the state dict, so single-task models keep their files)
        self.register_buffer("task_mean", torch.zeros(c.task_dim) if c.task_dim else None)
        self.register_buffer("task_std", torch.ones(c.task_dim) if c.task_dim else None)

    MIN_LATENT_STD = 0.01

    def set_latent_statistics(self, latents: torch.Tensor) -> None:
        """Standardize with the mean and std of ``latents`` (N, K, D), raw tokenizer latents."""
        self.latent_mean.copy_(latents.mean(0))
        self.latent_std.copy_(latents.std(0).clamp_min(self.MIN_LATENT_STD))

    def set_task_statistics(self, tasks: torch.Tensor) -> None:
        """Standardize tasks with the mean and std of ``tasks`` (N, task_dim), the training episodes' tasks."""
        self.task_mean.copy_(tasks.float().mean(0))
        self.task_std.copy_(tasks.float().std(0, unbiased=False).clamp_min(1e-3))

    def check_task(self, task: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """``task`` (B, task_dim) as float on the model's device; None for a model without tasks.

        Raises:
            ValueError: a task-conditioned model without a task, a task for a model without tasks, or a wrong shape.
        """
        dim = self.config.task_dim
        if not dim:
            if task is not None:
                raise ValueError("this dynamics model was trained on one task (task_dim=0): do not pass a task")
            return None
        if task is None:
            raise ValueError(f"this dynamics model is conditioned on the task ({dim} numbers per task): pass task (B, {dim})")
        if tuple(task.shape) != (batch, dim):
            raise ValueError(f"task has shape {tuple(task.shape)}, expected ({batch}, {dim}): one task of {dim} numbers per window or env")
        return task.to(device=self.no_action.device, dtype=torch.float32)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents (..., K, D) in [-1, 1] -> standardized latents, the space diffusion runs in."""
        return (z - self.latent_mean) / self.latent_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Standardized latents -> raw latents, clamped to the tokenizer's tanh range [-1, 1]."""
        return (z * self.latent_std + self.latent_mean).clamp(-1, 1)

    # ---------------------------------------------------------------- tokens in and out
    def embed_actions(self, actions, action_mask, task=None) -> torch.Tensor:
        """Actions (B, T, A) float or (B, T) long and mask (B, T) -> (B, T, W); "no action" where the mask is False.

        With ``task_dim``, ``task`` (B, task_dim) is each window's task: its embedding joins every frame's."""
        action = self.action_in(actions.long() if self.config.action_kind == "discrete" else actions)
        action = torch.where(action_mask[..., None], action, self.no_action)
        task = self.check_task(task, action.shape[0])
        if task is not None:
            action = action + self.task_in((task - self.task_mean) / self.task_std)[:, None]
        return action

    def embed_level(self, tau, level) -> torch.Tensor:
        """Noise level tau (B, T) float and step level (B, T) long -> (B, T, W)."""
        angles = tau[..., None] * self.tau_freqs  # (B, T, 32)
        return self.tau_mlp(torch.cat([angles.sin(), angles.cos()], dim=-1)) + self.step_embed(level)

    def embed(self, z_tau, action, level_token, prior, imagined=None) -> torch.Tensor:
        """Frames (B, T, K, D), embedded actions and levels (B, T, W), priors (B, T, K, D) -> tokens (B, T, S, W).

        ``imagined`` (B, T) bool marks context frames the model generated (``mark_imagined``)."""
        if imagined is not None and self.imagined_embed is not None:
            level_token = level_token + imagined[..., None].to(level_token.dtype) * self.imagined_embed
        latents = self.latent_in(z_tau)  # (B, T, K, W)
        if self.prior_in is not None:
            latents = latents + self.prior_in(prior)
        if self.config.condition_tokens:
            x = torch.cat([action[:, :, None], level_token[:, :, None], latents], dim=2)
        else:
            x = latents + (action + level_token)[:, :, None]
        return x + self.token_type

    def read(self, h: torch.Tensor, z_tau: torch.Tensor, tau: torch.Tensor, prior: torch.Tensor, heads: bool = True):
        """Hidden states (B, T, S, W) of frames z_tau at tau (with each frame's prior, see
        ``noise.precondition``) -> z0_hat (B, T, K, D), reward (B, T), continue logit (B, T).

        ``heads=False`` skips the reward and continue heads (None), for denoising passes."""
        h = self.norm(h)
        z0_hat = noise.precondition(z_tau, tau, self.latent_out(h[:, :, self.first_latent:]), prior)
        if not heads:
            return z0_hat, None, None
        pooled = h.mean(dim=2)
        return z0_hat, self.reward_head(pooled)[..., 0], self.continue_head(pooled)[..., 0]

    # ---------------------------------------------------------------- training: whole windows
    def forward(self, z_tau, tau, level, actions, action_mask, times=None, frame_mask=None, prior=None, imagined=None, task=None):
        """Predict every frame of a window at once.

        z_tau (B, T, K, D); tau (B, T) float; level (B, T) long (d = 2**level / k_max);
        actions (B, T, A) float or (B, T) long, the action that led into each frame;
        action_mask (B, T) bool. ``times`` (T,) are frame indices for RoPE (default 0..T-1)
        and ``frame_mask`` (T, T) bool says which frames each frame attends to (default
        block-causal within a sliding window of ``context_length`` frames, as at inference).
        ``prior`` (B, T, K, D) is each frame's prior mean (default: the estimate of the frame
        before it, ``noise.previous_frame_prior``). ``imagined`` (B, T) bool marks context frames
        that the model generated itself (used with ``mark_imagined``; default: none). ``task``
        (B, task_dim) is each window's task (a model with ``task_dim`` only).
        Returns z0_hat (B, T, K, D), reward (B, T), continue logits (B, T).
        """
        b, t = tau.shape
        s = self.tokens_per_frame
        if times is None:
            times = torch.arange(t, device=tau.device)
        if frame_mask is None:
            frame_mask = sliding_causal_mask(t, self.config.context_length, tau.device)
        mask = frame_mask.repeat_interleave(s, 0).repeat_interleave(s, 1)
        cos, sin = rope_angles(times.repeat_interleave(s), self.head_dim)
        rope = (cos[None, None], sin[None, None])
        if prior is None:
            prior = noise.previous_frame_prior(z_tau, tau)
        tokens = self.embed(z_tau, self.embed_actions(actions, action_mask, task), self.embed_level(tau, level), prior, imagined)
        x = rearrange(tokens, "b t s w -> b (t s) w")
        for block in self.blocks:
            x = block(x, mask, rope)
        return self.read(rearrange(x, "b (t s) w -> b t s w", s=s), z_tau, tau, prior)

    # ---------------------------------------------------------------- imagination: KV cache
    def new_cache(self, batch: int, device=None, dtype=torch.float32) -> KVCache:
        device = device or self.no_action.device
        c = self.config
        cache = KVCache(c.depth, batch, c.heads, c.context_length - 1, self.tokens_per_frame, self.head_dim,
                        c.latent_tokens, c.latent_dim, device, dtype, c.width)
        if c.task_dim:
            cache.task = torch.zeros(batch, c.task_dim, device=device)
        return cache

    def _step_inputs(self, cache: KVCache, rows, actions, action_mask) -> dict:
        """What every pass of one imagined step shares: RoPE angles, attention mask, action embedding, prior."""
        s = self.tokens_per_frame
        times = cache.time[rows]
        cos, sin = rope_angles(repeat(times, "b -> b s", s=s), self.head_dim)
        return {
            "times": times, "rope": (cos[:, None], sin[:, None]), "everyone": cache.is_all(rows),
            # every slot filled (the steady state): no mask, so attention takes its fast path
            "mask": None if bool(cache.valid[rows].all()) else cache.key_mask(rows),
            "action": self.embed_actions(actions, action_mask, None if cache.task is None else cache.task[rows]),
            "prior": cache.prior[rows][:, None],
        }

    def _cached_pass(self, cache: KVCache, rows, z, tau: float, level: int, step: dict, commit: bool, heads: bool | None = None):
        """One frame per env (z (B, 1, K, D)) against the cache; commit=True stores it as context.

        ``step`` comes from ``_step_inputs``. The reward and continue heads run when ``heads``
        (by default: when committing). A committed frame is imagined context: with
        ``mark_imagined`` it carries the flag."""
        s = self.tokens_per_frame
        tau = torch.full((1, 1), float(tau), device=z.device)  # one noise level for every env
        level_token = self.embed_level(tau, torch.full((1, 1), int(level), dtype=torch.long, device=z.device))
        if commit and self.imagined_embed is not None:
            level_token = level_token + self.imagined_embed
        x = rearrange(self.embed(z, step["action"], level_token.expand(len(rows), 1, -1), step["prior"]), "b t s w -> b (t s) w")
        for i, block in enumerate(self.blocks):
            x, k, v = block.forward_cached(x, step["rope"], *cache.layer(i, rows, step["everyone"]), step["mask"])
            if commit:
                cache.write(i, rows, step["times"][:, None], k, v)
        h = rearrange(x, "b (t s) w -> b t s w", s=s)
        out = self.read(h, z, tau, step["prior"], heads=commit if heads is None else heads)
        if commit:
            cache.state[rows] = self.norm(h[:, 0]).mean(dim=1)
            cache.valid[rows, step["times"] % cache.capacity] = True
            cache.time[rows] += 1
            cache.prior[rows] = noise.clean_estimate(z, tau)[:, 0]
        return out

    @torch.no_grad()
    def prefill(self, cache: KVCache, rows: torch.Tensor, z_context, actions, action_mask, noise_ctx, task=None) -> None:
        """Start envs ``rows`` from context frames (B, C, K, D) of raw latents, re-noised to tau_ctx.

        Keeps the last ``context_length - 1`` frames; ``noise_ctx`` has the shape of z_context.
        ``task`` (B, task_dim): the envs' tasks (a model with ``task_dim`` only), kept for their later steps.
        """
        task = self.check_task(task, len(rows))
        if task is not None:
            cache.task[rows] = task
        keep = cache.capacity
        z_context, actions, action_mask, noise_ctx = (x[:, -keep:] for x in (z_context, actions, action_mask, noise_ctx))
        z_context = self.normalize(z_context)
        b, t = z_context.shape[:2]
        s = self.tokens_per_frame
        cache.reset(rows)
        tau = torch.full((b, t), self.config.context_noise, device=z_context.device)
        z_tau = noise.add_noise(z_context, tau, noise_ctx)
        level = torch.zeros(b, t, dtype=torch.long, device=z_context.device)
        prior = noise.previous_frame_prior(z_tau, tau)
        tokens = self.embed(z_tau, self.embed_actions(actions, action_mask, task), self.embed_level(tau, level), prior)
        x = rearrange(tokens, "b t s w -> b (t s) w")
        times = torch.arange(t, device=z_context.device)
        cos, sin = rope_angles(times.repeat_interleave(s), self.head_dim)
        rope = (cos[None, None], sin[None, None])
        mask = sliding_causal_mask(t, t, x.device).repeat_interleave(s, 0).repeat_interleave(s, 1)
        for i, block in enumerate(self.blocks):
            buffer = x.new_zeros(b, self.config.heads, t * s, self.head_dim)
            x, k, v = block.forward_cached(x, rope, buffer, buffer.clone(), mask)
            cache.write(i, rows, repeat(times, "t -> b t", b=b), k, v)
        cache.valid[rows[:, None], times % cache.capacity] = True
        cache.time[rows] = t
        cache.prior[rows] = noise.clean_estimate(z_tau[:, -1], tau[:, -1])
        cache.state[rows] = self.norm(x[:, -s:]).mean(dim=1)

    @torch.no_grad()
    def imagine_step(self, cache: KVCache, rows: torch.Tensor, actions, noise_steps: torch.Tensor, project=None):
        """Generate the next frame of envs ``rows`` given the action taken now.

        actions (B, A) float or (B,) long; noise_steps (B, num_steps + 1, K, D): the initial
        noise, then the noise that re-noises the result to tau_ctx when it enters the cache.
        ``project`` maps raw latents (B, K, D) to raw latents before the frame enters the cache
        (`WorldModel.projection`: a discrete world's latents snapped to the cell they decode to).
        Returns raw latents z0 (B, K, D) in [-1, 1], reward (B,), continue probability (B,).
        """
        low, high = self.normalize(-torch.ones_like(self.latent_mean)), self.normalize(torch.ones_like(self.latent_mean))
        num_steps = noise_steps.shape[1] - 1
        level = noise.step_level(num_steps, self.config.k_max)
        action_mask = torch.ones(len(rows), 1, dtype=torch.bool, device=noise_steps.device)
        step = self._step_inputs(cache, rows, actions[:, None], action_mask)
        z = noise_steps[:, :1]
        for tau, d in noise.denoise_schedule(num_steps):
            z0_hat = self._cached_pass(cache, rows, z, tau, level, step, commit=False)[0]
            z0_hat = torch.maximum(torch.minimum(z0_hat, high), low)  # the tokenizer's tanh range
            z = noise.euler_step(z, z0_hat, torch.tensor(tau, device=z.device), d)
        if project is not None:  # onto the observations' own latents (a discrete world), before the frame becomes context
            z = self.normalize(project(self.denormalize(z[:, 0])))[:, None]
        reward, cont = self._commit(cache, rows, z, step, noise_steps[:, -1:])
        return self.denormalize(z[:, 0]), reward, cont

    def _commit(self, cache: KVCache, rows, z, step: dict, noise_ctx: torch.Tensor):
        """A clean frame z (B, 1, K, D) (standardized) enters the cache as context, re-noised to tau_ctx with
        ``noise_ctx`` (B, 1, K, D); returns the reward (B,) and continue probability (B,) the model reads from it."""
        tau_ctx = self.config.context_noise
        z_ctx = noise.add_noise(z, torch.full(z.shape[:2], tau_ctx, device=z.device), noise_ctx)
        _, reward, cont = self._cached_pass(cache, rows, z_ctx, tau_ctx, 0, step, commit=True)
        return reward[:, 0], torch.sigmoid(cont[:, 0])

    @torch.no_grad()
    def observe_step(self, cache: KVCache, rows: torch.Tensor, z, actions, noise_ctx: torch.Tensor):
        """Commit a frame that was observed, not generated: real latents z (B, K, D) reached by ``actions``.

        The frame enters the cache as an imagined one does (re-noised to tau_ctx with ``noise_ctx``
        (B, K, D), flagged like the model's own frames), so the state it leaves in ``cache.state`` is
        the state imagination gives a policy. Returns the model's reward (B,) and continue
        probability (B,) for the frame.
        """
        action_mask = torch.ones(len(rows), 1, dtype=torch.bool, device=z.device)
        step = self._step_inputs(cache, rows, actions[:, None], action_mask)
        return self._commit(cache, rows, self.normalize(z)[:, None], step, noise_ctx[:, None])
