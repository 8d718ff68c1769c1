"""In-context RL on DarkRoom: learning histories -> Algorithm Distillation (or Compressed AD) -> held-out goals.

    python examples/in_context_darkroom.py                       # AD, the recipe (~30 min on a 2-core CPU)
    python examples/in_context_darkroom.py --model compressed-ad
    # writes outputs/in_context_darkroom/: histories/, run/ (agent, TensorBoard), results.json, learning_curve.png

A source RL algorithm learns each training goal from scratch; every transition is kept. A
transformer trained to predict the source's actions from its history then learns each
held-out goal in context, with frozen weights, episode after episode.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from imaginegym.agents.ad import HistoriesConfig, collect_histories
from imaginegym.agents.ad.agent import InContextAgent
from imaginegym.agents.ad.evaluate import evaluate_in_context, plot_learning_curves, source_learning_curve, write_results
from imaginegym.agents.ad.model import ModelConfig
from imaginegym.agents.ad.train import TrainConfig, train_in_context


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="imaginegym/DarkRoom-v0")
    parser.add_argument("--model", default="ad", choices=["ad", "compressed-ad"])
    parser.add_argument("--num-tasks", type=int, default=0, help="training goals (0: every one of the split)")
    parser.add_argument("--history-episodes", type=int, default=80, help="episodes of each learning history")
    parser.add_argument("--runs-per-task", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8000, help="training steps")
    parser.add_argument("--episodes", type=int, default=50, help="in-context episodes per held-out goal")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (smoke tests)")
    parser.add_argument("--out", default="outputs/in_context_darkroom")
    args = parser.parse_args(argv)
    out = Path(args.out)

    data = collect_histories(HistoriesConfig(env=args.env, num_tasks=args.num_tasks, episodes=args.history_episodes,
                                             runs_per_task=args.runs_per_task), out / "histories")
    model = ModelConfig(model=args.model)
    if args.tiny:
        model = ModelConfig(model=args.model, d_model=16, layers=1, heads=2, context=24, n_latent=4, segment=5, window=6, encoder_layers=1)
    agent_dir = train_in_context(TrainConfig(data=str(data), steps=args.steps, batch_size=4 if args.tiny else 32, eval_every=0,
                                             model=model), out / "run")

    agent = InContextAgent.load(agent_dir)
    result = evaluate_in_context(agent, args.env, tasks="test", episodes=args.episodes)
    write_results(result, out / "results.json")
    source = source_learning_curve(args.env, tasks="test", episodes=args.episodes)
    png = plot_learning_curves({f"{args.model} (in context, frozen weights)": result["mean_return_by_episode"],
                                "source algorithm (learning)": source}, float(np.mean(result["optimal_return"])),
                               out / "learning_curve.png", title=f"{args.env}: held-out goals")
    print(f"held-out goals, last 10 of {args.episodes} episodes: {result['mean_fraction_of_optimal_last10']:.1%} of the optimum "
          f"(lowest goal {result['min_fraction_of_optimal_last10']:.1%}); wrote {out / 'results.json'} and {png}")


if __name__ == "__main__":
    main()
