"""The `make demo` demo: real cartpole episodes, then the real env beside its imagined twin.

    python examples/demo.py
    # writes outputs/demo/data, outputs/demo/cartpole.gif and outputs/demo/real_vs_imagined.gif

Collects a few episodes from the real env (`imaginegym/DMC-v0`) and shows one, then drives
the real env and the bundled world model (`imaginegym/Imagined-v0`, world_model
"cartpole-swingup") with the same actions, side by side (left: real, right: imagined).
Runs on a CPU in about a minute; running it again reuses the collected episodes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import imageio.v3 as iio

from imaginegym.data import CollectConfig, collect

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_vs_imagined  # noqa: E402  (the example next to this one)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="steps per episode, and imagined steps")
    parser.add_argument("--world-model", default="cartpole-swingup", help="bundled name, .safetensors file or run dir")
    args = parser.parse_args(argv)

    config = CollectConfig(task="cartpole-swingup", max_episode_steps=args.steps)
    dataset = collect(args.out / "data", config, args.episodes, resume=True)
    print(f"wrote {dataset.root}: {len(dataset)} episodes of {config.task}, "
          f"{int(dataset.lengths.sum())} steps, frames {dataset.observation_space.shape}")
    gif = args.out / "cartpole.gif"
    iio.imwrite(gif, dataset.read(0, "frames"), duration=40, loop=0)  # 25 frames per second
    print(f"wrote {gif}: episode 0 with a random policy")

    real_vs_imagined.main(["--world-model", args.world_model, "--steps", str(args.steps),
                           "--out", str(args.out / "real_vs_imagined.gif")])


if __name__ == "__main__":
    main()
