"""Where does imagination part from reality for a trained policy? Open loop against closed loop, along its own episodes.

    MUJOCO_GL=egl python benchmarks/policy_replay.py --policy runs/ppo-student-start50/policy --world-model runs/ft-student

`imaginegym agent eval` compares whole episodes: a policy that imagines 840 and earns 250 exploits its
model somewhere, but where, and how? This plays the policy's real episodes (deterministic, seeds 0..N-1),
and from real contexts at several steps of each (the model's context of real frames and actions) imagines
the next ``--horizon`` steps twice:

- open loop: the model is given the actions the policy really took. An error here is the dynamics' (or
  the reward head's) on the policy's own states and actions;
- closed loop: the policy acts on what the model imagines, as it does in training. The difference from
  open loop is what the policy's reaction to imagined observations adds.

With ``--open-loop-only`` the model may have any tokenizer (e.g. a model-based loop's own, trained from
scratch): only the open-loop column is imagined, so the policy never reads that model's latents. This
asks whether a model knows the physics of a behaviour it may never have seen:

    MUJOCO_GL=egl python benchmarks/policy_replay.py --policy runs/expert-latent/policy \
        --world-model runs/mbrl-protocol-seed0/world_model --open-loop-only

It prints the real, open-loop and closed-loop returns over the horizon from each start step, averaged
over the episodes, and writes them as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from imaginegym.agents.sb3.evaluate import same_observations
from imaginegym.agents.sb3.policy import AgentPolicy
from imaginegym.imagination import ImaginationEnv


def real_episode(policy: AgentPolicy, env, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (T+1, H, W, 3), actions (T, A) and rewards (T,) of one deterministic real episode."""
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards, done = [env.unwrapped.render()], [], [], False
    while not done:
        action = policy.act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        frames.append(env.unwrapped.render())
        actions.append(np.asarray(action, dtype=np.float32).reshape(-1))
        rewards.append(float(reward))
        done = terminated or truncated
    return np.stack(frames), np.stack(actions), np.asarray(rewards)


def real_context(env: ImaginationEnv, frames: np.ndarray, actions: np.ndarray, start: int) -> dict:
    """Reset options that make the model's context the real frames (and actions) up to real step ``start``."""
    c = min(env.context_length, start + 1)
    return {"context_frames": frames[start - c + 1 : start + 1], "context_actions": actions[start - c + 1 : start]}


def imagine_from(env: ImaginationEnv, policy: AgentPolicy, frames, actions, start: int, horizon: int, seed: int,
                 open_loop: bool) -> float:
    """The imagined return of ``horizon`` steps after real step ``start``, open loop (the real actions) or closed loop."""
    obs, _ = env.reset(seed=seed, options=real_context(env, frames, actions, start))
    total = 0.0
    for k in range(horizon):
        action = actions[start + k] if open_loop else policy.act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated:
            break
    return total


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="bundled policy name or a directory holding policy.json")
    parser.add_argument("--world-model", help="imagine with this model (same tokenizer weights; default: the policy's own)")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--starts", type=int, nargs="+", default=[0, 25, 50, 75, 100, 150, 250, 400],
                        help="real steps to imagine from")
    parser.add_argument("--horizon", type=int, default=32, help="imagined steps from each start")
    parser.add_argument("--denoise-steps", type=int, help="shortcut steps per imagined step (default: the model's own)")
    parser.add_argument("--open-loop-only", action="store_true",
                        help="imagine only with the real actions, so --world-model may have other tokenizer weights than the policy's")
    parser.add_argument("--out", help="results JSON")
    args = parser.parse_args(argv)

    policy = AgentPolicy.load(args.policy)
    model = args.world_model or policy.config.world_model
    if args.world_model and not args.open_loop_only:  # the policy reads this model's observations: they must mean the same
        model = same_observations(policy, args.world_model, "cpu")
    env = ImaginationEnv(model, obs_mode=policy.config.obs_mode, frame_stack=policy.config.frame_stack, device="cpu",
                         max_episode_steps=args.horizon, render_mode=None, num_denoise_steps=args.denoise_steps)
    real_env = policy.real_env("cpu")
    rows = {s: {"real": [], "open_loop": [], "closed_loop": []} for s in args.starts}
    for i in tqdm(range(args.episodes), desc="episodes"):
        frames, actions, rewards = real_episode(policy, real_env, seed=i)
        for s in args.starts:
            if s + args.horizon > len(actions):
                continue
            rows[s]["real"].append(float(rewards[s : s + args.horizon].sum()))
            rows[s]["open_loop"].append(imagine_from(env, policy, frames, actions, s, args.horizon, 1000 * i + s, open_loop=True))
            if not args.open_loop_only:
                rows[s]["closed_loop"].append(imagine_from(env, policy, frames, actions, s, args.horizon, 1000 * i + s, open_loop=False))
    real_env.close()
    print(f"\n{args.horizon}-step returns from real contexts, mean over {args.episodes} episodes of {args.policy}")
    print(f"imagined by {args.world_model or policy.config.world_model}, {env.num_denoise_steps} denoising steps\n")
    columns = ("real", "open_loop") if args.open_loop_only else ("real", "open_loop", "closed_loop")
    print("| start step | real | open loop (real actions) |" + ("" if args.open_loop_only else " closed loop (policy acts) |"))
    print("| --- " * (1 + len(columns)) + "|")
    for s, r in rows.items():
        if r["real"]:
            print(f"| {s} | " + " | ".join(f"{np.mean(r[c]):.1f}" for c in columns) + " |")
    result = {"policy": str(args.policy), "world_model": str(args.world_model or policy.config.world_model),
              "horizon": args.horizon, "denoise_steps": env.num_denoise_steps, "episodes": args.episodes, "starts": {str(s): r for s, r in rows.items()}}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
