"""How much of the true cartpole state a policy can read from a world model's latents.

    MUJOCO_GL=egl python benchmarks/latent_state_probe.py --world-model cartpole-swingup --episodes 16
    MUJOCO_GL=egl python benchmarks/latent_state_probe.py --world-model cartpole-swingup-student --obs latent state

Real episodes (uniform-random and Ornstein-Uhlenbeck actions, alternating) are observed as a
policy trained in imagination sees them (`real_twin`: the last 4 latents of the tokenizer with
``--obs latent``, or each frame's latents and the dynamics model's state of it with ``--obs state``); the
physics state after each step is read from MuJoCo. Ridge regression and a small MLP, fitted on
75% of the steps (shuffled), predict (cart position, cos angle, sin angle, cart velocity, angular
velocity) on the rest; the table gives R^2 per variable (1: exact, 0: no better than the mean).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import imaginegym  # noqa: F401
from imaginegym.imagination import load_world_model, real_twin

NAMES = ("x", "cos", "sin", "x_dot", "theta_dot")


def collect(world_model, episodes: int, steps: int, seed: int, obs: str = "latent") -> tuple[np.ndarray, np.ndarray]:
    env = real_twin(world_model, obs, 4 if obs == "latent" else 1)
    rng = np.random.default_rng(seed)
    features, states = [], []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        action = np.zeros(1)
        for _ in range(steps):
            if episode % 2:
                action = np.clip(0.8 * action + 0.6 * rng.normal(size=1), -1, 1)
            else:
                action = rng.uniform(-1, 1, size=1)
            obs, *_ = env.step(action.astype(np.float32))
            physics = env.unwrapped._physics
            qpos, qvel = physics.data.qpos, physics.data.qvel
            features.append(np.asarray(obs).ravel())
            states.append([qpos[0], np.cos(qpos[1]), np.sin(qpos[1]), qvel[0], qvel[1]])
    env.close()
    return np.asarray(features, np.float32), np.asarray(states, np.float32)


def r2(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    return 1 - ((prediction - target) ** 2).mean(0) / target.var(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", nargs="+", default=["cartpole-swingup"])
    parser.add_argument("--obs", nargs="+", default=["latent"], choices=["latent", "state"],
                        help="latent: 4 stacked latents; state: the latents and the dynamics model's state of the frame")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--mlp-steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| world model | observation | probe | " + " | ".join(NAMES) + " |")
    print("| --- " * (3 + len(NAMES)) + "|")
    for name, obs in ((name, obs) for name in args.world_model for obs in args.obs):
        x, y = collect(load_world_model(name, "cpu"), args.episodes, args.steps, args.seed, obs)
        order = np.random.default_rng(1).permutation(len(x))
        x, y = x[order], y[order]
        n = int(0.75 * len(x))
        design = np.c_[x[:n], np.ones(n)]
        weights = np.linalg.solve(design.T @ design + np.eye(design.shape[1]), design.T @ y[:n])
        ridge = r2(np.c_[x[n:], np.ones(len(x) - n)] @ weights, y[n:])
        torch.manual_seed(args.seed)
        mean, std = y[:n].mean(0), y[:n].std(0)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.ELU(), torch.nn.Linear(256, 256), torch.nn.ELU(),
                                  torch.nn.Linear(256, y.shape[1]))
        optimizer = torch.optim.Adam(net.parameters(), 1e-3)
        inputs, targets = torch.from_numpy(x[:n]), torch.from_numpy((y[:n] - mean) / std)
        for _ in range(args.mlp_steps):
            index = torch.randint(0, n, (256,))
            loss = ((net(inputs[index]) - targets[index]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            mlp = r2(net(torch.from_numpy(x[n:])).numpy() * std + mean, y[n:])
        for probe, scores in (("ridge", ridge), ("MLP", mlp)):
            print(f"| {name} | {obs} | {probe} | " + " | ".join(f"{s:.2f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
