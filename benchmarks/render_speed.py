"""Pixel steps/s of imaginegym/DMC-v0 against plain Shimmy rendering, measured in one run.

    python benchmarks/render_speed.py --task cartpole-swingup --size 64 --steps 1000 --rounds 3

Both envs do the same work per env step: `action_repeat` dm_control steps, then one
(size, size, 3) frame from camera 0. The baseline is Shimmy's `dm_control/<task>-v0`
rendered with `render_kwargs` width/height = size after every env step, i.e.
dm_control's `Physics.render` with MuJoCo's default visuals. Each measurement runs in
its own spawned process after a warm-up; the two envs alternate for `--rounds` rounds
and the median steps/s of each is reported, with their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym

from imaginegym.envs.headless import use_egl_if_headless, worker_context

WARMUP_STEPS = 50


class ShimmyPixels(gym.Wrapper):
    """Shimmy's dm_control env as a pixel env: repeat the action, then `render()`."""

    def __init__(self, env: gym.Env, action_repeat: int) -> None:
        super().__init__(env)
        self.action_repeat = action_repeat

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        return self.env.render(), info

    def step(self, action):
        reward, terminated, truncated, info = 0.0, False, False, {}
        for _ in range(self.action_repeat):
            _, r, terminated, truncated, info = self.env.step(action)
            reward += r
            if terminated or truncated:
                break
        return self.env.render(), reward, terminated, truncated, info


def make_env(kind: str, task: str, size: int, action_repeat: int) -> gym.Env:
    """`kind` "imaginegym": imaginegym/DMC-v0; "shimmy": the plain Shimmy baseline."""
    use_egl_if_headless()  # before shimmy, dm_control or imaginegym.envs.dmc are imported
    if kind == "imaginegym":
        import imaginegym  # noqa: F401  (registers imaginegym/DMC-v0)

        return gym.make("imaginegym/DMC-v0", task=task, size=size, action_repeat=action_repeat)
    import shimmy

    gym.register_envs(shimmy)
    env = gym.make(
        f"dm_control/{task}-v0",
        render_mode="rgb_array",
        render_kwargs={"width": size, "height": size, "camera_id": 0},
    )
    return ShimmyPixels(env, action_repeat)


def steps_per_second(kind: str, task: str, size: int, action_repeat: int, steps: int) -> float:
    """Env steps/s over `steps` steps with random actions, after a warm-up (runs in a child)."""
    env = make_env(kind, task, size, action_repeat)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(WARMUP_STEPS + steps)]
    env.reset(seed=0)
    start = 0.0
    for i, action in enumerate(actions):
        if i == WARMUP_STEPS:
            start = time.perf_counter()
        frame, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    assert frame.shape == (size, size, 3), frame.shape
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cartpole-swingup", help="dm_control 'domain-task'")
    parser.add_argument("--size", type=int, default=64, help="frame height and width, pixels")
    parser.add_argument("--action-repeat", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1000, help="timed env steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per env")
    args = parser.parse_args()

    results: dict[str, list[float]] = {"imaginegym": [], "shimmy": []}
    for round_ in range(args.rounds):
        for kind in results:
            # A fresh spawned process per run: no GL state or cache carries over.
            with worker_context().Pool(1) as pool:
                sps = pool.apply(
                    steps_per_second, (kind, args.task, args.size, args.action_repeat, args.steps)
                )
            results[kind].append(sps)
            print(f"round {round_ + 1}/{args.rounds} {kind:>10}: {sps:8.1f} steps/s", flush=True)

    fast, plain = (statistics.median(results[k]) for k in ("imaginegym", "shimmy"))
    print(
        f"\n{args.task}, {args.size}x{args.size} pixels, action repeat {args.action_repeat}, "
        f"{args.steps} steps x {args.rounds} rounds (median)"
    )
    print(f"imaginegym/DMC-v0      {fast:8.1f} steps/s")
    print(f"shimmy (Physics.render){plain:8.1f} steps/s")
    print(f"ratio                  {fast / plain:8.1f}x")


if __name__ == "__main__":
    main()
