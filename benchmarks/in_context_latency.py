"""Per-step latency and memory of in-context agents as their history grows (AD beside Compressed AD).

    python benchmarks/in_context_latency.py --agents runs/darkroom-ad runs/darkroom-compressed-ad \
        --lengths 100 1000 10000 --png docs/images/in_context_latency.png

Each agent streams through one DarkRoom task without a reset of its memory (episodes in a row)
and is timed over the 100 steps that end at each history length: the mean time of one
`act` + `observe`, and the bytes the agent keeps between steps (`memory_bytes`). The agents
are timed in turns, in one process, so the machine's load is shared alike.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import imaginegym  # noqa: F401
from imaginegym.agents.ad.agent import InContextAgent


def stream(agent: InContextAgent, env: gym.Env, lengths: list[int], timed: int = 100) -> dict[int, tuple[float, int]]:
    """{history length: (mean seconds per step over the `timed` steps ending there, memory bytes)}."""
    agent.reset()
    obs, _ = env.reset(seed=0)
    results, start = {}, None
    marks = set(lengths)
    for step in range(1, max(lengths) + 1):
        if step == 1 or any(step - 1 == m - timed for m in marks):
            start = time.perf_counter()
        action = agent.act(obs)
        next_obs, reward, term, trunc, _ = env.step(action)
        agent.observe(action, reward, next_obs, term, trunc)
        obs = env.reset()[0] if term or trunc else next_obs
        if step in marks:
            results[step] = ((time.perf_counter() - start) / min(timed, step), agent.memory_bytes())
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", nargs="+", default=["darkroom-ad", "darkroom-compressed-ad"], help="bundled names or run directories")
    parser.add_argument("--lengths", nargs="+", type=int, default=[100, 1000, 10000], help="history lengths (transitions)")
    parser.add_argument("--env", default="imaginegym/DarkRoom-v0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--png", help="plot latency and memory against history length")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = {}
    for name in args.agents:
        agent = InContextAgent.load(name)
        rows[name] = (agent.config, stream(agent, gym.make(args.env, task=(2, 6)), sorted(args.lengths)))
    print("| agent | model | attends to | " + " | ".join(f"ms/step at {n}" for n in sorted(args.lengths)) + " | "
          + " | ".join(f"memory at {n}" for n in sorted(args.lengths)) + " |")
    print("| --- " * (3 + 2 * len(args.lengths)) + "|")
    for name, (config, result) in rows.items():
        attends = f"{config.context} transitions" if config.model == "ad" else f"{config.n_latent} latents + {config.window} transitions"
        print(f"| {name} | {config.model} | {attends} | " + " | ".join(f"{result[n][0] * 1e3:.2f}" for n in sorted(result)) + " | "
              + " | ".join(f"{result[n][1] / 1024:.1f} KiB" for n in sorted(result)) + " |")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=120)
        for name, (config, result) in rows.items():
            n = sorted(result)
            left.plot(n, [result[k][0] * 1e3 for k in n], marker="o", label=f"{config.model} ({Path(name).name})")
            right.plot(n, [result[k][1] / 1024 for k in n], marker="o", label=config.model)
        for ax, label in ((left, "ms per step (act + observe)"), (right, "memory kept (KiB)")):
            ax.set_xscale("log")
            ax.set_xlabel("history length (transitions)")
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
        left.legend(fontsize=7)
        fig.tight_layout()
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
