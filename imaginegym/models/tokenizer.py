"""Tokenizers: observations -> K latent tokens of D dims per frame, squashed by tanh.

* ``cnn`` (default, CPU-friendly): strided convolutions to a small grid, grouped into tokens
  (or, with ``bottleneck="global"``, an MLP to a few tokens). With a fixed camera,
  ``background="median"`` has its decoder paint over the training data's median frame, so
  the static background comes out exact and the latents describe only what moves.
* ``transformer``: patch tokens + learned latent tokens, block-causal over time, trained as a
  masked autoencoder with mask ratio p ~ U(0, p_max) and a warm-up curriculum on p_max
  (starting unmasked forces attention to read the patches, which prevents the mean-image
  collapse of a masked tokenizer trained at high mask ratios from step 0).
* ``mlp``: vector observations. ``embedding``: discrete observations (e.g. DarkRoom's (x, y)).

All expose ``encode(obs) -> (..., K, D)``, ``decode(z)``, ``to_observation(decoded)`` and
``loss(obs, step, lpips)``. Pixels are uint8 (..., H, W, 3) at the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from imaginegym.metrics import moving_mask
from imaginegym.models.transformer import Block

LPIPS_WEIGHT = 0.2


@dataclass(frozen=True)
class TokenizerConfig:
    kind: str = "cnn"  # cnn | transformer | mlp | embedding
    # pixels (cnn, transformer)
    image_size: int = 64  # frames are image_size x image_size pixels
    channels: tuple[int, ...] = (32, 64, 128)  # cnn: one stride-2 stage each
    latent_channels: int = 8  # cnn: channels of the latent grid
    token_patch: int = 4  # cnn: side of the grid patch that forms one token
    decoder_channels: tuple[int, ...] = ()  # cnn: decoder widths from the grid up; () mirrors `channels`
    decoder_upsample: str = "transposed"  # cnn: last upsampling by "transposed" conv or "pixel_shuffle"
    # cnn: "learned" adds a trained image under the decoder's output; "median" has the decoder
    # paint colour and opacity over the training data's per-pixel median frame (a fixed camera's
    # static background), which it then reproduces exactly wherever the opacity is ~0
    background: str = "learned"
    opacity_penalty: float = 0.0  # cnn, "median" background: loss weight of the mean opacity (favours an exact background)
    opacity_floor: float = 0.0  # cnn, "median" background: at inference, opacities at or below this count as 0 (no faint paint on the background)
    bottleneck: str = "grid"  # cnn: "grid" (tokens are grid patches) or "global" (an MLP to num_latents x latent_dim)
    patch_size: int = 8  # transformer: pixels per patch side
    width: int = 128  # transformer / mlp / cnn-global hidden width
    depth: int = 2  # transformer encoder and decoder depth
    heads: int = 4  # transformer attention heads
    num_latents: int = 8  # transformer / mlp / embedding / cnn-global: K
    latent_dim: int = 16  # transformer / mlp / embedding / cnn-global: D
    mask_ratio_max: float = 0.9  # transformer MAE
    mask_warmup_steps: int = 2000  # transformer: p_max ramps from 0 over these steps
    # pixels: loss weight of the pixels that differ from the batch's per-pixel median (the
    # moving parts) as `metrics.moving_mask` finds them; 1 weighs every pixel alike
    foreground_weight: float = 1.0
    # vectors (mlp) and discrete values (embedding)
    obs_dim: int = 0  # mlp: size of the vector; embedding: number of discrete components
    num_values: int = 0  # embedding: values per component

    def __post_init__(self):
        for name in ("channels", "decoder_channels"):  # JSON gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        kinds = ("cnn", "transformer", "mlp", "embedding")
        if self.kind not in kinds:
            raise ValueError(f"tokenizer kind={self.kind!r}; choose one of {kinds}")
        if self.kind == "cnn":
            if self.decoder_channels and len(self.decoder_channels) != len(self.channels):
                raise ValueError(
                    f"decoder_channels={self.decoder_channels} needs one width per upsampling stage, "
                    f"{len(self.channels)} like channels={self.channels}, or none to mirror them"
                )
            if self.decoder_widths[0] % 8:
                raise ValueError(f"the decoder's first width {self.decoder_widths[0]} must be a multiple of 8 (GroupNorm)")
            if self.bottleneck not in ("grid", "global"):
                raise ValueError(f"bottleneck={self.bottleneck!r}; use 'grid' or 'global'")
            if self.background not in ("learned", "median"):
                raise ValueError(f"background={self.background!r}; use 'learned' or 'median'")
            if self.decoder_upsample not in ("transposed", "pixel_shuffle"):
                raise ValueError(f"decoder_upsample={self.decoder_upsample!r}; use 'transposed' or 'pixel_shuffle'")
            grid = self.image_size >> len(self.channels)
            if grid << len(self.channels) != self.image_size or (self.bottleneck == "grid" and grid % self.token_patch):
                raise ValueError(
                    f"image_size={self.image_size} with {len(self.channels)} stride-2 stages gives a "
                    f"{grid}x{grid} grid, not divisible by token_patch={self.token_patch}"
                )
        if not self.opacity_penalty >= 0.0 or (self.opacity_penalty and (self.kind, self.background) != ("cnn", "median")):
            raise ValueError(f"opacity_penalty={self.opacity_penalty} needs kind='cnn' with background='median' and a value >= 0")
        if not 0.0 <= self.opacity_floor < 1.0 or (self.opacity_floor and (self.kind, self.background) != ("cnn", "median")):
            raise ValueError(f"opacity_floor={self.opacity_floor} needs kind='cnn' with background='median' and a value in [0, 1) "
                             "(0: every opacity counts)")
        if not self.foreground_weight >= 1.0:
            raise ValueError(f"foreground_weight={self.foreground_weight}; use 1 (every pixel alike) or more to favour moving pixels")
        if self.kind == "transformer" and self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}")
        if self.kind in ("mlp", "embedding") and self.obs_dim < 1:
            raise ValueError(f"obs_dim={self.obs_dim}: the {self.kind} tokenizer needs the observation size")
        if self.kind == "embedding" and self.num_values < 2:
            raise ValueError(f"num_values={self.num_values}: the embedding tokenizer needs >= 2 values")

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        return self.decoder_channels or tuple(reversed(self.channels))

    @property
    def latent_tokens(self) -> int:
        if self.kind == "cnn" and self.bottleneck == "grid":
            grid = self.image_size >> len(self.channels)
            return (grid // self.token_patch) ** 2
        return self.num_latents

    @property
    def token_dim(self) -> int:
        if self.kind == "cnn" and self.bottleneck == "grid":
            return self.token_patch**2 * self.latent_channels
        return self.latent_dim


def pixels_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1]."""
    return rearrange(frames.float() / 255.0, "... h w c -> ... c h w")


