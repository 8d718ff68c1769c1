"""`imaginegym train ...` and `imaginegym eval ...`: flags generated from the config dataclasses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imaginegym.models.dynamics import DynamicsConfig
from imaginegym.models.shortcut import ShortcutConfig
from imaginegym.models.tokenizer import TokenizerConfig
from imaginegym.training.flags import add_dataclass_flags, dataclass_from_flags, positive_int
from imaginegym.training.loop import OptimConfig

DERIVED = ("latent_tokens", "latent_dim", "action_kind", "action_dim", "task_dim")  # follow from tokenizer and data
TOKENIZER_OPTIM = {"steps": 3000, "batch_size": 32, "lr": 1e-3, "warmup_steps": 100, "use_ema": False}
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
    common.add_argument("--restart", action="store_true", help="OUT holds a run on another dataset: delete it and start over")
    wm = stages.add_parser("world-model", parents=[common], help="tokenizer, then dynamics on the encoded dataset, then export",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    wm.add_argument("--data", required=True, help="dataset directory from `imaginegym collect`")
    wm.add_argument("--init-from", metavar="MODEL", help="start from a trained world model (bundled name, run directory or "
                    ".safetensors) instead of random weights: its architecture replaces the --tokenizer-*/--dynamics-* "
                    "architecture flags; the step, batch and learning-rate flags apply to the new run")
    wm.add_argument("--freeze-tokenizer", action="store_true", help="with --init-from: keep its tokenizer as it is (no tokenizer "
                    "steps), so its latents, and policies that observe them, keep their meaning")
    wm.add_argument("--context-length", type=positive_int, metavar="FRAMES", help="with --init-from: the frames its dynamics "
                    "attends to instead of its own (no weight depends on it: positions are rotary), so the continued run lengthens "
                    "the model's memory")
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
    from imaginegym.training.distributed import training_device
    from imaginegym.training.dynamics_trainer import BatchLengths
    from imaginegym.training.pipeline import claim_run_dir, train_world_model

    training_device(args.device)  # an unusable --device fails before anything is read or written
    dataset = EpisodeDataset(args.data)  # and so does a bad --data
    if args.stage == "tokenizer":
        from imaginegym.training.tokenizer_trainer import train_tokenizer

        tokenizer, optim = dataclass_from_flags(TokenizerConfig, args, "tokenizer"), dataclass_from_flags(OptimConfig, args, "tokenizer")
        claim_run_dir(Path(args.out), dataset, args.restart)
        train_tokenizer(args.data, args.out, tokenizer, optim, args.device, require_lpips=args.require_lpips)
        print(f"tokenizer checkpoint: {Path(args.out) / 'tokenizer.pt'}")
        return 0
    if args.stage == "dynamics":
        if not (Path(args.out) / "tokenizer.pt").is_file():
            raise FileNotFoundError(f"{Path(args.out) / 'tokenizer.pt'} does not exist: `imaginegym train dynamics` trains on OUT's tokenizer; "
                                    f"train one first (`imaginegym train tokenizer --data {args.data} --out {args.out}`) or use `train world-model`")
        _, config = load_checkpoint(Path(args.out) / "tokenizer.pt")
        tokenizer = TokenizerConfig(**config["tokenizer"])  # JSON lists become tuples in the config itself
        require_lpips = False
    else:
        tokenizer = dataclass_from_flags(TokenizerConfig, args, "tokenizer")
        require_lpips = args.require_lpips
        if args.context_length is not None and not args.init_from:
            raise ValueError(f"--context-length {args.context_length} changes the context of --init-from MODEL: give --init-from too "
                             f"(or set a new model's context with --dynamics-context-length {args.context_length})")
        if args.freeze_tokenizer and not args.init_from:
            raise ValueError("--freeze-tokenizer keeps the tokenizer of --init-from MODEL: give --init-from too "
                             "(or train only the dynamics on OUT's tokenizer: `imaginegym train dynamics`)")
    train_tokenizer = args.stage == "world-model" and not args.freeze_tokenizer
    path = train_world_model(
        args.data, args.out, tokenizer, dataclass_from_flags(OptimConfig, args, "tokenizer") if train_tokenizer else None,
        dataclass_from_flags(DynamicsConfig, args, "dynamics"), dataclass_from_flags(OptimConfig, args, "dynamics"),
        dataclass_from_flags(ShortcutConfig, args, "dynamics"), dataclass_from_flags(BatchLengths, args, "dynamics"),
        args.device, require_lpips, args.restart, init_from=getattr(args, "init_from", None),
        context_length=getattr(args, "context_length", None),
    )
    print(f"world model: {path}")
    return 0


def add_eval_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a world model on held-out episodes")
    kinds = parser.add_subparsers(dest="what", required=True, metavar="{world-model}")
    wm = kinds.add_parser(
        "world-model", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="PSNR/SSIM/LPIPS per horizon of open-loop imagined rollouts, against baselines",
        description="Open-loop imagined rollouts from real contexts of held-out episodes: PSNR, SSIM, PSNR over "
        "moving pixels and (when its weights exist) LPIPS per horizon, beside the copy-last-frame and mean-frame "
        "baselines; reward MAE; wall time per imagined frame; a side-by-side GIF (real | imagined).",
    )
    wm.add_argument("model", help="run directory, .safetensors file, or bundled model name")
    wm.add_argument("--data", required=True, help="held-out dataset directory")
    wm.add_argument("--train-data", help="training dataset, for the mean frame and the background (default: from the run's checkpoint)")
    wm.add_argument("--horizons", type=positive_int, nargs="+", default=[1, 4, 16, 50])
    wm.add_argument("--context", type=positive_int, default=16, help="real context frames per rollout")
    wm.add_argument("--denoise-steps", type=positive_int, nargs="+", default=[4, 64], help="shortcut sampling steps to compare")
    wm.add_argument("--per-episode", type=positive_int, default=5, help="rollouts per held-out episode")
    wm.add_argument("--out", help="directory for results.json and rollouts.gif (default: MODEL/eval or ./eval-<name>)")
    wm.add_argument("--context-noise", type=float, help="tau_ctx: the noise level of context frames (default: the model's own)")
    wm.add_argument("--opacity-floor", type=float, help="decode with opacities at or below this counted as 0 (default: the model's own)")
    wm.add_argument("--device", default="auto")
    wm.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    import imageio.v2 as imageio
    import torch

    from imaginegym.data.store import EpisodeDataset
    from imaginegym.metrics import evaluate_world_model, format_results, frame_statistics
    from imaginegym.training.checkpoint import load_checkpoint
    from imaginegym.world_model import WorldModel

    model = WorldModel.load(args.model, device=args.device)
    if model.tokenizer_config.kind not in ("cnn", "transformer"):
        raise ValueError(
            f"{args.model} imagines {model.env_spec.env_id}'s {model.tokenizer_config.kind}-tokenized observations, not frames: this "
            "command measures pixel fidelity (PSNR, SSIM, LPIPS). For a DarkRoom model run benchmarks/imagined_darkroom.py "
            "(exact positions, reward errors, in-context returns in real and imagined rooms)"
        )
    if args.context_noise is not None:  # overrides of the model's own settings, validated by its configs
        model.set_context_noise(args.context_noise)
    if args.opacity_floor is not None:
        model.set_opacity_floor(args.opacity_floor)
    run_dir = Path(args.model) if Path(args.model).is_dir() else None
    train_data = args.train_data
    if train_data is None:
        if run_dir is None or not (run_dir / "tokenizer.pt").exists():
            raise ValueError("give --train-data (the training dataset) for the mean-frame baseline")
        train_data = load_checkpoint(run_dir / "tokenizer.pt")[1]["data"]
        if not Path(train_data).exists():
            raise ValueError(f"the run's training dataset {train_data} (recorded in {run_dir / 'tokenizer.pt'}) is not there from here: "
                             "give --train-data (the training dataset) for the mean-frame baseline")
    out = Path(args.out) if args.out else (run_dir / "eval" if run_dir else Path(f"eval-{Path(args.model).stem}"))
    out.mkdir(parents=True, exist_ok=True)
    heldout = EpisodeDataset(args.data)
    if heldout.observation_space != model.observation_space or heldout.action_space != model.action_space:
        raise ValueError(f"--data {args.data} holds {heldout.task or heldout.env_id} episodes ({heldout.observation_space}, actions "
                         f"{heldout.action_space}), but the model imagines {model.env_spec.task} ({model.observation_space}, actions "
                         f"{model.action_space}): give held-out episodes of the model's own env")
    mean_frame, median_frame = frame_statistics(EpisodeDataset(train_data))
    results, rollouts = evaluate_world_model(
        model, heldout, mean_frame, median_frame, tuple(args.horizons), args.context,
        tuple(args.denoise_steps), args.per_episode, args.seed,
    )
    results.update({"model": str(args.model), "data": str(args.data), "train_data": str(train_data),
                    "context_noise": model.dynamics_config.context_noise, "opacity_floor": model.tokenizer_config.opacity_floor})
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = format_results(results)
    (out / "results.txt").write_text(table + "\n")
    print(table)
    # side-by-side GIF of a few rollouts: real | imagined (first sampler setting)
    imagined = rollouts[f"imagined_{args.denoise_steps[0]}"][:4]
    real = rollouts["target"][:4]
    rows = torch.cat([real, imagined], dim=-2)  # (4, H, h, 2w, 3)
    frames = torch.cat(list(rows), dim=-3)  # (H, 4h, 2w, 3)
    imageio.mimsave(out / "rollouts.gif", list(frames.numpy()), duration=0.1, loop=0)
    print(f"wrote {out / 'results.json'} and {out / 'rollouts.gif'} (left: real, right: imagined)")
    return 0
