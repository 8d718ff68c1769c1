"""imaginegym/DMC-v0: spaces, env contract, seeding, episode ends, actions, frames, headless GL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import imaginegym  # noqa: F401  (registers the ids)
from imaginegym.envs import DMCEnv, use_egl_if_headless, worker_context


@pytest.fixture
def env():
    env = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=64, action_repeat=2)
    yield env
    env.close()


def rollout(env: gym.Env, seed: int, actions: np.ndarray) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for action in actions:
        frames.append(env.step(action)[0])
    return frames


def test_spaces_and_recorded_settings(env):
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    base = env.unwrapped
    assert (base.task, base.size, base.action_repeat) == ("cartpole-swingup", 64, 2)
    assert base.metadata["render_fps"] == pytest.approx(50.0)  # 0.01 s control step x 2


def test_observations_are_fresh_uint8_frames(env):
    obs, _ = env.reset(seed=0)
    next_obs, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
    for frame in (obs, next_obs):
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    assert isinstance(reward, float) and not terminated and not truncated
    rendered = env.render()
    assert not np.shares_memory(obs, next_obs) and not np.shares_memory(next_obs, rendered)
    np.testing.assert_array_equal(rendered, next_obs)
    next_obs[:] = 0
    assert env.render().any()


def test_frame_shows_a_scene(env):
    obs, _ = env.reset(seed=0)
    assert obs.astype(np.float64).std() > 10.0
    # The cart and pole are orange, the only pixels where red clearly exceeds blue.
    orange = (obs[..., 0].astype(int) - obs[..., 2].astype(int)) > 60
    assert 10 < orange.sum() < 64 * 64 // 4


def test_gymnasium_check_env(env):
    check_env(env.unwrapped)


def test_sb3_check_env_without_warnings(env):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env.unwrapped)


def test_same_seed_same_frames_other_seed_other_frames():
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 1)).astype(np.float32)
    envs = [gym.make("imaginegym/DMC-v0", task="cartpole-swingup") for _ in range(2)]
    first, again = (rollout(e, 7, actions) for e in envs)
    other = rollout(envs[0], 8, actions)
    for e in envs:
        e.close()
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_truncates_after_dmc_time_limit_over_action_repeat(env):
    env.reset(seed=0)
    action = np.zeros(1, np.float32)
    for _ in range(499):
        _, _, terminated, truncated, _ = env.step(action)
        assert not terminated and not truncated
    _, _, terminated, truncated, _ = env.step(action)
    assert truncated and not terminated


@pytest.mark.parametrize(("time_limit", "action_repeat", "steps"), [(0.1, 2, 5), (0.1, 3, 4)])
def test_time_limit_in_seconds(time_limit, action_repeat, steps):
    env = DMCEnv("cartpole-swingup", action_repeat=action_repeat, time_limit=time_limit)
    env.reset(seed=0)
    ends = [env.step(np.zeros(1, np.float32))[3] for _ in range(steps)]
    env.close()
    assert ends == [False] * (steps - 1) + [True]  # 10 control steps of 0.01 s


def test_reward_sums_over_action_repeat():
    actions = np.full((3, 1), 0.5, np.float32)
    single, double = DMCEnv(action_repeat=1), DMCEnv(action_repeat=2)
    single.reset(seed=1)
    double.reset(seed=1)
    summed = sum(single.step(a)[1] for a in np.repeat(actions, 2, axis=0))
    repeated = sum(double.step(a)[1] for a in actions)
    single.close()
    double.close()
    assert repeated == pytest.approx(summed)


def test_out_of_range_actions_are_clipped():
    big, edge = DMCEnv(), DMCEnv()
    big.reset(seed=2)
    edge.reset(seed=2)
    for raw, clipped in [(5.0, 1.0), (-7.0, -1.0)]:
        a, ra = big.step(np.array([raw], np.float32))[:2]
        b, rb = edge.step(np.array([clipped], np.float32))[:2]
        np.testing.assert_array_equal(a, b)
        assert ra == rb
    big.close()
    edge.close()


def test_actions_rescale_to_task_bounds():
    env = DMCEnv("quadruped-walk", size=16)
    spec = env._dmc.action_spec()
    np.testing.assert_allclose(env.dmc_action(np.ones(12)), spec.maximum)
    np.testing.assert_allclose(env.dmc_action(-np.ones(12)), spec.minimum)
    np.testing.assert_allclose(env.dmc_action(np.full(12, 3.0)), spec.maximum)
    with pytest.raises(ValueError, match=r"shape \(12,\)"):
        env.dmc_action(np.ones(3))
    env.close()


@pytest.mark.parametrize("action", ["left", None, [[0.5]], [0.5, 0.5], [np.nan]])
def test_bad_actions_name_the_value_and_the_expected_shape(action):
    env = DMCEnv(size=16)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=rf"action {re.escape(repr(action))} for cartpole-swingup: expected finite floats of shape \(1,\) in \[-1, 1\]"):
        env.step(action)
    env.step([0.5])  # the env is still usable
    env.close()


def test_step_needs_reset_before_the_first_episode_and_after_truncation():
    env = DMCEnv(size=16, time_limit=0.04)  # two steps of 2 x 0.01 s
    with pytest.raises(gym.error.ResetNeeded, match="before the first reset"):
        env.step(np.zeros(1, np.float32))
    for _ in range(2):
        env.reset(seed=0)
        truncated = [env.step(np.zeros(1, np.float32))[3] for _ in range(2)]
        assert truncated == [False, True]
        with pytest.raises(gym.error.ResetNeeded, match="after the episode was truncated; call reset"):
            env.step(np.zeros(1, np.float32))
    env.close()


def test_step_needs_reset_after_termination(monkeypatch):
    env = DMCEnv(size=16)
    env.reset(seed=0)
    dmc_step = env._dmc.step
    monkeypatch.setattr(env._dmc, "step", lambda action: (*dmc_step(action)[:2], True, False, {}))  # a task ending with discount 0
    assert env.step(np.zeros(1, np.float32))[2]
    with pytest.raises(gym.error.ResetNeeded, match="after the episode was terminated"):
        env.step(np.zeros(1, np.float32))
    env.close()


def test_closed_env_says_so():
    env = DMCEnv(size=16)
    env.reset(seed=0)
    env.close()
    env.close()
    for call in (lambda: env.reset(seed=0), lambda: env.step(np.zeros(1, np.float32))):
        with pytest.raises(gym.error.ClosedEnvironmentError, match="closed cartpole-swingup env: make a new one"):
            call()


def test_include_state_gives_flat_float64_proprioception():
    env = DMCEnv(include_state=True)
    _, info = env.reset(seed=0)
    _, _, _, _, next_info = env.step(np.ones(1, np.float32))
    env.close()
    assert env.state_space.shape == (5,)  # cartpole: position (3) + velocity (2)
    for state in (info["state"], next_info["state"]):
        assert state.dtype == np.float64 and state.shape == (5,)
    assert not np.array_equal(info["state"], next_info["state"])
    plain = DMCEnv()
    assert "state" not in plain.reset(seed=0)[1]
    plain.close()


def test_bad_task_names_it_and_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'cartpole-swingupp'.*cartpole-swingup.*reacher-easy"):
        gym.make("imaginegym/DMC-v0", task="cartpole-swingupp")


def test_bad_camera_is_an_error():
    with pytest.raises(ValueError, match="camera_id=5"):
        DMCEnv(camera_id=5)


def test_headless_keeps_user_choice_and_displays(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    assert use_egl_if_headless() == "glfw"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("DISPLAY", ":0")
    assert use_egl_if_headless() is None and "MUJOCO_GL" not in os.environ


def _child_gl_and_frame_std() -> tuple[str | None, float]:
    from imaginegym.envs.dmc import DMCEnv

    env = DMCEnv(size=32)
    obs, _ = env.reset(seed=0)
    env.close()
    return os.environ.get("MUJOCO_GL"), float(obs.std())


def test_spawned_worker_without_display_uses_egl(monkeypatch):
    for name in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    with worker_context().Pool(1) as pool:
        backend, std = pool.apply(_child_gl_and_frame_std)
    assert backend == "egl" and std > 10.0


def test_unclosed_env_exits_quietly():
    code = "import gymnasium as gym, imaginegym; gym.make('imaginegym/DMC-v0').reset(seed=0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "Exception ignored" not in done.stderr, done.stderr


def test_torch_optimizers_work_after_egl_rendering_in_one_process():
    """Mesa's LLVM (EGL on the CPU) loaded before Triton's used to segfault torch's optimizers."""
    code = (
        "import imaginegym, gymnasium as gym\n"
        "env = gym.make('imaginegym/DMC-v0', task='cartpole-swingup', size=16)\n"
        "env.reset(seed=0); env.step(env.action_space.sample())\n"
        "import torch\n"
        "torch.optim.Adam([torch.nn.Parameter(torch.ones(1))])\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


@pytest.mark.parametrize("mode", [None, "sync", "async"])
def test_more_envs_than_memory_holds_are_refused_up_front(mode):

    kwargs = {} if mode is None else {"vectorization_mode": mode}
    with pytest.raises(ValueError, match=r"num_envs=100000 needs about .* GiB on cpu \(.* MiB per env .*use at most [\d,]+ envs"):
        imaginegym.make_vec("imaginegym/DMC-v0", num_envs=100_000, task="cartpole-swingup", **kwargs)
    with pytest.raises(ValueError, match=r"num_envs=2.5 must be an integer >= 1"):
        imaginegym.make_vec("imaginegym/DMC-v0", num_envs=2.5, task="cartpole-swingup", **kwargs)