def float_to_pixels(images: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) in [0, 1] -> uint8 (..., H, W, 3), rounded and clipped."""
    return rearrange((images.clamp(0, 1) * 255.0).round().to(torch.uint8), "... c h w -> ... h w c")


def foreground_mask(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, ..., H, W, 3) -> float (B, ..., 1, H, W): 1 on the moving pixels (the
    evaluation's rule, `metrics.moving_mask`) against the per-pixel median over the batch,
    which is the static background for a batch of varied frames."""
    background = frames.flatten(0, -4).median(dim=0).values
    return moving_mask(frames, background).float().unsqueeze(-3)


class Tokenizer(nn.Module):
    """What every tokenizer offers besides encode/decode/to_observation/loss."""

    config: TokenizerConfig

    def set_opacity_floor(self, floor: float) -> None:
        """Decode with opacities at or below ``floor`` counted as 0 (a CNN tokenizer over a median background)."""
        self.config = replace(self.config, opacity_floor=floor)  # validates floor

    @torch.no_grad()
    def decode_observation(self, z: torch.Tensor) -> torch.Tensor:
        """latents (..., K, D) -> observations, ``to_observation(decode(z))`` (fused where it pays)."""
        return self.to_observation(self.decode(z))


class PixelTokenizer(Tokenizer):
    """Shared loss and conversions of the pixel tokenizers (MSE + 0.2 LPIPS when available)."""

    def reconstruct(self, frames: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training-mode reconstruction of uint8 frames -> (images, opacity over a fixed background or None)."""
        return self.decode(self.encode(frames, step=step, train=True)), None

    def to_observation(self, decoded: torch.Tensor) -> torch.Tensor:
        return float_to_pixels(decoded)

    def loss(self, frames: torch.Tensor, step: int = 0, lpips: nn.Module | None = None):
        """frames uint8 (B, T, H, W, 3) -> (loss, metrics)."""
        target = pixels_to_float(frames)
        recon, opacity = self.reconstruct(frames, step)
        squared_error = (recon - target).pow(2)
        mse = squared_error.mean()
        metrics = {"mse": mse.detach(), "psnr": -10 * torch.log10(mse.detach().clamp_min(1e-10))}
        loss = mse
        if self.config.foreground_weight != 1.0:
            moving = foreground_mask(frames)  # (..., 1, H, W)
            weight = 1.0 + (self.config.foreground_weight - 1.0) * moving
            loss = (squared_error * weight).mean()
            moving_mse = (squared_error * moving).sum() / (moving.sum() * 3).clamp_min(1)
            metrics["moving_psnr"] = -10 * torch.log10(moving_mse.detach().clamp_min(1e-10))
        if opacity is not None:
            metrics["opacity"] = opacity.detach().mean()
            loss = loss + self.config.opacity_penalty * opacity.mean()
        if lpips is not None:
            perceptual = lpips(recon.flatten(0, -4) * 2 - 1, target.flatten(0, -4) * 2 - 1).mean()
            loss = loss + LPIPS_WEIGHT * perceptual
            metrics["lpips"] = perceptual.detach()
        return loss, metrics


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class CNNTokenizer(PixelTokenizer):
    """Stride-2 conv stages to a (g, g, C) grid, then the latent tokens.

    ``bottleneck="grid"``: tokens are (p, p) grid patches, K = (g/p)^2, D = p*p*C.
    ``bottleneck="global"``: an MLP (hidden ``width``) maps the whole grid to K x D and back.
    Grid latents are local: a cart moving one pixel changes many of them, so consecutive
    frames' latents differ by a large share of their variance. A global code of a few dims
    varies smoothly with the scene's state, which is what the dynamics has to predict.
    """

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = c = config
        layers, cin = [], 3
        for ch in c.channels:
            layers += [nn.Conv2d(cin, ch, 4, stride=2, padding=1), nn.SiLU(), _conv_block(ch, ch)]
            cin = ch
        layers.append(nn.Conv2d(cin, c.latent_channels, 1))
        self.encoder = nn.Sequential(*layers)
        # The decoder runs at every imagined step in pixels mode, so it does its heavy work at
        # the lowest resolution and only upsamples above it.
        # "pixel_shuffle" makes the last doubling a 3x3 conv to 3 x 2 x 2 channels rearranged into
        # pixels, so no convolution runs at full resolution (the cheapest decoder per frame).
        widths = list(c.decoder_widths)
        out = 4 if c.background == "median" else 3  # colour (+ opacity)
        layers = [nn.Conv2d(c.latent_channels, widths[0], 3, padding=1), nn.SiLU(), _conv_block(widths[0], widths[0])]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.SiLU()]
        if c.decoder_upsample == "pixel_shuffle":
            layers += [nn.Conv2d(widths[-1], out * 4, 3, padding=1), nn.PixelShuffle(2)]
        else:
            layers += [nn.ConvTranspose2d(widths[-1], widths[-1], 4, stride=2, padding=1), nn.SiLU(), nn.Conv2d(widths[-1], out, 3, padding=1)]
        self.decoder = nn.Sequential(*layers)
        if c.bottleneck == "global":
            g = c.image_size >> len(c.channels)
            flat = g * g * c.latent_channels
            self.to_tokens = nn.Sequential(nn.Flatten(), nn.Linear(flat, c.width), nn.SiLU(), nn.Linear(c.width, c.num_latents * c.latent_dim))
            self.from_tokens = nn.Sequential(nn.Linear(c.num_latents * c.latent_dim, c.width), nn.SiLU(), nn.Linear(c.width, flat))
        # With a fixed camera most pixels are static background (99% on cartpole).
        # "learned": a per-pixel image under the decoder's output, leaving the convolutions the
        # moving parts; yet their output never vanishes, so static pixels stay a little noisy.
        # "median": the data's median frame (`set_background`), over which the decoder paints
        # colour with an opacity; where the opacity is ~0 a static pixel comes out exact.
        background = torch.full((3, c.image_size, c.image_size), 0.5)
        if c.background == "median":
            self.register_buffer("background", background)
        else:
            self.background = nn.Parameter(background)

    @torch.no_grad()
    def set_background(self, frames: torch.Tensor) -> None:
        """The per-pixel median of uint8 frames (..., H, W, 3) becomes the background image."""
        if self.config.background != "median":
            raise ValueError(f"set_background needs a tokenizer with background='median', not {self.config.background!r}")
        if frames.shape[-3:] != self.background.shape[1:] + (3,):
            raise ValueError(f"frames of shape {tuple(frames.shape)} do not match the tokenizer's "
                             f"{self.config.image_size}x{self.config.image_size}x3 images")
        median = frames.reshape(-1, *frames.shape[-3:]).median(dim=0).values
        self.background.copy_(pixels_to_float(median.to(self.background.device)))

    def _over_background(self, painted: torch.Tensor, background: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The decoder's raw output -> (images, opacity): added to a learned background (no
        opacity), or its colour (around mid-grey) laid over the median background with
        opacity sigmoid(logit)."""
        if self.config.background == "learned":
            return painted + background, None
        colour, logit = painted.split((3, 1), dim=channel_dim)
        opacity = torch.sigmoid(logit)
        if self.config.opacity_floor and not self.training:
            # A hard threshold would stop the gradient of pixels that must become opaque, so
            # it is for inference only: there it removes the faint paint that the decoder
            # leaves on the static background, more so over imagined latents.
            opacity = F.threshold(opacity, self.config.opacity_floor, 0.0)  # one pass, no mask tensor
        return torch.lerp(background, colour + 0.5, opacity), opacity

    def _decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        lead = z.shape[:-2]
        painted = self.decoder(self._grid(z.reshape(-1, *z.shape[-2:])))
        images, opacity = self._over_background(painted, self.background, channel_dim=1)
        return images.reshape(*lead, *images.shape[1:]), opacity

    def reconstruct(self, frames: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._decode(self.encode(frames, step=step, train=True))

    def encode(self, frames: torch.Tensor, step: int = 0, train: bool = False) -> torch.Tensor:
        """uint8 (..., H, W, 3) -> latents (..., K, D) in [-1, 1]."""
        lead = frames.shape[:-3]
        c = self.config
        features = self.encoder(pixels_to_float(frames).reshape(-1, 3, *frames.shape[-3:-1]))
        if c.bottleneck == "global":
            tokens = torch.tanh(self.to_tokens(features)).reshape(-1, c.num_latents, c.latent_dim)
        else:
            p = c.token_patch
            tokens = rearrange(torch.tanh(features), "n c (h p1) (w p2) -> n (h w) (p1 p2 c)", p1=p, p2=p)
        return tokens.reshape(*lead, *tokens.shape[1:])

    def _grid(self, z: torch.Tensor) -> torch.Tensor:
        """latents (N, K, D) -> the decoder's input grid (N, C, g, g)."""
        c = self.config
        g = c.image_size >> len(c.channels)
        if c.bottleneck == "global":
            return self.from_tokens(z.flatten(1)).reshape(-1, c.latent_channels, g, g)
        return rearrange(z, "n (h w) (p1 p2 c) -> n c (h p1) (w p2)", h=g // c.token_patch, p1=c.token_patch, p2=c.token_patch)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latents (..., K, D) -> images float (..., 3, H, W), nominally in [0, 1]."""
        return self._decode(z)[0]

    @torch.no_grad()
    def decode_observation(self, z: torch.Tensor) -> torch.Tensor:
        """latents (..., K, D) -> uint8 frames (..., H, W, 3), equal to ``to_observation(decode(z))``.

        Imagination in pixel mode calls this at every step. With a pixel-shuffle decoder the
        shuffle, the move to channels-last and the background go in one copy, and the
        conversion to uint8 works in place.
        """
        if self.config.decoder_upsample != "pixel_shuffle":
            return self.to_observation(self.decode(z))
        lead = z.shape[:-2]
        sub_pixels = self.decoder[:-1](self._grid(z.reshape(-1, *z.shape[-2:])))  # (N, C*2*2, H/2, W/2), before the PixelShuffle
        painted = rearrange(sub_pixels, "n (c p1 p2) h w -> n (h p1) (w p2) c", p1=2, p2=2)
        images = self._over_background(painted, self.background.permute(1, 2, 0), channel_dim=-1)[0]
        pixels = images.clamp_(0, 1).mul_(255.0).round_().to(torch.uint8)
        return pixels.reshape(*lead, *pixels.shape[1:])


class TransformerTokenizer(PixelTokenizer):
    """Patches + K learned latent tokens per frame, block-causal over time, MAE-trained.

    Encoder: patches see their own frame's patches; latents see their frame's patches and the
    latents of earlier frames. Decoder: patch queries see their frame's queries and the latents
    of this and earlier frames; latents see latents of this and earlier frames.
    """

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = c = config
        self.num_patches = (c.image_size // c.patch_size) ** 2
        patch_dim = 3 * c.patch_size**2
        self.patch_in = nn.Linear(patch_dim, c.width)
        self.patch_pos = nn.Parameter(torch.randn(self.num_patches, c.width) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(c.width) * 0.02)
        self.latent_queries = nn.Parameter(torch.randn(c.num_latents, c.width) * 0.02)
        self.encoder = nn.ModuleList(Block(c.width, c.heads) for _ in range(c.depth))
        self.to_latent = nn.Linear(c.width, c.latent_dim)
        self.from_latent = nn.Linear(c.latent_dim, c.width)
        self.patch_queries = nn.Parameter(torch.randn(self.num_patches, c.width) * 0.02)
        self.decoder = nn.ModuleList(Block(c.width, c.heads) for _ in range(c.depth))
        self.norm_enc = nn.RMSNorm(c.width)
        self.norm_dec = nn.RMSNorm(c.width)
        self.patch_out = nn.Linear(c.width, patch_dim)

    def _mask(self, frames: int, device, decoder: bool) -> torch.Tensor:
        """Token-level boolean mask (T*(P+K), T*(P+K)); per frame P patch tokens then K latents."""
        p, k = self.num_patches, self.config.num_latents
        frame = torch.arange(frames, device=device).repeat_interleave(p + k)
        is_latent = torch.tensor([False] * p + [True] * k, device=device).repeat(frames)
        same = frame[:, None] == frame[None, :]
        past_or_same = frame[None, :] <= frame[:, None]
        if decoder:  # queries: own queries + latents up to now; latents: latents up to now
            return (same & ~is_latent[:, None] & ~is_latent[None, :]) | (past_or_same & is_latent[None, :])
        # encoder: patches: own patches; latents: own patches + latents up to now
        return (same & ~is_latent[None, :]) | (is_latent[:, None] & is_latent[None, :] & past_or_same)

    def mask_ratio_max(self, step: int) -> float:
        c = self.config
        return c.mask_ratio_max * min(1.0, step / c.mask_warmup_steps) if c.mask_warmup_steps else c.mask_ratio_max

    def encode(self, frames: torch.Tensor, step: int = 0, train: bool = False) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) or (B, H, W, 3) -> latents (B, [T,] K, D) in [-1, 1]."""
        single = frames.dim() == 4
        if single:
            frames = frames[:, None]
        b, t = frames.shape[:2]
        c = self.config
        patches = rearrange(pixels_to_float(frames), "b t c (h p1) (w p2) -> b t (h w) (p1 p2 c)", p1=c.patch_size, p2=c.patch_size)
        x = self.patch_in(patches) + self.patch_pos  # (B, T, P, W)
        if train and self.training:
            ratio = torch.rand(b, t, 1, device=x.device) * self.mask_ratio_max(step)
            drop = torch.rand(b, t, self.num_patches, device=x.device) < ratio
            x = torch.where(drop[..., None], self.mask_token, x)
        latents = self.latent_queries.expand(b, t, -1, -1)
        x = rearrange(torch.cat([x, latents], dim=2), "b t n w -> b (t n) w")
        mask = self._mask(t, x.device, decoder=False)
        for block in self.encoder:
            x = block(x, mask)
        x = rearrange(self.norm_enc(x), "b (t n) w -> b t n w", t=t)[:, :, self.num_patches :]
        z = torch.tanh(self.to_latent(x))
        return z[:, 0] if single else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latents (B, [T,] K, D) -> images float (B, [T,] 3, H, W)."""
        single = z.dim() == 3
        if single:
            z = z[:, None]
        b, t = z.shape[:2]
        c = self.config
        queries = self.patch_queries.expand(b, t, -1, -1)
        x = rearrange(torch.cat([queries, self.from_latent(z)], dim=2), "b t n w -> b (t n) w")
        mask = self._mask(t, x.device, decoder=True)
        for block in self.decoder:
            x = block(x, mask)
        x = rearrange(self.norm_dec(x), "b (t n) w -> b t n w", t=t)[:, :, : self.num_patches]
        g = c.image_size // c.patch_size
        images = rearrange(self.patch_out(x), "b t (h w) (p1 p2 c) -> b t c (h p1) (w p2)", h=g, p1=c.patch_size, p2=c.patch_size)
        return images[:, 0] if single else images


class MLPTokenizer(Tokenizer):
    """Vector observations float (..., obs_dim) <-> (..., K, D)."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = c = config
        self.encoder = nn.Sequential(nn.Linear(c.obs_dim, c.width), nn.SiLU(), nn.Linear(c.width, c.num_latents * c.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(c.num_latents * c.latent_dim, c.width), nn.SiLU(), nn.Linear(c.width, c.obs_dim))

    def encode(self, obs: torch.Tensor, step: int = 0, train: bool = False) -> torch.Tensor:
        z = torch.tanh(self.encoder(obs.float()))
        return z.reshape(*obs.shape[:-1], self.config.num_latents, self.config.latent_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.flatten(-2))

    def to_observation(self, decoded: torch.Tensor) -> torch.Tensor:
        return decoded

    def loss(self, obs: torch.Tensor, step: int = 0, lpips=None):
        mse = F.mse_loss(self.decode(self.encode(obs)), obs.float())
        return mse, {"mse": mse.detach()}


class EmbeddingTokenizer(Tokenizer):
    """Discrete observations long (..., obs_dim) with values in [0, num_values) <-> (..., K, D)."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.obs_dim * c.num_values, c.width)
        self.encoder = nn.Sequential(nn.SiLU(), nn.Linear(c.obs_dim * c.width, c.num_latents * c.latent_dim))
        self.decoder = nn.Sequential(
            nn.Linear(c.num_latents * c.latent_dim, c.width), nn.SiLU(), nn.Linear(c.width, c.obs_dim * c.num_values)
        )
        self.register_buffer("offsets", torch.arange(c.obs_dim) * c.num_values, persistent=False)

    def encode(self, obs: torch.Tensor, step: int = 0, train: bool = False) -> torch.Tensor:
        c = self.config
        if obs.min() < 0 or obs.max() >= c.num_values:
            raise ValueError(f"observation values must lie in [0, {c.num_values}), got [{int(obs.min())}, {int(obs.max())}]")
        x = self.embed(obs.long() + self.offsets).flatten(-2)
        return torch.tanh(self.encoder(x)).reshape(*obs.shape[:-1], c.num_latents, c.latent_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """-> logits (..., obs_dim, num_values)."""
        c = self.config
        return self.decoder(z.flatten(-2)).reshape(*z.shape[:-2], c.obs_dim, c.num_values)

    def to_observation(self, decoded: torch.Tensor) -> torch.Tensor:
        return decoded.argmax(-1)

    def loss(self, obs: torch.Tensor, step: int = 0, lpips=None):
        logits = self.decode(self.encode(obs))
        ce = F.cross_entropy(logits.flatten(0, -2), obs.long().flatten())
        accuracy = (logits.argmax(-1) == obs).float().mean()
        return ce, {"cross_entropy": ce.detach(), "accuracy": accuracy}


TOKENIZERS = {"cnn": CNNTokenizer, "transformer": TransformerTokenizer, "mlp": MLPTokenizer, "embedding": EmbeddingTokenizer}


def make_tokenizer(config: TokenizerConfig) -> nn.Module:
    return TOKENIZERS[config.kind](config)
