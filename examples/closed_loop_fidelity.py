"""How faithful is a world model where a competent policy goes? Distil a scripted expert, then compare both worlds.

    python examples/closed_loop_fidelity.py                  # ~5 min on a laptop CPU
    # DAgger distils the scripted cartpole swing-up (it reads the simulator's state) into a policy on the
    # bundled model's latents, writes outputs/closed_loop_fidelity/ (policy/, eval.json, eval.gif: real |
    # imagined) and prints the student's real return beside what each world model imagines for it

Open-loop figures (`imaginegym eval world-model`) replay recorded actions and drift apart on an unstable
pole whatever the model; here the same competent policy acts in both worlds, reacting to what it sees.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from imaginegym.agents.imitation import DistillConfig, distill_expert
from imaginegym.agents.sb3 import evaluate_policy, save_evaluation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", default="cartpole-swingup", help="the student observes this model's latents")
    parser.add_argument("--imagined-models", nargs="*", default=[], help="also imagine with these models (same tokenizer)")
    parser.add_argument("--iterations", type=int, default=16, help="DAgger iterations")
    parser.add_argument("--episodes", type=int, default=6, help="real episodes per DAgger iteration")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="outputs/closed_loop_fidelity")
    args = parser.parse_args(argv)

    out = Path(args.out)
    policy = distill_expert(DistillConfig(world_model=args.world_model, iterations=args.iterations, episodes=args.episodes,
                                          epochs=args.epochs), out / "distill")
    for i, model in enumerate([None, *args.imagined_models]):
        result = evaluate_policy(policy, episodes=args.eval_episodes, gif=out / "eval.gif" if i == 0 else None, imagined_model=model)
        save_evaluation(result, out / ("eval.json" if i == 0 else f"eval_{i}.json"), imagined_model=model or args.world_model)
        s = result.summary()
        print(f"{model or args.world_model}: the student's real return {s['real_mean']:.1f} ± {s['real_std']:.1f}, imagined "
              f"{s['imagined_mean']:.1f} ± {s['imagined_std']:.1f} (gap {s['relative_gap']:+.0%})")
    print(f"wrote {out / 'distill' / 'policy'}, {out / 'eval.json'} and {out / 'eval.gif'} (left: real, right: imagined)")


if __name__ == "__main__":
    main()
