"""A PNG of open-loop imagined frames beside the real ones, for several world models at once.

    python benchmarks/rollout_grid.py --world-models cartpole-swingup runs/my-run \
        --data data/cartpole-heldout --horizons 1 4 16 50 --starts 3 --out rollouts.png

For each of --starts held-out starts (spread over the episodes, as the eval picks them), the
models imagine from the same 16 real context frames and the real actions. The image has one
block of rows per start (the real frames, then each model in the order given) and one
column per horizon, with a gap between blocks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import torch

from imaginegym.data import EpisodeDataset
from imaginegym.metrics import read_rollouts, rollout_starts
from imaginegym.world_model import WorldModel

GAP = 4  # pixels between blocks


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-models", nargs="+", default=["cartpole-swingup"], help="bundled names, .safetensors files or run dirs")
    parser.add_argument("--data", required=True, help="held-out episodes")
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 4, 16, 50])
    parser.add_argument("--starts", type=int, default=3, help="rollouts shown (one block of rows each)")
    parser.add_argument("--context", type=int, default=16, help="real frames before the first imagined one")
    parser.add_argument("--denoise-steps", type=int, default=4)
    parser.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling of each frame")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="rollouts.png")
    args = parser.parse_args(argv)

    heldout = EpisodeDataset(args.data)
    horizon = max(args.horizons)
    starts = rollout_starts(heldout.lengths, args.context, horizon, per_episode=1)
    if len(starts) < args.starts:
        raise ValueError(f"--starts {args.starts}: {args.data} has only {len(starts)} episodes with {args.context} + {horizon} frames")
    starts = [starts[i] for i in torch.linspace(0, len(starts) - 1, args.starts).round().long().tolist()]
    frames, actions, _ = read_rollouts(heldout, starts, args.context, horizon)
    context, target = frames[:, : args.context], frames[:, args.context :]
    columns = [h - 1 for h in args.horizons]
    rows = [target[:, columns]]
    for name in args.world_models:
        model = WorldModel.load(name)
        out = model.imagine(context, actions[:, : args.context - 1], actions[:, args.context - 1 :], args.denoise_steps,
                            torch.Generator().manual_seed(args.seed))
        rows.append(out["frames"].cpu()[:, columns])
    grid = torch.stack(rows, dim=1)  # (starts, 1 + models, horizons, H, W, 3)
    grid = grid.repeat_interleave(args.scale, dim=-3).repeat_interleave(args.scale, dim=-2)
    blocks = [torch.cat([torch.cat(list(row), dim=1) for row in block], dim=0) for block in grid]  # each (rows*H, horizons*W, 3)
    gap = torch.full((GAP, blocks[0].shape[1], 3), 255, dtype=torch.uint8)
    image = torch.cat([part for block in blocks for part in (block, gap)][:-1], dim=0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, image.numpy())
    print(f"{args.out}: {len(starts)} starts x (real + {len(args.world_models)} models) rows, horizons {args.horizons} as columns")


if __name__ == "__main__":
    main()
