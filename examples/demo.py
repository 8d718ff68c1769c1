"""The `make demo` demo: collect cartpole episodes from the real env and show one.

    python examples/demo.py        # writes outputs/demo/data and outputs/demo/cartpole.gif

Runs on a CPU in well under a minute; running it again reuses the collected episodes.
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
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="steps per episode")
    args = parser.parse_args(argv)

    config = CollectConfig(task="cartpole-swingup", max_episode_steps=args.steps)
    dataset = collect(args.out / "data", config, args.episodes, resume=True)
    print(f"wrote {dataset.root}: {len(dataset)} episodes of {config.task}, "
          f"{int(dataset.lengths.sum())} steps, frames {dataset.observation_space.shape}")

    gif = args.out / "cartpole.gif"
    iio.imwrite(gif, dataset.read(0, "frames"), duration=40, loop=0)  # 25 frames per second
    print(f"wrote {gif}: episode 0 with a random policy")


if __name__ == "__main__":
    main()
