"""How well tokenizers reconstruct held-out frames: everywhere, on the static background, on the moving parts.

    python benchmarks/tokenizer_reconstruction.py --data data/cartpole-heldout --train-data data/cartpole \
        --tokenizers cartpole-swingup runs/my-run/tokenizer.pt

Each tokenizer (a bundled world model's name, a world model's .safetensors file or run
directory, or a training checkpoint ``tokenizer.pt``) encodes and decodes every
``--every``-th held-out frame. Printed per tokenizer, side by side in one run:
- PSNR per frame averaged over frames (the eval's definition), and PSNR of the pooled error;
- PSNR over the static pixels and over the moving ones (the eval's rule:
  `metrics.moving_mask` against the training data's per-pixel median) and the share of static
  pixels reproduced exactly;
- per-frame PSNR on the frames identical to their predecessor (where copy-last-frame scores
  the 100 dB cap) and on the others.
The first row is copy-last-frame on consecutive frames, for scale. ``--opacity-floors``
adds a row per floor for the tokenizers that paint over a median background (opacities
at or below the floor count as 0 at inference): run it on the training data to choose a model's
``--tokenizer-opacity-floor``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from imaginegym.data import EpisodeDataset
from imaginegym.metrics import frame_statistics, moving_mask, psnr
from imaginegym.training.pipeline import load_tokenizer as load_tokenizer_checkpoint
from imaginegym.world_model import WorldModel

IDENTICAL_DB = 99.0  # per-frame PSNR of identical frames is capped at 100 dB


def load_tokenizer(name: str) -> torch.nn.Module:
    """A tokenizer from a training checkpoint (``.pt``) or from any world model ``WorldModel.load`` finds."""
    if name.endswith(".pt"):
        return load_tokenizer_checkpoint(Path(name))
    return WorldModel.load(name).tokenizer


def summarize(pred: torch.Tensor, target: torch.Tensor, moving: torch.Tensor, identical: torch.Tensor) -> dict[str, float]:
    err = (pred.float() - target.float()).div(255.0).pow(2).mean(-1)  # (N, H, W)
    per_frame = psnr(pred, target)
    db = lambda mse: (-10 * torch.log10(mse.clamp_min(1e-10))).item()  # noqa: E731
    return {
        "psnr": per_frame.mean().item(), "pooled": db(err.mean()), "static": db(err[~moving].mean()),
        "moving": db(err[moving].mean()), "exact_static": (err[~moving] == 0).float().mean().item(),
        "identical_frames": per_frame[identical].mean().item(), "other_frames": per_frame[~identical].mean().item(),
    }


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="held-out episodes")
    parser.add_argument("--train-data", required=True, help="training episodes: their per-pixel median is the background")
    parser.add_argument("--tokenizers", nargs="+", default=["cartpole-swingup"], help="bundled names, world models or tokenizer.pt files")
    parser.add_argument("--every", type=int, default=5, help="use every n-th held-out frame")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--opacity-floors", type=float, nargs="*", default=[],
                        help="also decode with these opacity floors (tokenizers over a median background)")
    args = parser.parse_args(argv)

    heldout = EpisodeDataset(args.data)
    _, background = frame_statistics(EpisodeDataset(args.train_data), every=20, median_every=20)
    previous, frames = [], []
    for i in range(len(heldout)):
        episode = torch.from_numpy(heldout.read(i, "frames"))
        previous.append(episode[:-1][:: args.every]), frames.append(episode[1:][:: args.every])
    previous, frames = torch.cat(previous), torch.cat(frames)
    moving = moving_mask(frames, background)
    identical = psnr(previous, frames) >= IDENTICAL_DB
    print(f"{len(frames)} held-out frames of {args.data}, {identical.float().mean():.1%} identical to their predecessor, "
          f"{moving.float().mean():.2%} of pixels moving\n")
    rows = {"copy-last-frame (consecutive)": summarize(previous, frames, moving, identical)}
    for name in args.tokenizers:
        tokenizer = load_tokenizer(name).eval()
        latents = torch.cat([tokenizer.encode(frames[b : b + args.batch_size]) for b in range(0, len(frames), args.batch_size)])
        floors = [None]
        if getattr(tokenizer.config, "background", None) == "median":
            floors += args.opacity_floors
        for floor in floors:
            if floor is not None:
                tokenizer.set_opacity_floor(floor)
            recon = torch.cat([tokenizer.decode_observation(latents[b : b + args.batch_size]) for b in range(0, len(frames), args.batch_size)])
            rows[name if floor is None else f"{name} floor={floor:g}"] = summarize(recon, frames, moving, identical)
    header = ("PSNR/frame", "pooled", "static", "moving", "exact static", "identical fr.", "other fr.")
    width = max(len(name) for name in rows) + 2
    print(f"{'':<{width}}" + "".join(f"{h:>14}" for h in header))
    for name, r in rows.items():
        values = (r["psnr"], r["pooled"], r["static"], r["moving"], 100 * r["exact_static"], r["identical_frames"], r["other_frames"])
        print(f"{name:<{width}}" + "".join(f"{v:>13.2f}{'%' if h == 'exact static' else ' '}" for h, v in zip(header, values)))


if __name__ == "__main__":
    main()
