"""The imagined DarkRoom against the real one: the world model's fidelity, and in-context agents in both.

    python benchmarks/imagined_darkroom.py --world-model darkroom --agents darkroom-ad --episodes 50

1. Fidelity, per task split: real episodes of a goal-seeking policy with random moves (half of its
   actions random, so it visits the goal and the cells around it) are replayed open loop in the
   imagined env of the same goal, from the same start. It reports the fraction of steps whose
   imagined position is the real one, the mean absolute reward error, and how often the imagined
   reward is above 0.5 exactly where the real one is 1 (at the goal) and where it is 0.
2. Each in-context agent plays ``--episodes`` episodes in a row on each held-out goal, in the real
   env and in the imagined env (same seeds), and the table gives both figures (mean return of the
   last 10 episodes, % of the optimum) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import imaginegym  # noqa: F401
from imaginegym.agents.ad.agent import InContextAgent
from imaginegym.agents.ad.evaluate import evaluate_in_context, imagined_env_maker
from imaginegym.envs import darkroom
from imaginegym.imagination import ImaginationEnv
from imaginegym.world_model import WorldModel


def toward(position: np.ndarray, goal) -> int:
    """The action that moves one step closer to ``goal`` (0 stay when there)."""
    dx, dy = goal[0] - position[0], goal[1] - position[1]
    if dx:
        return 4 if dx > 0 else 3
    if dy:
        return 2 if dy > 0 else 1
    return 0


def fidelity(model: WorldModel, tasks: list, episodes: int, seed: int, random_fraction: float = 0.5) -> dict:
    """Open-loop replay of real episodes in imagination (see the module docstring)."""
    rng = np.random.default_rng(seed)
    same, reward_error, hits, goal_steps, false_alarms, other_steps = [], [], 0, 0, 0, 0
    imagined = ImaginationEnv(model, render_mode=None)
    for t, task in enumerate(tasks):
        real = gym.make(model.env_spec.env_id, task=task)
        for e in range(episodes):
            obs, _ = real.reset(seed=seed + e)
            fake, _ = imagined.reset(seed=seed + 1000 * t + e, options={"task": task})
            assert np.array_equal(obs, fake), f"imagined start {fake} differs from the real one {obs}"
            done = False
            while not done:
                action = int(rng.integers(5)) if rng.random() < random_fraction else toward(obs, np.ravel(task))
                obs, reward, terminated, truncated, _ = real.step(action)
                fake, fake_reward, _, _, _ = imagined.step(action)
                done = terminated or truncated
                same.append(np.array_equal(obs, fake))
                reward_error.append(abs(reward - fake_reward))
                if reward > 0.5:
                    goal_steps += 1
                    hits += fake_reward > 0.5
                else:
                    other_steps += 1
                    false_alarms += fake_reward > 0.5
        real.close()
    return {"tasks": len(tasks), "steps": len(same), "position_accuracy": float(np.mean(same)),
            "reward_mae": float(np.mean(reward_error)), "goal_steps": goal_steps,
            "goal_reward_recall": hits / max(goal_steps, 1), "false_reward_rate": false_alarms / max(other_steps, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", default="darkroom", help="bundled name, file or run directory of a DarkRoom world model")
    parser.add_argument("--agents", nargs="*", default=["darkroom-ad"], help="in-context agents to play in both envs")
    parser.add_argument("--episodes", type=int, default=50, help="in-context episodes per held-out goal")
    parser.add_argument("--fidelity-episodes", type=int, default=10, help="replayed episodes per goal for the fidelity figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = WorldModel.load(args.world_model)
    name = model.env_spec.env_id.split("/")[-1].removesuffix("-v0")
    results: dict = {"world_model": str(args.world_model), "fidelity": {}, "agents": {}}
    print("| goals | steps | position exact | reward MAE | reward > 0.5 at the goal | reward > 0.5 elsewhere |")
    print("| --- | --- | --- | --- | --- | --- |")
    for split in ("train", "test"):
        tasks = list((darkroom.train_tasks if split == "train" else darkroom.test_tasks)(name))
        if split == "train":
            tasks = tasks[:: max(1, len(tasks) // 8)][:8]  # 8 of them, spread over the list
        f = results["fidelity"][split] = fidelity(model, tasks, args.fidelity_episodes, args.seed)
        print(f"| {len(tasks)} {split} | {f['steps']} | {f['position_accuracy']:.2%} | {f['reward_mae']:.3f} | "
              f"{f['goal_reward_recall']:.1%} of {f['goal_steps']} | {f['false_reward_rate']:.2%} |")
    if args.agents:
        print(f"\n| agent | real: last 10 of {args.episodes} (% of optimum) | imagined | imagined / real | real s | imagined s |")
        print("| --- | --- | --- | --- | --- | --- |")
    make_env, env_id = imagined_env_maker(model)
    for agent_name in args.agents:
        figures = {}
        for world in ("real", "imagined"):
            agent = InContextAgent.load(agent_name, seed=args.seed)
            start = time.perf_counter()
            result = evaluate_in_context(agent, env_id, tasks="test", episodes=args.episodes, seed=args.seed, progress=False,
                                         make_env=make_env if world == "imagined" else None)
            figures[world] = {"fraction": result["mean_fraction_of_optimal_last10"], "per_task": result["fraction_of_optimal_last10"],
                              "mean_return_by_episode": result["mean_return_by_episode"], "seconds": time.perf_counter() - start}
        results["agents"][agent_name] = figures
        real, fake = figures["real"]["fraction"], figures["imagined"]["fraction"]
        print(f"| {agent_name} | {real:.1%} | {fake:.1%} | {fake / real:.3f} | {figures['real']['seconds']:.0f} | {figures['imagined']['seconds']:.0f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
