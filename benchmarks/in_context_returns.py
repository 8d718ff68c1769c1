"""In-context returns on held-out tasks, and the learning curves beside the source algorithm's.

    python benchmarks/in_context_returns.py --agents darkroom-ad darkroom-compressed-ad --env imaginegym/DarkRoom-v0 \
        --episodes 50 --png docs/images/darkroom_in_context.png

Each agent starts every held-out task from an empty memory and plays ``--episodes`` episodes in a
row (tasks in lockstep, actions sampled, seed ``--seed``); the figure is the mean return of the
last 10 episodes as a fraction of each task's optimum. The source algorithm (the one the
histories came from) learns the same tasks from scratch for the same number of episodes, for
the plot.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import imaginegym  # noqa: F401
from imaginegym.agents.ad.agent import InContextAgent
from imaginegym.agents.ad.evaluate import evaluate_in_context, task_selection, plot_learning_curves, source_learning_curve, write_results
from imaginegym.training.flags import positive_int


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", nargs="+", required=True, help="bundled names or run directories")
    parser.add_argument("--env", help="env id (default: the first agent's)")
    parser.add_argument("--tasks", default="test")
    parser.add_argument("--task-every", type=positive_int, default=1,
                        help="every N-th task of the split (DarkKeyToDoor holds 328 held-out pairs: 10 evaluates 33 of them)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0],
                        help="sample each agent's actions at these temperatures (1: its learned distribution)")
    parser.add_argument("--png", help="learning curves of the agents and of the source algorithm")
    parser.add_argument("--json-dir", help="write each agent's results JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    curves, optimal, env_id, tasks = {}, None, args.env, None
    split = args.tasks if args.task_every == 1 else f"{args.tasks}[::{args.task_every}]"
    print("| agent | model | tasks | last 10 of {} episodes, mean (% of optimal) | lowest task | per task |".format(args.episodes))
    print("| --- | --- | --- | --- | --- | --- |")
    for name, temperature in [(name, t) for name in args.agents for t in args.temperatures]:
        agent = InContextAgent.load(name, seed=args.seed, temperature=temperature)
        env_id = env_id or agent.env_id
        tasks = tasks or task_selection(env_id, args.tasks)[::args.task_every]  # the same tasks for every agent
        result = evaluate_in_context(agent, env_id, tasks=tasks, episodes=args.episodes, seed=args.seed, progress=False)
        if args.json_dir:
            write_results(result, Path(args.json_dir) / (f"{Path(name).name}.json" if temperature == 1 else f"{Path(name).name}-t{temperature:g}.json"))
        optimal = float(np.mean(result["optimal_return"]))
        at = "" if temperature == 1 else f", temperature {temperature:g}"
        curves[f"{agent.config.model} ({Path(name).name}, in context{at})"] = result["mean_return_by_episode"]
        per_task = ", ".join(f"{f:.0%}" for f in result["fraction_of_optimal_last10"])
        print(f"| {name}{at} | {agent.config.model} | {len(result['tasks'])} {split} | {result['mean_fraction_of_optimal_last10']:.1%} "
              f"| {result['min_fraction_of_optimal_last10']:.1%} | {per_task} |")
    source = source_learning_curve(env_id, tasks=tasks, episodes=args.episodes, seed=args.seed)
    curves["source algorithm (learning from scratch)"] = source
    source_fraction = float(np.mean(source[-10:]) / optimal)
    print(f"source algorithm, last 10 of {args.episodes} episodes: {source_fraction:.1%} of the optimum (mean return {np.mean(source[-10:]):.2f})")
    if args.png:
        print(f"wrote {plot_learning_curves(curves, optimal, args.png, title=f'{env_id}: {split} tasks')}")


if __name__ == "__main__":
    main()
