"""Imagined env-steps/s against the real env's, measured in one run.

    python benchmarks/imagination_speed.py --world-model cartpole-swingup --seconds 5
    python benchmarks/imagination_speed.py --world-model runs/cartpole-swingup --rollout-steps 1000

Imagined: an `ImaginationVectorEnv` of N envs (one batched model call per denoising pass)
in latent and in pixel mode, for each N of --num-envs, stepped with random actions and
its own autoresets for --seconds by `gymnasium.utils.performance.benchmark_vector_step`
(env-steps/s, resets included). Real: `imaginegym/DMC-v0` made from the model's env_spec
(same task, frame size and action repeat) as a single env (`benchmark_step`) and as
`gym.make_vec(..., vectorization_mode="async")` with --real-workers spawned workers
(MuJoCo's EGL state must not be forked). Ratios are imagined / the best real figure.

--rollout-steps T: one single-env rollout of T imagined steps (pixels, no time limit):
ms per step over its first and last 100 steps, the KV cache's bytes (constant: a ring
buffer of context_length - 1 frames) and the process's peak memory at both ends.
"""

from __future__ import annotations

import argparse
import resource
import time

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils.performance import benchmark_step, benchmark_vector_step

import imaginegym  # noqa: F401  (registers the env ids)
from imaginegym.imagination import ImaginationEnv, ImaginationVectorEnv
from imaginegym.world_model import WorldModel

WINDOW = 100  # steps averaged at each end of the long rollout


def imagined_speed(wm: WorldModel, num_envs: int, obs_mode: str, seconds: float, denoise_steps: int = 4) -> float:
    env = ImaginationVectorEnv(num_envs, wm, obs_mode=obs_mode, num_denoise_steps=denoise_steps)
    sps = benchmark_vector_step(env, target_duration=seconds, seed=0)
    env.close()
    return sps


def real_speeds(wm: WorldModel, workers: int, seconds: float) -> dict[str, float]:
    spec = wm.env_spec
    single = gym.make(spec.env_id, **spec.env_kwargs)
    speeds = {"single env": benchmark_step(single, target_duration=seconds, seed=0)}
    single.close()
    vec = gym.make_vec(
        spec.env_id, num_envs=workers, vectorization_mode="async",
        vector_kwargs={"context": "spawn"}, **spec.env_kwargs,
    )
    speeds[f"async, {workers} spawned workers"] = benchmark_vector_step(vec, target_duration=seconds, seed=0)
    vec.close()
    return speeds


def cache_bytes(cache) -> int:
    return sum(t.nbytes for t in (cache.k, cache.v, cache.valid, cache.time))


def long_rollout(wm: WorldModel, steps: int) -> None:
    env = ImaginationEnv(wm)
    env.max_episode_steps = None  # one episode of all the steps
    env.reset(seed=0)
    env.action_space.seed(0)
    cache = env.kv_cache
    peak_cache, times = cache_bytes(cache), []
    rss_start = None
    for t in range(steps):
        action = env.action_space.sample()
        start = time.perf_counter()
        env.step(action)
        times.append(time.perf_counter() - start)
        peak_cache = max(peak_cache, cache_bytes(cache))
        if t == min(WINDOW, steps) - 1:
            rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    first, last = np.mean(times[:WINDOW]) * 1e3, np.mean(times[-WINDOW:]) * 1e3
    print(f"\none rollout of {steps} imagined steps (pixels, batch of 1):")
    print(f"  ms per step       first {min(WINDOW, steps)}: {first:7.2f}   last {min(WINDOW, steps)}: {last:7.2f}")
    print(f"  KV cache          {cache_bytes(cache) / 2**20:.2f} MiB at the end, peak {peak_cache / 2**20:.2f} MiB, "
          f"shape {tuple(cache.k.shape)} (k and v), {int(cache.time[0])} frames seen")
    print(f"  process peak RSS  {rss_start / 1024:.0f} MiB after {min(WINDOW, steps)} steps, {rss_end / 1024:.0f} MiB at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-model", default="cartpole-swingup", help="bundled name, .safetensors file or run dir")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 16, 64, 256], help="imagined batch sizes N")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--real-workers", type=int, default=2, help="async workers of the real vector env")
    parser.add_argument("--real-steps-per-second", type=float, default=None,
                        help="the real env's figure measured elsewhere: skips measuring it (for a machine without MuJoCo)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--denoise-steps", type=int, default=4, help="shortcut denoising steps per imagined frame")
    parser.add_argument("--rollout-steps", type=int, default=0, help="also run one rollout this long (e.g. 1000)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    wm = WorldModel.load(args.world_model, args.device)
    k, d = wm.dynamics_config.latent_tokens, wm.dynamics_config.latent_dim
    print(f"world model {args.world_model}: {wm.env_spec.task}, K={k} tokens x D={d}, "
          f"context {wm.dynamics_config.context_length} frames, {args.denoise_steps} denoising steps; "
          f"device {wm.device}, {torch.get_num_threads()} torch threads")

    if args.real_steps_per_second:
        real = {"given (--real-steps-per-second)": args.real_steps_per_second}
    else:
        real = real_speeds(wm, args.real_workers, args.seconds)
    best_real = max(real.values())
    imagined = {(n, mode): imagined_speed(wm, n, mode, args.seconds, args.denoise_steps) for n in args.num_envs for mode in ("latent", "pixels")}

    size = wm.observation_space.shape
    print(f"\nreal {wm.env_spec.env_id} ({wm.env_spec.task}, {size[0]}x{size[1]} pixels, {wm.env_spec.env_kwargs}):")
    for name, sps in real.items():
        print(f"  {name:<28} {sps:9.1f} steps/s")
    print("\nimagined env-steps/s (N envs, one batch):")
    print(f"  {'N':>5} {'latent':>10} {'pixels':>10} {'latent/real':>12} {'pixels/real':>12}")
    for n in args.num_envs:
        latent, pixels = imagined[n, "latent"], imagined[n, "pixels"]
        print(f"  {n:>5} {latent:>10.1f} {pixels:>10.1f} {latent / best_real:>11.2f}x {pixels / best_real:>11.2f}x")
    if 64 in args.num_envs:
        print(f"\nlatent@64 / best real: {imagined[64, 'latent'] / best_real:.2f}x (target >= 3)")
        print(f"pixels@64 / best real: {imagined[64, 'pixels'] / best_real:.2f}x (target >= 1)")
    if args.rollout_steps:
        long_rollout(wm, args.rollout_steps)


if __name__ == "__main__":
    main()
