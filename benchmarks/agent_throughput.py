"""Env steps per second during PPO training: in the imagined env against the real env, side by side.

    python benchmarks/agent_throughput.py --world-model cartpole-swingup --steps 8192
    python benchmarks/agent_throughput.py --world-model cartpole-swingup-student --obs state

Both runs train the same PPO (SB3, latent observations, 4 stacked, or with ``--obs state`` each frame's
latents and the world model's state of it) for the same number of env steps,
one after the other in this process, so their ratio is measured under the same load. The imagined run
steps ``--num-envs`` envs in one batch; the real run steps ``--real-envs`` real envs in this process, each
observed through the tokenizer (rendering + encoding every frame).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from imaginegym.agents.sb3 import AgentConfig, train_agent


def steps_per_second(config: AgentConfig) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train_agent(config, out, progress=False)
        return config.steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", default="cartpole-swingup")
    parser.add_argument("--steps", type=int, default=8192, help="env steps of PPO in each world")
    parser.add_argument("--num-envs", type=int, default=32, help="imagined envs in one batch")
    parser.add_argument("--real-envs", type=int, default=4, help="real envs (in this process)")
    parser.add_argument("--rollout-steps", type=int, default=64, help="PPO steps per env between updates")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--obs", choices=["latent", "state"], default="latent",
                        help="latent: 4 stacked latents; state: the latents and the world model's state of each frame")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    common = dict(steps=args.steps, ppo_rollout_steps=args.rollout_steps, threads=args.threads, device="cpu", checkpoint_every=10**9,
                  obs=args.obs, frame_stack=4 if args.obs == "latent" else 1)
    imagined = steps_per_second(AgentConfig(env=f"imagined:{args.world_model}", num_envs=args.num_envs,
                                            ppo_batch_size=min(512, args.num_envs * args.rollout_steps), **common))
    real = steps_per_second(AgentConfig(env=f"real:{args.world_model}", num_envs=args.real_envs,
                                        ppo_batch_size=min(512, args.real_envs * args.rollout_steps), **common))
    print(f"PPO env steps per second, {args.obs} observations, {args.threads} thread(s):")
    print(f"  imagined ({args.num_envs} envs in one batch): {imagined:8.0f}")
    print(f"  real     ({args.real_envs} envs, rendered and encoded): {real:8.0f}")
    print(f"  imagined / real: {imagined / real:.1f}x")


if __name__ == "__main__":
    main()
