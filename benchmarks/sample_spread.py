"""Does a world model's sampling spread mark the states it has never seen? (A candidate uncertainty signal.)

    MUJOCO_GL=egl python benchmarks/sample_spread.py --world-model runs/mbrl-protocol-seed0/world_model \
        --policies runs/expert-latent/policy runs/mbrl-protocol-seed0/agent/policy

Each policy plays ``--episodes`` real episodes (deterministic, seeds 0..N-1). From real contexts at each start
step the model imagines ``--horizon`` steps ``--samples`` times, given the real actions, each time with other
diffusion noise (reset seeds 0..samples-1). The spread is the std of the imagined latents across those samples,
averaged over the latent's dimensions, after the first and the last imagined step. If it is an uncertainty
signal, it is larger on a policy whose states the model never saw than on the policies of its data. The model
may have any tokenizer: the policies act only in the real env.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from imaginegym.agents.sb3.policy import AgentPolicy
from imaginegym.imagination import ImaginationEnv

try:
    from policy_replay import real_context, real_episode
except ImportError:  # imported as benchmarks.sample_spread
    from benchmarks.policy_replay import real_context, real_episode


def sample_spread(env: ImaginationEnv, frames: np.ndarray, actions: np.ndarray, start: int, horizon: int, samples: int) -> np.ndarray:
    """The std across ``samples`` imagined continuations, after each of ``horizon`` steps (mean over the latent)."""
    options = real_context(env, frames, actions, start)
    runs = []
    for k in range(samples):
        env.reset(seed=k, options=options)
        runs.append(np.stack([np.asarray(env.step(actions[start + h])[0], np.float32).ravel() for h in range(horizon)]))
    return np.stack(runs).std(0).mean(-1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", required=True)
    parser.add_argument("--policies", nargs="+", required=True, help="bundled policy names or directories holding policy.json")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--starts", type=int, nargs="+", default=[25, 50, 75, 100, 150, 250])
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--out", help="results JSON")
    args = parser.parse_args(argv)
    if args.samples < 2 or args.horizon < 1:
        parser.error(f"--samples {args.samples} must be >= 2 (a spread needs two) and --horizon {args.horizon} >= 1")
    env = ImaginationEnv(args.world_model, obs_mode="latent", device="cpu", max_episode_steps=args.horizon, render_mode=None)
    result = {"world_model": args.world_model, "horizon": args.horizon, "samples": args.samples, "policies": {}}
    print(f"spread of {args.samples} imagined continuations by {args.world_model} (latent std: after 1 step / after {args.horizon})\n")
    print("| policy | " + " | ".join(f"start {s}" for s in args.starts) + " | mean |")
    print("| --- " * (2 + len(args.starts)) + "|")
    for name in args.policies:
        policy = AgentPolicy.load(name)
        real_env = policy.real_env("cpu")
        episodes = [real_episode(policy, real_env, seed=i) for i in range(args.episodes)]
        real_env.close()
        per_start = {}
        for s in args.starts:
            spreads = [sample_spread(env, f, a, s, args.horizon, args.samples) for f, a, _ in episodes if s + args.horizon <= len(a)]
            if spreads:
                per_start[s] = np.mean(spreads, 0)[[0, -1]].tolist()
        result["policies"][str(name)] = {str(s): v for s, v in per_start.items()}
        cells = [f"{per_start[s][0]:.3f} / {per_start[s][1]:.3f}" if s in per_start else "-" for s in args.starts]
        mean = np.mean(list(per_start.values()), 0) if per_start else [np.nan, np.nan]
        print(f"| {name} | " + " | ".join(cells) + f" | {mean[0]:.3f} / {mean[1]:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
