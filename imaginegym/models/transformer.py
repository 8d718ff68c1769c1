"""Transformer blocks shared by the dynamics model and the transformer tokenizer.

Pre-norm blocks with RMSNorm, QK-norm and rotary position embeddings (RoPE). Attention
masks are boolean (True = may attend) and go straight to ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def rope_angles(positions: torch.Tensor, dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for RoPE at integer ``positions`` (..., N) -> two tensors (..., N, dim).

    Angles are computed in float64 so positions in the tens of thousands (long imagined
    rollouts) keep their precision; attention only ever sees relative offsets.
    """
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # (..., N, dim/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, N, dh) by angles (B or 1, 1, N, dh)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_norm = nn.RMSNorm(width // heads)
        self.k_norm = nn.RMSNorm(width // heads)
        self.out = nn.Linear(width, width, bias=False)

    def project(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None):
        """x (B, N, W) -> q, k, v (B, H, N, dh), normalized and rotated."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def attend(self, q, k, v, mask: torch.Tensor | None) -> torch.Tensor:
        """q (B, H, Nq, dh) over k, v (B, H, Nk, dh) with mask (Nq, Nk) or (B, 1, Nq, Nk)."""
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(rearrange(out, "b h n d -> b n (h d)"))


class Block(nn.Module):
    """Pre-norm transformer block; ``forward`` for full sequences, ``project``/``finish`` for cached steps."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.RMSNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.RMSNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * width, width)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rope=None) -> torch.Tensor:
        q, k, v = self.attn.project(self.norm1(x), rope)
        x = x + self.attn.attend(q, k, v, mask)
        return x + self.mlp(self.norm2(x))

    def forward_cached(self, x, rope, keys: torch.Tensor, values: torch.Tensor, mask):
        """x (B, N, W) attends to ``keys``/``values`` (B, H, M, dh), whose last N slots it fills itself.

        Writing into a preallocated buffer (a KV cache with a slot for the frame being
        generated) avoids concatenating past and new keys at every pass. Returns (x, k, v).
        """
        q, k, v = self.attn.project(self.norm1(x), rope)
        n = x.shape[1]
        keys[:, :, -n:] = k
        values[:, :, -n:] = v
        x = x + self.attn.attend(q, keys, values, mask)
        return x + self.mlp(self.norm2(x)), k, v
