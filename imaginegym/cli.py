"""The `imaginegym` command line.

Each sub-command is a pair: `add_<name>_parser(subparsers)` declares its flags and sets
`handler=run_<name>`; `run_<name>(args) -> int` does the work and may raise one of
`USER_ERRORS` (bad input or files), which is printed as a one-line error. Add a command by writing such a pair
and listing the adder in `COMMANDS`. Import heavy modules (torch, dm_control) inside the
handler, so `imaginegym --help` and spawned collection workers (which re-import this
module) stay fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import gymnasium.error

from imaginegym.data.format import DatasetError, WorkerDiedError


from imaginegym.training.flags import positive_int


def add_collect_parser(subparsers: argparse._SubParsersAction) -> None:
    """`imaginegym collect`: record episodes of a real env into a dataset directory."""
    from imaginegym.data.collect import DMC_ENV_ID, TIERS
    from imaginegym.data.policies import POLICIES

    parser = subparsers.add_parser(
        "collect",
        help="record episodes of a real env into an HDF5 dataset",
        description=(
            "Record episodes of a real env into a dataset directory of HDF5 shards (one "
            "per episode, see docs/data_format.md). Episode i uses seed SEED+i for the env "
            "and the policy, so the dataset is the same for any --workers and after "
            "--resume."
        ),
        epilog=(
            "examples:\n"
            "  imaginegym collect --tier 1 --episodes 50 --workers 2 --out data/cartpole\n"
            "  imaginegym collect --task reacher-easy --policy ou --out data/reacher\n"
            "  imaginegym collect --tier 1 --episodes 100 --out data/cartpole --resume\n"
            "  imaginegym collect --tier 1 --episodes 80 --first 120 --policy swingup-expert --out data/cartpole --resume"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", required=True, help="dataset directory to create or, with --resume, extend"
    )
    parser.add_argument(
        "--env", default=DMC_ENV_ID, help="Gymnasium id of a pixel env (default: %(default)s)"
    )
    task = parser.add_mutually_exclusive_group()
    task.add_argument("--task", help="DMC task, e.g. cartpole-swingup")
    tiers = ", ".join(f"{n} = {name}" for n, name in TIERS.items())
    task.add_argument("--tier", type=int, choices=sorted(TIERS), help=f"task preset: {tiers}")
    parser.add_argument(
        "--episodes", type=positive_int, default=50,
        help="episodes in the finished dataset (default: %(default)s)",
    )
    parser.add_argument(
        "--policy", default="random", metavar="{" + ",".join(sorted(POLICIES)) + ",DIR}",
        help="random: uniform actions; ou: Ornstein-Uhlenbeck (time-correlated) noise; swingup-expert: a scripted "
        "cartpole swing-up (~800 return) that reads the simulator state, for data that covers competent play; "
        "DIR: a trained agent's policy directory (holding policy.json, e.g. runs/NAME/policy), its actions sampled "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=1, help="parallel env processes (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="episode i uses seed SEED+i (default: %(default)s)"
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue an existing dataset up to --episodes, collecting only missing episodes",
    )
    parser.add_argument(
        "--first", type=int, default=0,
        help="collect episodes FIRST..FIRST+EPISODES-1 (seeds SEED+i): with --resume, a range of another policy "
        "beside the episodes already in OUT, e.g. expert episodes after random ones (default: %(default)s)",
    )
    parser.add_argument(
        "--size", type=positive_int, help="frame height and width in pixels (DMC default: 64)"
    )
    parser.add_argument(
        "--action-repeat", type=positive_int, help="simulator steps per action (DMC default: 2)"
    )
    parser.add_argument(
        "--max-episode-steps", type=positive_int,
        help="cut episodes after N steps, recorded as truncated (default: the env's limit)",
    )
    parser.set_defaults(handler=run_collect)


def collection_policy(name_or_dir: str):
    """A policy name of `POLICIES`, or a saved agent's policy directory as a `PolicySource`."""
    from pathlib import Path

    from imaginegym.data.policies import POLICIES

    if name_or_dir in POLICIES:
        return name_or_dir
    if not (Path(name_or_dir) / "policy.json").is_file():
        raise ValueError(f"--policy {name_or_dir}: use one of {', '.join(sorted(POLICIES))} or a directory holding a trained "
                         "agent's policy.json (e.g. runs/NAME/policy)")
    from imaginegym.agents.sb3.policy import PolicyFile

    return PolicyFile(str(Path(name_or_dir).resolve()))


