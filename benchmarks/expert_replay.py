"""Does a cartpole world model imagine the upright states that pay? Replay a scripted swing-up in it.

    MUJOCO_GL=egl python benchmarks/expert_replay.py --world-model cartpole-swingup --episodes 3

The scripted expert (`imaginegym.data.policies.CartpoleSwingupExpert`, noise 0.1) plays real
episodes of cartpole-swingup. From three points of each (the start, hanging; step 60, swinging
up; step 150, balancing) the model gets the real context frames and then the expert's next
100 actions, open loop, and imagines the rewards. The table compares the real and the imagined
100-step returns, and the reward per step over each quarter of the 100 steps: a model that has
only seen a hanging, swinging pole lets it fall in imagination and imagines small rewards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from imaginegym.data.policies import CartpoleSwingupExpert
from imaginegym.envs.dmc import DMCEnv
from imaginegym.world_model import WorldModel

STARTS = {"hanging (step 0)": 0, "swinging up (step 60)": 60, "balancing (step 150)": 150}
HORIZON = 100


def expert_episode(seed: int, steps: int, size: int, action_repeat: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (steps+1, H, W, 3), actions (steps, 1) and rewards (steps,) of a real episode of the expert."""
    env = DMCEnv(task="cartpole-swingup", size=size, action_repeat=action_repeat, include_state=True)
    policy = CartpoleSwingupExpert(spaces.Box(-1, 1, (1,), np.float32), seed=seed, noise_low=0.1, noise_high=0.1)
    obs, info = env.reset(seed=seed)
    frames, actions, rewards = [obs], [], []
    for _ in range(steps):
        action = policy(obs, state=info["state"])
        obs, reward, _, _, info = env.step(action)
        frames.append(obs), actions.append(action), rewards.append(reward)
    env.close()
    return np.stack(frames), np.stack(actions), np.array(rewards)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", nargs="+", default=["cartpole-swingup"])
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    print(f"| world model | from | real {HORIZON}-step return | imagined | real reward/step per quarter | imagined per quarter |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.world_model:
        wm = WorldModel.load(name)
        kwargs = wm.env_spec.env_kwargs
        c = wm.dynamics_config.context_length - 1
        episodes = [expert_episode(seed, max(STARTS.values()) + c + HORIZON, kwargs.get("size", 64), kwargs.get("action_repeat", 2))
                    for seed in range(args.episodes)]
        results[name] = {}
        for label, start in STARTS.items():
            real, imagined = [], []
            for seed, (frames, actions, rewards) in enumerate(episodes):
                out = wm.imagine(frames[start : start + c][None], actions[start : start + c - 1][None],
                                 actions[start + c - 1 : start + c - 1 + HORIZON][None], generator=torch.Generator().manual_seed(seed))
                real.append(rewards[start + c - 1 : start + c - 1 + HORIZON])
                imagined.append(out["rewards"][0].double().numpy())
            real, imagined = np.mean(real, 0), np.mean(imagined, 0)
            quarter = HORIZON // 4
            per_quarter = [[round(float(x[i : i + quarter].mean()), 2) for i in range(0, HORIZON, quarter)] for x in (real, imagined)]
            results[name][label] = {"real_return": float(real.sum()), "imagined_return": float(imagined.sum()),
                                    "real_per_quarter": per_quarter[0], "imagined_per_quarter": per_quarter[1]}
            print(f"| {name} | {label} | {real.sum():.1f} | {imagined.sum():.1f} | {per_quarter[0]} | {per_quarter[1]} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
