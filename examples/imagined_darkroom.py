"""The same in-context agent in the real DarkRoom and in its imagined twin, a task-conditioned world model.

    python examples/imagined_darkroom.py                     # the bundled `darkroom` model and `darkroom-ad` agent
    python examples/imagined_darkroom.py --train             # first train a world model on fresh learning histories
    # writes outputs/imagined_darkroom/: results.json, learning_curves.png (and histories/, world_model/ with --train)

DarkRoom hides its goal, so its world model is conditioned on the task, as the real env is:
``gym.make("imaginegym/Imagined-v0", world_model="darkroom", task=(2, 7))`` or
``reset(options={"task": (2, 7)})``. The agent meets each held-out goal with an empty memory in
both envs and learns it in context; the two learning curves should match.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

import imaginegym  # noqa: F401
from imaginegym.agents.ad import HistoriesConfig, collect_histories
from imaginegym.agents.ad.agent import InContextAgent
from imaginegym.agents.ad.evaluate import evaluate_in_context, imagined_env_maker, plot_learning_curves, write_results
from imaginegym.training.loop import OptimConfig
from imaginegym.training.pipeline import train_world_model
from imaginegym.training.recipes import darkroom_recipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", default="darkroom", help="bundled name, file or run directory (ignored with --train)")
    parser.add_argument("--agent", default="darkroom-ad", help="bundled in-context agent or run directory")
    parser.add_argument("--train", action="store_true", help="train a world model on new learning histories first")
    parser.add_argument("--num-tasks", type=int, default=0, help="--train: training goals (0: all 73)")
    parser.add_argument("--history-episodes", type=int, default=40, help="--train: episodes of each learning history")
    parser.add_argument("--steps", type=int, default=6000, help="--train: dynamics training steps (the tokenizer takes a quarter)")
    parser.add_argument("--tiny", action="store_true", help="--train: a tiny model (smoke tests)")
    parser.add_argument("--episodes", type=int, default=50, help="in-context episodes per held-out goal")
    parser.add_argument("--out", default="outputs/imagined_darkroom")
    args = parser.parse_args(argv)
    out = Path(args.out)

    world_model = args.world_model
    if args.train:
        data = collect_histories(HistoriesConfig(num_tasks=args.num_tasks, episodes=args.history_episodes), out / "histories")
        tokenizer, dynamics, shortcut, lengths = darkroom_recipe()
        if args.tiny:
            tokenizer = replace(tokenizer, width=16, latent_dim=8)
            dynamics = replace(dynamics, width=16, depth=1, heads=2, context_length=3)
        batch = 4 if args.tiny else 64
        world_model = train_world_model(str(data), str(out / "world_model"), tokenizer,
                                        OptimConfig(steps=max(1, args.steps // 4), batch_size=4 * batch, use_ema=False),
                                        dynamics, OptimConfig(steps=args.steps, batch_size=batch, lr=1e-3), shortcut, lengths, device="cpu")

    make_env, env_id = imagined_env_maker(world_model)
    curves, figures = {}, {}
    for world in ("real", "imagined"):
        agent = InContextAgent.load(args.agent, seed=0)
        result = evaluate_in_context(agent, env_id, tasks="test", episodes=args.episodes, make_env=make_env if world == "imagined" else None)
        write_results(result, out / f"results_{world}.json")
        curves[f"{args.agent} in the {world} DarkRoom"] = result["mean_return_by_episode"]
        figures[world] = result["mean_fraction_of_optimal_last10"]
        optimal = float(np.mean(result["optimal_return"]))
    png = plot_learning_curves(curves, optimal, out / "learning_curves.png", title="held-out goals: real and imagined DarkRoom")
    print(f"held-out goals, last 10 of {args.episodes} episodes: real {figures['real']:.1%}, imagined {figures['imagined']:.1%} of the "
          f"optimum (imagined / real = {figures['imagined'] / max(figures['real'], 1e-9):.3f}); wrote {png}")


if __name__ == "__main__":
    main()
