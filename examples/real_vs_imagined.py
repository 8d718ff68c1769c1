"""Real vs imagined: the same actions in the real env and in its world-model twin, side by side.

    python examples/real_vs_imagined.py --world-model cartpole-swingup --steps 100
    # writes outputs/real_vs_imagined.gif: real | imagined

The real env is made from the model's own settings (`wm.env_spec`). Its first
`--context` frames and the actions between them start the imagined env (reset options
`context_frames` / `context_actions`); from there both envs take the same smooth random
actions (an Ornstein-Uhlenbeck policy, as in data collection) and the GIF shows both
frames at every step, with the rewards of both printed at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import torch

import imaginegym  # noqa: F401  (registers the env ids)
from imaginegym.data import OrnsteinUhlenbeckPolicy
from imaginegym.metrics import psnr
from imaginegym.world_model import WorldModel


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", default="cartpole-swingup", help="bundled name, .safetensors file or run dir")
    parser.add_argument("--steps", type=int, default=100, help="steps to compare after the context")
    parser.add_argument("--context", type=int, default=None, help="real frames that start imagination (default: all the model attends to)")
    parser.add_argument("--out", type=Path, default=Path("outputs/real_vs_imagined.gif"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    wm = WorldModel.load(args.world_model, args.device)
    context = args.context or wm.dynamics_config.context_length - 1
    real = gym.make(wm.env_spec.env_id, **wm.env_spec.env_kwargs)
    imagined = gym.make("imaginegym/Imagined-v0", world_model=wm)
    policy = OrnsteinUhlenbeckPolicy(real.action_space, seed=args.seed)

    frame, _ = real.reset(seed=args.seed)
    frames, actions = [frame], []
    for _ in range(context - 1):  # the real start: C frames and the C-1 actions between them
        actions.append(policy(frame))
        frame, *_ = real.step(actions[-1])
        frames.append(frame)
    obs, _ = imagined.reset(
        seed=args.seed, options={"context_frames": np.stack(frames), "context_actions": np.stack(actions)}
    )

    pairs, real_return, imagined_return = [(frame, obs)], 0.0, 0.0
    for _ in range(args.steps):
        action = policy(frame)
        frame, real_reward, real_terminated, real_truncated, _ = real.step(action)
        obs, imagined_reward, _, _, _ = imagined.step(action)
        pairs.append((frame, obs))
        real_return += real_reward
        imagined_return += imagined_reward
        if real_terminated or real_truncated:
            break

    real_frames, imagined_frames = (np.stack(x) for x in zip(*pairs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, np.concatenate([real_frames, imagined_frames], axis=2), duration=40, loop=0)
    quality = psnr(torch.from_numpy(imagined_frames[1:]), torch.from_numpy(real_frames[1:]))
    print(f"wrote {args.out}: {len(pairs)} frames (real | imagined) after {context} real context frames")
    print(f"return over {len(pairs) - 1} steps: real {real_return:.2f}, imagined {imagined_return:.2f}")
    print(f"PSNR of imagined frames: {quality[0]:.1f} dB at step 1, {quality.mean():.1f} dB on average")
    real.close()
    imagined.close()


if __name__ == "__main__":
    main()