def run_collect(args: argparse.Namespace) -> int:
    from imaginegym.data.collect import DMC_ENV_ID, TIERS, CollectConfig, collect

    task = TIERS[args.tier] if args.tier is not None else args.task
    if task is None and args.env == DMC_ENV_ID:
        raise ValueError("choose a task: --task cartpole-swingup, or a preset such as --tier 1")
    config = CollectConfig(
        env_id=args.env,
        task=task,
        policy=collection_policy(args.policy),
        seed=args.seed,
        size=args.size,
        action_repeat=args.action_repeat,
        max_episode_steps=args.max_episode_steps,
    )
    try:
        if args.first < 0:
            raise ValueError(f"--first {args.first}: give the index of the first episode to collect, >= 0")
        dataset = collect(args.out, config, args.episodes, workers=args.workers, resume=args.resume, first=args.first)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished episodes are kept in {args.out}; add --resume to "
              "the same command to collect the rest", file=sys.stderr)
        return 130
    print(f"{dataset.root}: {len(dataset)} episodes, {int(dataset.lengths.sum())} steps")
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """`imaginegym train {world-model,tokenizer,dynamics}` (flags from the config dataclasses)."""
    from imaginegym.training.commands import add_train_parser as add

    add(subparsers)


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    """`imaginegym eval world-model RUN --data HELDOUT`."""
    from imaginegym.training.commands import add_eval_parser as add

    add(subparsers)


def add_agent_parser(subparsers: argparse._SubParsersAction) -> None:
    """`imaginegym agent {train,eval}` (flags from `AgentConfig`)."""
    from imaginegym.agents.commands import add_agent_parser as add

    add(subparsers)


def add_ad_parser(subparsers: argparse._SubParsersAction) -> None:
    """`imaginegym ad {histories,train,eval}` (in-context agents)."""
    from imaginegym.agents.ad.commands import add_ad_parser as add

    add(subparsers)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_collect_parser, add_train_parser, add_eval_parser, add_agent_parser,
                                                                add_ad_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imaginegym",
        description="World models as Gymnasium environments: collect data, train, evaluate.",
        epilog="Run `imaginegym COMMAND --help` for a command's options.",
    )
    subparsers = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


USER_ERRORS = (DatasetError, gymnasium.error.Error, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
"""Errors about the user's input and files: printed as one line (exit status 2), like argparse's own errors.
Set IMAGINEGYM_TRACEBACK=1 to see their tracebacks; other errors always show theirs."""


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: `imaginegym COMMAND [options]`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as err:
        if os.environ.get("IMAGINEGYM_TRACEBACK"):
            raise
        command = " ".join(part for part in (parser.prog, args.command, getattr(args, "stage", None) or getattr(args, "what", None)) if part)
        print(f"{command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if os.environ.get("IMAGINEGYM_TRACEBACK"):
            raise
        print(f"\n{parser.prog} {args.command}: interrupted; what finished is kept: run the same command again to resume",
              file=sys.stderr)
        raise SystemExit(130) from None
    except (OSError, WorkerDiedError) as err:  # a full disk, a killed worker: say what failed, without a traceback
        if os.environ.get("IMAGINEGYM_TRACEBACK") or (isinstance(err, OSError) and err.errno is None):
            raise
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    raise SystemExit(main())
