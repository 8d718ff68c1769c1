"""`imaginegym train ...` and `imaginegym eval ...`: flags generated from the config dataclasses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imaginegym.models.dynamics import DynamicsConfig
from imaginegym.models.shortcut import ShortcutConfig
from imaginegym.models.tokenizer import TokenizerConfig
from imaginegym.training.flags import add_dataclass_flags, dataclass_from_flags
from imaginegym.training.loop import OptimConfig

DERIVED = ("latent_tokens", "latent_dim", "action_kind", "action_dim")  # follow from tokenizer and data
TOKENIZER_OPTIM = {"steps": 3000, "batch_size": 32, "lr": 1e-3, "warmup_steps": 100}
DYNAMICS_OPTIM = {"steps": 3000, "batch_size": 32, "lr": 5e-4, "warmup_steps": 200}


def _tokenizer_flags(parser):
    add_dataclass_flags(parser, TokenizerConfig, "tokenizer")
    add_dataclass_flags(parser, OptimConfig, "tokenizer", defaults=TOKENIZER_OPTIM)
    parser.add_argument("--require-lpips", action="store_true", help="fail when the LPIPS backbone weights are absent instead of training with MSE only")


def _dynamics_flags(parser):
    from imaginegym.training.dynamics_trainer import BatchLengths

    add_dataclass_flags(parser, DynamicsConfig, "dynamics", exclude=DERIVED)
    add_dataclass_flags(parser, OptimConfig, "dynamics", defaults=DYNAMICS_OPTIM)
    add_dataclass_flags(parser, ShortcutConfig, "dynamics")
    add_dataclass_flags(parser, BatchLengths, "dynamics")


def add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a tokenizer, a dynamics model, or both (a world model)",
                                   description="Train world-model components. Runs resume from OUT's checkpoints; "
                                   "the same command runs under `torchrun --nproc-per-node N` with DDP.")
    stages = parser.add_subparsers(dest="stage", required=True, metavar="{world-model,tokenizer,dynamics}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="run directory (checkpoints, TensorBoard logs, world_model.safetensors)")
    common.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (default: auto)")
    wm = stages.add_parser("world-model", parents=[common], help="tokenizer, then dynamics on the encoded dataset, then export",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    wm.add_argument("--data", required=True, help="dataset directory from `imaginegym collect`")
    _tokenizer_flags(wm)
    _dynamics_flags(wm)
    tok = stages.add_parser("tokenizer", parents=[common], help="train only the tokenizer")
    tok.add_argument("--data", required=True, help="dataset directory from `imaginegym collect`")
    _tokenizer_flags(tok)
    dyn = stages.add_parser("dynamics", parents=[common], help="train the dynamics on OUT's tokenizer, then export the world model")
    dyn.add_argument("--data", required=True, help="the dataset the tokenizer was trained on")
    _dynamics_flags(dyn)
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from imaginegym.data.store import EpisodeDataset
    from imaginegym.training.checkpoint import load_checkpoint
    from imaginegym.training.dynamics_trainer import BatchLengths
    from imaginegym.training.pipeline import train_world_model

    if args.stage == "tokenizer":
        from imaginegym.training.tokenizer_trainer import train_tokenizer

        train_tokenizer(args.data, args.out, dataclass_from_flags(TokenizerConfig, args, "tokenizer"),
                        dataclass_from_flags(OptimConfig, args, "tokenizer"), args.device, require_lpips=args.require_lpips)
        print(f"tokenizer checkpoint: {Path(args.out) / 'tokenizer.pt'}")
        return 0
    if args.stage == "dynamics":
        _, config = load_checkpoint(Path(args.out) / "tokenizer.pt")
        tokenizer = TokenizerConfig(**{**config["tokenizer"], "channels": tuple(config["tokenizer"]["channels"])})
        require_lpips = False
    else:
        tokenizer = dataclass_from_flags(TokenizerConfig, args, "tokenizer")
        require_lpips = args.require_lpips
    EpisodeDataset(args.data)  # fail early on a bad --data
    path = train_world_model(
        args.data, args.out, tokenizer, dataclass_from_flags(OptimConfig, args, "tokenizer") if args.stage == "world-model" else OptimConfig(steps=0),
        dataclass_from_flags(DynamicsConfig, args, "dynamics"), dataclass_from_flags(OptimConfig, args, "dynamics"),
        dataclass_from_flags(ShortcutConfig, args, "dynamics"), dataclass_from_flags(BatchLengths, args, "dynamics"),
        args.device, require_lpips,
    )
    print(f"world model: {path}")
    return 0
