"""`imaginegym agent train|eval|mbrl|distill`: flags generated from the dataclasses of their settings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imaginegym.training.flags import add_dataclass_flags, dataclass_from_flags, positive_int


def add_agent_parser(subparsers) -> None:
    from imaginegym.agents.imitation import DistillConfig
    from imaginegym.agents.mbrl import LoopConfig
    from imaginegym.agents.sb3.config import AgentConfig

    parser = subparsers.add_parser("agent", help="train and evaluate SB3 agents in real or imagined envs")
    actions = parser.add_subparsers(dest="stage", required=True, metavar="{train,eval,mbrl,export,distill}")
    train = actions.add_parser("train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                               help="train PPO or SAC in imagined:MODEL or real:MODEL (resumes from OUT)",
                               description="Train PPO or SAC in a world model's imagined env or in its real env, with the same "
                               "observations in both. Writes OUT/policy (weights as safetensors, settings as JSON), checkpoints "
                               "and TensorBoard logs; the same command resumes an interrupted run.")
    train.add_argument("--out", required=True, help="run directory")
    add_dataclass_flags(train, AgentConfig)
    train.set_defaults(handler=run_agent_train)
    evaluate = actions.add_parser("eval", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                  help="returns of a policy in the real env and in its imagined twin, and their gap",
                                  description="Evaluate a policy in the real env (mean, std, per-episode returns) and, from the "
                                  "same first frames, in its imagined twin; write results JSON and a side-by-side GIF.")
    evaluate.add_argument("--policy", required=True, help="bundled policy name or a directory holding policy.json")
    evaluate.add_argument("--episodes", type=positive_int, default=10)
    evaluate.add_argument("--seed", type=int, default=0, help="real episode i resets with seed SEED + i")
    evaluate.add_argument("--no-imagined", action="store_true", help="skip the imagined twin")
    evaluate.add_argument("--imagined-model", help="imagine with this world model instead of the policy's (same tokenizer weights)")
    evaluate.add_argument("--out", help="results JSON (default: POLICY/eval.json); the GIF goes beside it")
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(handler=run_agent_eval)
    loop = actions.add_parser("mbrl", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                              help="model-based loop: collect with the policy, update the world model, train in imagination, repeat",
                              description="Collect real episodes with the current policy, continue training the world model on all "
                              "data so far, train the policy in imagination from real starts; repeat until --real-steps of data. "
                              "Resumes from OUT after an interruption.")
    loop.add_argument("--out", required=True, help="run directory")
    add_dataclass_flags(loop, LoopConfig)
    loop.set_defaults(handler=run_agent_mbrl)
    export = actions.add_parser("export", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                help="a trained policy with its world model named for shipping (a bundled name, or the weights beside it)",
                                description="Copy a policy into OUT so that it loads anywhere: it observes and imagines through "
                                "--world-model, a bundled model name or a path (whose weights are then copied beside the policy). "
                                "The model must have the policy's tokenizer weights. `imaginegym agent eval --policy OUT` runs it.")
    export.add_argument("--policy", required=True, help="bundled policy name or a directory holding policy.json")
    export.add_argument("--world-model", required=True, help="bundled world model name, or a path (.safetensors or run directory)")
    export.add_argument("--out", required=True, help="directory for policy.json, policy.safetensors (and world_model.safetensors)")
    export.set_defaults(handler=run_agent_export)
    distill = actions.add_parser("distill", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 help="DAgger: a scripted expert that reads the simulator state, distilled into a latent policy",
                                 description="Distil a scripted expert (it reads the simulator's state) into a policy on a world "
                                 "model's observations, by DAgger in the real env. Writes OUT/policy (the best student, an SB3 PPO "
                                 "policy): `imaginegym agent eval --policy OUT/policy` then measures the world model in closed loop "
                                 "where a competent policy goes. Resumes from OUT.")
    distill.add_argument("--out", required=True, help="run directory")
    add_dataclass_flags(distill, DistillConfig)
    distill.set_defaults(handler=run_agent_distill)


def run_agent_train(args: argparse.Namespace) -> int:
    from imaginegym.agents.sb3.config import AgentConfig
    from imaginegym.agents.sb3.train import train_agent

    config = dataclass_from_flags(AgentConfig, args)
    train_agent(config, args.out)
    print(f"policy: {Path(args.out) / 'policy'}")
    return 0


def run_agent_eval(args: argparse.Namespace) -> int:
    from imaginegym.agents.sb3.evaluate import evaluate_policy, save_evaluation
    from imaginegym.agents.sb3.policy import AgentPolicy, resolve_policy_dir

    policy = AgentPolicy.load(args.policy, device="cpu")
    out = Path(args.out) if args.out else resolve_policy_dir(args.policy) / "eval.json"
    result = evaluate_policy(policy, args.episodes, args.seed, imagined=not args.no_imagined, gif=out.with_suffix(".gif"), device=args.device,
                             imagined_model=args.imagined_model)
    save_evaluation(result, out, policy=str(args.policy), seed=args.seed)
    summary = result.summary()
    line = f"real return {summary['real_mean']:.1f} ± {summary['real_std']:.1f} over {summary['episodes']} episodes"
    if "imagined_mean" in summary:
        line += f"; imagined {summary['imagined_mean']:.1f} ± {summary['imagined_std']:.1f} (gap {summary['gap']:+.1f}, {summary['relative_gap']:+.0%})"
    print(line)
    print(f"wrote {out} and {out.with_suffix('.gif')} (left: real, right: imagined)")
    return 0


def run_agent_mbrl(args: argparse.Namespace) -> int:
    from imaginegym.agents.mbrl import LoopConfig, ModelBasedLoop

    curve = ModelBasedLoop(dataclass_from_flags(LoopConfig, args), args.out).run()
    last = curve[-1]
    print(f"{last['real_steps']} real steps: return {last['eval_return_mean']:.1f} ± {last['eval_return_std']:.1f}; "
          f"curve in {Path(args.out) / 'curve.png'} and {Path(args.out) / 'loop.json'}")
    return 0


def run_agent_export(args: argparse.Namespace) -> int:
    from imaginegym.agents.sb3.policy import export_policy

    out = export_policy(args.policy, args.world_model, args.out)
    print(f"policy: {out} (world model: {json.loads((out / 'policy.json').read_text())['world_model']})")
    return 0


def run_agent_distill(args: argparse.Namespace) -> int:
    from imaginegym.agents.imitation import STATE_FILE, DistillConfig, distill_expert

    distill_expert(dataclass_from_flags(DistillConfig, args), args.out)
    runs = json.loads((Path(args.out) / STATE_FILE).read_text())["iterations"]
    best = max((r for r in runs if r["expert_share"] == 0), key=lambda r: r["return_mean"])
    print(f"the expert scored {runs[0]['return_mean']:.1f} (with noise); the best student {best['return_mean']:.1f} ± {best['return_std']:.1f} "
          f"(iteration {best['iteration']}): {Path(args.out) / 'policy'}")
    return 0
