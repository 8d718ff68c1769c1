"""Train a policy only in imagination, then act with it in the real env.

    python examples/train_in_imagination.py --steps 300000
    # trains PPO in the bundled cartpole-swingup world model, writes outputs/train_in_imagination/
    # (policy/, TensorBoard logs, eval.gif: real | imagined) and prints both worlds' returns

The policy sees the same observations in both worlds: the last 4 latents of the model's tokenizer, or
with `--obs state` each frame's latents and the world model's own state of it (in the real env the
model follows the episode to compute it).
Imagined episodes start from the model's real start contexts (or `--start-data`, windows of a dataset)
and last `--horizon` steps; SB3 bootstraps the value at their truncation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from imaginegym.agents.sb3 import AgentConfig, evaluate_policy, save_evaluation, train_agent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", default="cartpole-swingup", help="bundled name or path")
    parser.add_argument("--start-data", help="a dataset whose windows start the imagined episodes")
    parser.add_argument("--steps", type=int, default=300_000, help="imagined env steps of PPO")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=64)
    parser.add_argument("--obs", choices=["latent", "state"], default="latent",
                        help="latent: 4 stacked latents; state: the latents and the world model's state of each frame")
    parser.add_argument("--episodes", type=int, default=5, help="real (and imagined) evaluation episodes")
    parser.add_argument("--out", default="outputs/train_in_imagination")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    config = AgentConfig(env=f"imagined:{args.world_model}", steps=args.steps, num_envs=args.num_envs, horizon=args.horizon,
                         start_data=args.start_data, device=args.device, ppo_batch_size=min(512, args.num_envs * 64),
                         obs=args.obs, frame_stack=4 if args.obs == "latent" else 1)
    policy = train_agent(config, args.out)
    result = evaluate_policy(policy, episodes=args.episodes, gif=Path(args.out) / "eval.gif", device=args.device)
    save_evaluation(result, Path(args.out) / "eval.json")
    summary = result.summary()
    print(f"real return {summary['real_mean']:.1f} ± {summary['real_std']:.1f}, imagined {summary['imagined_mean']:.1f} "
          f"(gap {summary['relative_gap']:+.0%}) over {summary['episodes']} episodes")
    print(f"wrote {Path(args.out) / 'policy'}, {Path(args.out) / 'eval.json'} and {Path(args.out) / 'eval.gif'} (left: real, right: imagined)")


if __name__ == "__main__":
    main()
