"""The world-model recipes we ship, as configs: what `docs/pretrained.md`'s commands spell out in flags.

    tokenizer, dynamics, shortcut, lengths = cartpole_recipe()
"""

from __future__ import annotations

from imaginegym.models.dynamics import DynamicsConfig
from imaginegym.models.shortcut import ShortcutConfig
from imaginegym.models.tokenizer import TokenizerConfig
from imaginegym.training.dynamics_trainer import BatchLengths


def cartpole_recipe() -> tuple[TokenizerConfig, DynamicsConfig, ShortcutConfig, BatchLengths]:
    """The bundled ``cartpole-swingup`` model's architecture and losses (its step counts are the caller's)."""
    tokenizer = TokenizerConfig(
        channels=(32, 48, 64), latent_channels=16, bottleneck="global", width=256, num_latents=1, latent_dim=32,
        decoder_channels=(64, 32, 16), decoder_upsample="pixel_shuffle", foreground_weight=10.0, background="median", opacity_floor=0.2,
    )
    dynamics = DynamicsConfig(context_length=8, width=128, depth=2, heads=2, condition_tokens=False, prior_input=True,
                              context_noise=0.03125, mark_imagined=True)
    shortcut = ShortcutConfig(low_noise_prob=0.6, low_noise_max=0.0625, loss_weight_floor=1.0, matched_fraction=0.75, pure_noise_prob=0.5)
    lengths = BatchLengths(rollout_every=2, rollout_length=8)
    return tokenizer, dynamics, shortcut, lengths


def darkroom_recipe() -> tuple[TokenizerConfig, DynamicsConfig, ShortcutConfig, BatchLengths]:
    """The bundled ``darkroom`` model: an embedding tokenizer of the (x, y) cell and a small task-conditioned dynamics.

    Its data are learning histories (`imaginegym ad histories`): the goal of each run is the task the dynamics is
    conditioned on (``task_dim`` follows from the dataset)."""
    tokenizer = TokenizerConfig(kind="embedding", obs_dim=2, num_values=9, num_latents=1, latent_dim=16, width=64)
    dynamics = DynamicsConfig(context_length=4, width=128, depth=3, heads=4, condition_tokens=False)
    shortcut = ShortcutConfig(reward_weight=4.0)
    return tokenizer, dynamics, shortcut, BatchLengths()
