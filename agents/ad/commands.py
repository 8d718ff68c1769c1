"""`imaginegym ad histories|train|eval`: in-context agents from the command line (flags generated from the configs)."""

from __future__ import annotations

import argparse
import json

from imaginegym.training.flags import add_dataclass_flags, dataclass_from_flags, positive_int


def add_ad_parser(subparsers) -> None:
    from imaginegym.agents.ad.histories import HistoriesConfig
    from imaginegym.agents.ad.model import ModelConfig
    from imaginegym.agents.ad.sources import SourceConfig
    from imaginegym.agents.ad.train import TrainConfig

    parser = subparsers.add_parser("ad", help="in-context agents: learning histories, AD and Compressed AD")
    actions = parser.add_subparsers(dest="stage", required=True, metavar="{histories,train,eval}")
    histories = actions.add_parser("histories", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                   help="learning histories: a source RL algorithm learns each task from scratch (resumes OUT)",
                                   description="Run a source RL algorithm on each task of a split, from scratch to competence, and "
                                   "store every transition of each run in order (episode store, runs). Parallel over runs; the same "
                                   "command resumes an interrupted collection.")
    histories.add_argument("--out", required=True, help="dataset directory")
    add_dataclass_flags(histories, HistoriesConfig)
    add_dataclass_flags(histories, SourceConfig, prefix="source")
    histories.set_defaults(handler=run_histories)
    train = actions.add_parser("train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                               help="train AD or Compressed AD on learning histories (resumes OUT)",
                               description="Train Algorithm Distillation or Compressed AD on learning histories. Writes OUT/agent "
                               "(an InContextAgent: safetensors + JSON), checkpoints and TensorBoard logs; resumes from OUT.")
    train.add_argument("--out", required=True, help="run directory")
    add_dataclass_flags(train, TrainConfig)
    add_dataclass_flags(train, ModelConfig)
    train.set_defaults(handler=run_train)
    evaluate = actions.add_parser("eval", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                  help="in-context evaluation: episodes in a row per task, from an empty memory",
                                  description="Play EPISODES episodes in a row on each task, starting from an empty memory, and report "
                                  "the mean return of the last 10 as a fraction of the optimum, per task and averaged.")
    evaluate.add_argument("--agent", required=True, help="bundled agent name, a training run directory or an agent directory")
    evaluate.add_argument("--env", help="env id (default: the agent's), or imagined:MODEL for its imagined twin")
    evaluate.add_argument("--tasks", default="test", help="test, train or all (the env's split)")
    evaluate.add_argument("--episodes", type=positive_int, default=50)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling")
    evaluate.add_argument("--temperature", type=float, default=1.0, help="sample at this temperature (below 1: closer to greedy)")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--out", help="results JSON")
    evaluate.set_defaults(handler=run_eval)


def run_histories(args: argparse.Namespace) -> int:
    from imaginegym.agents.ad.histories import HistoriesConfig, collect_histories
    from imaginegym.agents.ad.sources import SourceConfig

    config = dataclass_from_flags(HistoriesConfig, args, source=dataclass_from_flags(SourceConfig, args, prefix="source"))
    root = collect_histories(config, args.out)
    print(f"learning histories: {root}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from imaginegym.agents.ad.model import ModelConfig
    from imaginegym.agents.ad.train import TrainConfig, train_in_context

    config = dataclass_from_flags(TrainConfig, args, model=dataclass_from_flags(ModelConfig, args))
    path = train_in_context(config, args.out)
    print(f"agent: {path}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from imaginegym.agents.ad.agent import InContextAgent
    from imaginegym.agents.ad.evaluate import evaluate_in_context, imagined_env_maker, write_results

    agent = InContextAgent.load(args.agent, device=args.device, greedy=args.greedy, seed=args.seed, temperature=args.temperature)
    env_id, make_env = args.env or agent.env_id, None
    if env_id is None:
        raise ValueError(f"the agent {args.agent} does not name its env: give --env")
    if env_id.startswith("imagined:"):
        make_env, env_id = imagined_env_maker(env_id.removeprefix("imagined:"), device=args.device)
        env_id_shown = f"{args.env} (imagined {env_id})"
    else:
        env_id_shown = env_id
    result = evaluate_in_context(agent, env_id, tasks=args.tasks, episodes=args.episodes, seed=args.seed, make_env=make_env)
    result["env"] = env_id_shown
    fractions = result["fraction_of_optimal_last10"]
    print(f"{env_id_shown}, {len(fractions)} {args.tasks} tasks, {args.episodes} episodes each: last 10 episodes reach "
          f"{result['mean_fraction_of_optimal_last10']:.1%} of the optimum on average (lowest task {result['min_fraction_of_optimal_last10']:.1%})")
    if args.out:
        print(f"wrote {write_results(result, args.out)}")
    else:
        print(json.dumps({k: result[k] for k in ("tasks", "fraction_of_optimal_last10")}))
    return 0
