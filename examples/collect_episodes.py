"""Collect a few cartpole episodes with a random policy and write one as a GIF.

    python examples/collect_episodes.py                      # 4 episodes of 100 steps
    python examples/collect_episodes.py --episodes 20 --steps 500 --policy ou

Re-running with the same flags finds the episodes already there (it resumes), so it is
cheap; pass a new --out to start another dataset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio

from imaginegym.data import CollectConfig, collect


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/collect_episodes"))
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="steps per episode")
    parser.add_argument("--policy", choices=["random", "ou"], default="random")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    config = CollectConfig(
        task="cartpole-swingup", policy=args.policy, max_episode_steps=args.steps
    )
    dataset = collect(args.out / "data", config, args.episodes, workers=args.workers, resume=True)
    print(dataset)
    returns = [float(dataset.read(i, "rewards").sum()) for i in range(len(dataset))]
    print("episode returns:", ", ".join(f"{r:.2f}" for r in returns))

    frames = dataset.read(0, "frames")  # uint8 (T+1, 64, 64, 3)
    gif = args.out / "episode_0.gif"
    iio.imwrite(gif, frames, duration=40, loop=0)  # duration per frame, in ms
    print(f"wrote {gif} ({len(frames)} frames)")


if __name__ == "__main__":
    main()
