"""Algorithm Distillation (AD) and Compressed AD: transformers that act from a learning history.

A history is a stream of transitions; the token of step t carries (observation_t, previous
action, previous reward, previous step ended an episode), and the model predicts action_t from
it and the tokens before it. Histories run across episode boundaries: nothing is cleared.

- `ADModel`: a causal transformer over the last ``context`` tokens.
- `CompressedADModel`: a causal decoder over [``n_latent`` latents | at most ``window`` recent
  tokens]. Older history is folded into the latents ``segment`` tokens at a time by a
  compression encoder, which reads [latents | segment | queries] and returns the queries'
  outputs as the new latents, recursively, so memory stays constant however long the history.
  In the decoder, latents attend to each other bidirectionally (and never to transitions);
  transitions attend to every latent and causally to transitions. Pre-norm layers, with layer
  norms at the encoder's input and output and at the decoder's input, the same in training
  and in evaluation.

Both read the spaces through `TransitionEmbedding` and act through `ActionHead`: Discrete
actions (categorical) or Box actions (Gaussian, tanh-free, clipped by the agent);
observations Discrete, MultiDiscrete (one embedding per coordinate) or Box (linear).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.nn import functional as F

MODEL_NAMES = ("ad", "compressed-ad")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of an in-context model (one `imaginegym ad train` flag each)."""

    model: str = "ad"  # ad | compressed-ad
    d_model: int = 64  # token width
    layers: int = 3  # decoder (AD: the transformer) layers
    heads: int = 4  # attention heads
    dropout: float = 0.1  # dropout in attention and feed-forward blocks
    context: int = 80  # AD: transitions attended to (a sliding window over the history)
    n_latent: int = 16  # Compressed AD: latent tokens that hold the compressed history
    segment: int = 10  # Compressed AD: transitions folded into the latents at once
    window: int = 20  # Compressed AD: most recent transitions the decoder attends to (when full, the oldest segment is folded)
    encoder_layers: int = 2  # Compressed AD: compression encoder layers

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model={self.model!r}: use one of {', '.join(MODEL_NAMES)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of heads={self.heads}")
        if self.model == "compressed-ad" and not 0 < self.segment <= self.window:
            raise ValueError(f"segment={self.segment} must be in 1..window={self.window}: the decoder folds its oldest segment "
                             "into the latents when its window is full")

    @property
    def attended(self) -> int:
        """Transitions the decoder attends to at most."""
        return self.context if self.model == "ad" else self.window


def _space_json(space: spaces.Space) -> dict[str, Any]:
    from imaginegym.data.spaces import space_to_json

    return space_to_json(space)


class TransitionEmbedding(nn.Module):
    """(observation, previous action, previous reward, previous done) -> one d_model token."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, d_model: int):
        super().__init__()
        self.observation_space, self.action_space = observation_space, action_space
        if isinstance(observation_space, spaces.MultiDiscrete):
            nvec = [int(n) for n in np.asarray(observation_space.nvec).ravel()]
            self.obs_offsets = nn.Buffer(torch.tensor(np.concatenate([[0], np.cumsum(nvec)[:-1]]), dtype=torch.long), persistent=False)
            self.obs = nn.Embedding(sum(nvec), d_model)
        elif isinstance(observation_space, spaces.Discrete):
            self.obs_offsets = None
            self.obs = nn.Embedding(int(observation_space.n), d_model)
        elif isinstance(observation_space, spaces.Box):
            self.obs_offsets = None
            self.obs = nn.Linear(int(np.prod(observation_space.shape)), d_model)
        else:
            raise ValueError(f"observation space {observation_space}: in-context models read Discrete, MultiDiscrete or Box observations")
        if isinstance(action_space, spaces.Discrete):
            self.action = nn.Embedding(int(action_space.n) + 1, d_model)  # the last index: no previous action (history start)
        elif isinstance(action_space, spaces.Box):
            self.action = nn.Linear(int(np.prod(action_space.shape)) + 1, d_model)  # + a "no previous action" flag
        else:
            raise ValueError(f"action space {action_space}: in-context models act in Discrete or Box action spaces")
        self.reward = nn.Linear(1, d_model)
        self.done = nn.Embedding(2, d_model)

    def forward(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor, prev_done: torch.Tensor) -> torch.Tensor:
        """Shapes (B, T, ...) -> (B, T, d_model). ``prev_action`` of a Discrete space is long with ``n`` meaning none;
        of a Box space float (B, T, A + 1), the last entry 1 meaning none."""
        if isinstance(self.obs, nn.Embedding):
            index = obs.long()
            x = self.obs(index + self.obs_offsets).sum(-2) if self.obs_offsets is not None else self.obs(index)
        else:
            x = self.obs(obs.float().flatten(2))
        return x + self.action(prev_action) + self.reward(prev_reward.float().unsqueeze(-1)) + self.done(prev_done.long())


class ActionHead(nn.Module):
    """d_model -> a distribution over actions: categorical (Discrete) or diagonal Gaussian (Box)."""

    def __init__(self, action_space: spaces.Space, d_model: int):
        super().__init__()
        self.discrete = isinstance(action_space, spaces.Discrete)
        out = int(action_space.n) if self.discrete else 2 * int(np.prod(action_space.shape))
        self.norm, self.linear = nn.LayerNorm(d_model), nn.Linear(d_model, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(h))

    def loss(self, out: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Per-token loss (B, T): cross-entropy, or the Gaussian negative log-likelihood."""
        if self.discrete:
            return F.cross_entropy(out.flatten(0, 1), target.flatten().long(), reduction="none",
                                   label_smoothing=label_smoothing).view(target.shape[:2])
        mean, log_std = out.chunk(2, -1)
        log_std = log_std.clamp(-5, 2)
        return (0.5 * ((target - mean) / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)

    def correct(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-token hits (B, T): the most likely action is the target (Discrete); |mean - target| < 0.1 (Box)."""
        if self.discrete:
            return out.argmax(-1) == target.long()
        return ((out.chunk(2, -1)[0] - target).abs() < 0.1).all(-1)

    def sample(self, out: torch.Tensor, generator: torch.Generator | None = None, greedy: bool = False,
               temperature: float = 1.0) -> torch.Tensor:
        """An action from the head's output: the most likely one (``greedy``), or a sample at ``temperature``
        (the logits divided by it, or the Gaussian's std multiplied by it; 1: the learned distribution)."""
        if self.discrete:
            if greedy:
                return out.argmax(-1)
            return torch.multinomial((out.float() / temperature).softmax(-1), 1, generator=generator).squeeze(-1)
        mean, log_std = out.chunk(2, -1)
        if greedy:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        return mean + temperature * log_std.clamp(-5, 2).exp() * noise


def _layers(config: ModelConfig, count: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(config.d_model, config.heads, 4 * config.d_model, config.dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, count, enable_nested_tensor=False)


@functools.lru_cache(maxsize=64)
def decoder_mask(n_latent: int, length: int, device: str) -> torch.Tensor:
    """Boolean attention mask (True: blocked) of [n_latent latents | length transitions], keyed by its full shape.

    Latents see latents only (bidirectionally); transition i sees every latent and transitions 0..i.
    """
    total = n_latent + length
    blocked = torch.zeros(total, total, dtype=torch.bool)
    blocked[:n_latent, n_latent:] = True  # no latent sees a transition
    blocked[n_latent:, n_latent:] = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    return blocked.to(device)


class _InContextModel(nn.Module):
    def __init__(self, config: ModelConfig, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__()
        self.config, self.observation_space, self.action_space = config, observation_space, action_space
        self.embed = TransitionEmbedding(observation_space, action_space, config.d_model)
        self.embed_norm = nn.LayerNorm(config.d_model)
        self.head = ActionHead(action_space, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def spec(self) -> dict[str, Any]:
        """What `build_model` needs to rebuild this model: its config and spaces, as JSON."""
        return {"config": asdict(self.config), "observation_space": _space_json(self.observation_space),
                "action_space": _space_json(self.action_space)}

    def tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embed_norm(self.embed(batch["obs"], batch["prev_action"], batch["prev_reward"], batch["prev_done"]))


class ADModel(_InContextModel):
    """Causal transformer over the last ``context`` transition tokens."""

    def __init__(self, config: ModelConfig, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__(config, observation_space, action_space)
        self.position = nn.Embedding(config.context, config.d_model)
        self.transformer = _layers(config, config.layers)
        nn.init.normal_(self.position.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (B, T, d) with T <= context -> action-head outputs (B, T, ...); ``key_padding`` (B, T) True at padding."""
        length = tokens.shape[1]
        if length > self.config.context:
            raise ValueError(f"{length} tokens: AD attends to at most context={self.config.context}")
        x = self.drop(tokens + self.position.weight[:length])
        h = self.transformer(x, mask=decoder_mask(0, length, str(x.device)), src_key_padding_mask=key_padding)
        return self.head(h)


class CompressedADModel(_InContextModel):
    """[latents | recent transitions] decoder with a recursive compression encoder; see the module docstring."""

    def __init__(self, config: ModelConfig, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__(config, observation_space, action_space)
        d, n = config.d_model, config.n_latent
        self.initial_latents = nn.Parameter(torch.randn(n, d) * 0.02)  # depth 0: nothing compressed yet
        self.queries = nn.Parameter(torch.randn(n, d) * 0.02)
        self.latent_position = nn.Parameter(torch.randn(n, d) * 0.02)
        self.segment_position = nn.Embedding(config.segment, d)
        self.encoder_role = nn.Embedding(3, d)  # 0: previous latents, 1: segment, 2: queries
        self.encoder_in, self.encoder_out = nn.LayerNorm(d), nn.LayerNorm(d)
        self.encoder = _layers(config, config.encoder_layers)
        self.position = nn.Embedding(config.window, d)
        self.decoder_in = nn.LayerNorm(d)
        self.decoder = _layers(config, config.layers)
        nn.init.normal_(self.position.weight, std=0.02)
        nn.init.normal_(self.segment_position.weight, std=0.02)

    def initial(self, batch: int) -> torch.Tensor:
        return self.initial_latents.unsqueeze(0).expand(batch, -1, -1)

    def compress(self, latents: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        """Fold ``segment`` tokens (B, segment, d) into ``latents`` (B, n_latent, d) -> new latents (B, n_latent, d)."""
        batch, length = segment.shape[:2]
        if length != self.config.segment:
            raise ValueError(f"a segment of {length} tokens: Compressed AD folds segment={self.config.segment} at once")
        roles = self.encoder_role.weight
        x = torch.cat([latents + roles[0], segment + self.segment_position.weight + roles[1],
                       self.queries.expand(batch, -1, -1) + roles[2]], dim=1)
        h = self.encoder(self.drop(self.encoder_in(x)))
        return self.encoder_out(h[:, -self.config.n_latent:])

    def forward(self, latents: torch.Tensor, tokens: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, n_latent, d) and recent tokens (B, T, d), T <= window -> action-head outputs for the tokens (B, T, ...)."""
        length, n = tokens.shape[1], self.config.n_latent
        if length > self.config.window:
            raise ValueError(f"{length} tokens: the decoder attends to at most window={self.config.window}")
        x = torch.cat([latents + self.latent_position, tokens + self.position.weight[:length]], dim=1)
        x = self.drop(self.decoder_in(x))
        padding = None
        if key_padding is not None:
            padding = torch.cat([torch.zeros(key_padding.shape[0], n, dtype=torch.bool, device=x.device), key_padding], dim=1)
        h = self.decoder(x, mask=decoder_mask(n, length, str(x.device)), src_key_padding_mask=padding)
        return self.head(h[:, n:])


def build_model(config: ModelConfig, observation_space: spaces.Space, action_space: spaces.Space) -> ADModel | CompressedADModel:
    return (ADModel if config.model == "ad" else CompressedADModel)(config, observation_space, action_space)
