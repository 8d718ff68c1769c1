"""Can PPO, with the settings the imagination runs use, reach and keep a swing-up? A control on the true state.

    python benchmarks/ppo_true_state.py --steps 1500000                                  # as used: constant lr
    python benchmarks/ppo_true_state.py --steps 1500000 --normalize-reward --lr-schedule linear

SB3 PPO with `imaginegym agent train`'s defaults (64 envs, 64-step rollouts, batches of 512, 5
epochs, lr 3e-4, gamma 0.99, 256x256 ELU networks) on dm_control cartpole-swingup's 5-number state
at action repeat 2 (no rendering: the learner alone, ~25 min per 1.5M steps on one core). Every
``--eval-every`` steps it prints the deterministic return of 3 episodes of a held-out seed, so a
curve shows whether the learner holds what it found.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from dm_control import suite
from shimmy.dm_control_compatibility import DmControlCompatibilityV0
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize


class ActionRepeat(gym.Wrapper):
    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            observation, reward, terminated, truncated, info = self.env.step(action)
            total += reward
            if terminated or truncated:
                break
        return observation, total, terminated, truncated, info


def make_env(seed: int, repeat: int):
    def make() -> gym.Env:
        env = DmControlCompatibilityV0(suite.load("cartpole", "swingup", task_kwargs={"random": seed}))
        return ActionRepeat(gym.wrappers.FlattenObservation(env), repeat)

    return make


class Evaluate(BaseCallback):
    """Every ``every`` steps: the deterministic return of 3 episodes, as a table row."""

    def __init__(self, env: gym.Env, every: int):
        super().__init__()
        self.env, self.every, self.next, self.started = env, every, every, time.time()

    def _on_training_start(self) -> None:
        print("| steps | deterministic return (3 episodes) | wall (s) |")
        print("| --- | --- | --- |")

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next:
            self.next += self.every
            returns = []
            for episode in range(3):
                observation, _ = self.env.reset(seed=episode)
                total, finished = 0.0, False
                while not finished:
                    action = self.model.predict(observation, deterministic=True)[0]
                    observation, reward, terminated, truncated, _ = self.env.step(action)
                    total, finished = total + reward, terminated or truncated
                returns.append(total)
            print(f"| {self.num_timesteps:,} | {np.mean(returns):.1f} | {time.time() - self.started:.0f} |", flush=True)
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1_500_000)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lr-schedule", choices=("constant", "linear"), default="constant")
    parser.add_argument("--normalize-reward", action="store_true")
    parser.add_argument("--action-repeat", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = DummyVecEnv([make_env(args.seed * 1000 + i, args.action_repeat) for i in range(args.num_envs)])
    if args.normalize_reward:
        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=0.99)
    lr = args.lr if args.lr_schedule == "constant" else LinearSchedule(args.lr, 0.0, 1.0)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=args.batch_size, n_epochs=5, learning_rate=lr, gamma=0.99, seed=args.seed,
                policy_kwargs={"net_arch": [256, 256], "activation_fn": torch.nn.ELU}, device="cpu", verbose=0)
    model.learn(args.steps, callback=Evaluate(make_env(1_000 + args.seed, args.action_repeat)(), args.eval_every))


if __name__ == "__main__":
    main()
