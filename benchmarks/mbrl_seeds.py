"""The model-based loop over several seeds: real return against real frames, mean ± std across the seeds.

    python benchmarks/mbrl_seeds.py runs/mbrl-protocol-seed0 runs/mbrl-protocol-seed1 runs/mbrl-protocol-seed2 \
        --out docs/images/mbrl_protocol_seeds.png

Reads each run's ``loop.json`` (`imaginegym agent mbrl --out RUN`), prints one row per iteration (each seed's
evaluation return, their mean and std, and each seed's wall time so far) and plots every seed's curve with the
mean. Iterations that not every seed has finished are left out of the mean.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load_curves(runs: list[str]) -> list[list[dict]]:
    curves = []
    for run in runs:
        state = Path(run) / "loop.json"
        if not state.is_file():
            raise SystemExit(f"{run}: no loop.json (give the --out of `imaginegym agent mbrl` runs)")
        curves.append(json.loads(state.read_text())["curve"])
    return curves


def summary(curves: list[list[dict]]) -> list[dict]:
    """One row per iteration that every seed has finished: frames, each seed's return, mean, std, wall minutes."""
    rows = []
    for i in range(min(len(c) for c in curves)):
        points = [c[i] for c in curves]
        returns = np.array([p["eval_return_mean"] for p in points])
        rows.append({"iteration": i, "frames": 2 * points[0]["real_steps"], "returns": returns.tolist(),
                     "mean": float(returns.mean()), "std": float(returns.std()), "wall_min": [p["wall_s"] / 60 for p in points]})
    return rows


def plot(curves: list[list[dict]], rows: list[dict], names: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for curve, name in zip(curves, names):
        ax.plot([2 * p["real_steps"] for p in curve], [p["eval_return_mean"] for p in curve], marker=".", alpha=0.5, label=name)
    if rows:
        frames, mean, std = (np.array([r[k] for r in rows]) for k in ("frames", "mean", "std"))
        ax.plot(frames, mean, color="black", marker="o", label=f"mean of {len(curves)}")
        ax.fill_between(frames, mean - std, mean + std, color="black", alpha=0.15)
    ax.set_xlabel("real env frames")
    ax.set_ylabel("real return (500 steps, deterministic)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="output directories of `imaginegym agent mbrl`, one per seed")
    parser.add_argument("--out", help="PNG of the curves")
    args = parser.parse_args(argv)
    curves = load_curves(args.runs)
    rows = summary(curves)
    names = [Path(run).name for run in args.runs]
    print("| iteration | real frames | " + " | ".join(names) + " | mean ± std | wall (min) |")
    print("| --- " * (4 + len(names)) + "|")
    for r in rows:
        print(f"| {r['iteration']} | {r['frames']:,} | " + " | ".join(f"{x:.1f}" for x in r["returns"])
              + f" | {r['mean']:.1f} ± {r['std']:.1f} | " + " / ".join(f"{w:.1f}" for w in r["wall_min"]) + " |")
    if args.out:
        print(f"wrote {plot(curves, rows, names, Path(args.out))}")
    return rows


if __name__ == "__main__":
    main()
