"""Train a small cartpole world model from scratch with the Python API, rollout training included.

    python examples/train_world_model.py                                  # ~14 min on 2 CPU cores
    python examples/train_world_model.py --episodes 40 --dynamics-steps 12000

Collects episodes with Ornstein-Uhlenbeck exploration (and two held-out ones with other
seeds), trains the bundled default's architecture (a CNN tokenizer to one 32-dim latent
per frame, over the data's median frame; a 2-layer dynamics transformer), and ends the
dynamics with rollout training: every other batch, the model imagines 8 frames after 8
real ones and learns to predict the real frames from its own imagination. Then it
evaluates open-loop rollouts on the held-out episodes beside the copy-last-frame and
mean-frame baselines and writes a GIF (real | imagined) and ``world_model.safetensors``,
which ``gym.make("imaginegym/Imagined-v0", world_model=...)`` loads.

The settings are far shorter than the bundled model's (``docs/pretrained.md``), so expect
blurrier rollouts. With the defaults (13.5 min on this project's 2-core CPU, Nov 2026) it
imagined 4 held-out rollouts at 34.7 / 32.3 / 29.2 dB at h = 1 / 4 / 16 (34.6 / 32.3 / 29.2
before it had an opacity floor), against
32.5 / 25.5 / 21.9 for copy-last and 23.4 / 23.9 / 25.7 for the mean frame (few rollouts:
noisy figures). Everything resumes: re-run the same command after an interruption.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import torch

from imaginegym.data import CollectConfig, EpisodeDataset, collect
from imaginegym.metrics import evaluate_world_model, format_results, frame_statistics
from imaginegym.models.dynamics import DynamicsConfig
from imaginegym.models.shortcut import ShortcutConfig
from imaginegym.models.tokenizer import TokenizerConfig
from imaginegym.training.dynamics_trainer import BatchLengths
from imaginegym.training.loop import OptimConfig
from imaginegym.training.pipeline import train_world_model
from imaginegym.world_model import WorldModel


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/train_world_model"))
    parser.add_argument("--episodes", type=int, default=20, help="training episodes to collect")
    parser.add_argument("--steps", type=int, default=500, help="steps per episode")
    parser.add_argument("--tokenizer-steps", type=int, default=3000)
    parser.add_argument("--dynamics-steps", type=int, default=6000, help="all dynamics updates, rollout training included")
    parser.add_argument("--rollout-steps", type=int, default=2000, help="the last dynamics updates, with rollout windows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if not 0 <= args.rollout_steps <= args.dynamics_steps:
        parser.error(f"--rollout-steps {args.rollout_steps} must lie in [0, --dynamics-steps {args.dynamics_steps}]")

    explore = CollectConfig(task="cartpole-swingup", policy="ou", max_episode_steps=args.steps)
    data = collect(args.out / "data", explore, args.episodes, workers=1, resume=True)
    heldout_config = CollectConfig(task="cartpole-swingup", policy="ou", max_episode_steps=args.steps, seed=100_000)
    heldout = collect(args.out / "heldout", heldout_config, 2, workers=1, resume=True)

    tokenizer = TokenizerConfig(
        channels=(32, 48, 64), latent_channels=16, bottleneck="global", width=256, num_latents=1, latent_dim=32,
        decoder_channels=(64, 32, 16), decoder_upsample="pixel_shuffle", foreground_weight=10.0, background="median",
        opacity_floor=0.2,  # at inference, the faint paint the decoder leaves on the background is dropped
    )
    dynamics = DynamicsConfig(
        context_length=8, width=128, depth=2, heads=2, condition_tokens=False, prior_input=True, context_noise=1 / 32,
        mark_imagined=True,  # imagined context frames carry a learned flag
    )
    shortcut = ShortcutConfig(low_noise_prob=0.6, low_noise_max=1 / 16, loss_weight_floor=1.0, matched_fraction=0.75, pure_noise_prob=0.5)
    lengths = BatchLengths(rollout_every=2 if args.rollout_steps else 0, rollout_length=8,
                           rollout_start=args.dynamics_steps - args.rollout_steps)
    path = train_world_model(
        str(data.root), args.out / "run", tokenizer,
        OptimConfig(steps=args.tokenizer_steps, batch_size=args.batch_size, lr=1e-3, use_ema=False),
        dynamics, OptimConfig(steps=args.dynamics_steps, batch_size=2 * args.batch_size, lr=1e-3, warmup_steps=200),
        shortcut, lengths, args.device,
    )

    model = WorldModel.load(path, device=args.device)
    mean_frame, median_frame = frame_statistics(EpisodeDataset(data.root))
    results, rollouts = evaluate_world_model(model, heldout, mean_frame, median_frame, tuple(args.horizons),
                                             context=dynamics.context_length, denoise_steps=(4,), per_episode=2)
    print(format_results(results))
    side_by_side = torch.cat([rollouts["target"][0], rollouts["imagined_4"][0]], dim=-2)  # (H, h, 2w, 3)
    gif = args.out / "rollout.gif"
    iio.imwrite(gif, side_by_side.numpy(), duration=100, loop=0)
    print(f"wrote {gif} (left: real, right: imagined) and {path}")


if __name__ == "__main__":
    main()
