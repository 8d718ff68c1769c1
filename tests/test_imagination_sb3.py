"""ImaginationSB3VecEnv: the same steps as SB3's DummyVecEnv of single envs, VecMonitor, PPO."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from imaginegym.imagination import ImaginationEnv
from imaginegym.sb3_vec_env import ImaginationSB3VecEnv

from conftest import TINY_SIZE, assert_close_obs


@pytest.mark.parametrize("obs_mode", ["pixels", "latent"])
def test_adapter_matches_dummy_vec_env(tiny_world_model, obs_mode):
    n = 3
    kwargs = dict(world_model=tiny_world_model, obs_mode=obs_mode, max_episode_steps=3)
    ours = ImaginationSB3VecEnv(n, **kwargs)
    dummy = DummyVecEnv([lambda: ImaginationEnv(**kwargs) for _ in range(n)])
    assert ours.observation_space == dummy.observation_space and ours.action_space == dummy.action_space
    assert ours.seed(3) == dummy.seed(3)
    assert_close_obs(ours.reset(), dummy.reset(), obs_mode)
    for a, b in zip(ours.reset_infos, dummy.reset_infos):
        assert a.keys() == b.keys() == {"latent"}
    rng = np.random.default_rng(0)
    dones_seen = 0
    for _ in range(7):
        actions = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
        obs, rewards, dones, infos = ours.step(actions)
        dummy_obs, dummy_rewards, dummy_dones, dummy_infos = dummy.step(actions)
        assert_close_obs(obs, dummy_obs, obs_mode)
        assert rewards.dtype == dummy_rewards.dtype and dones.dtype == dummy_dones.dtype
        np.testing.assert_allclose(rewards, dummy_rewards, atol=1e-4)
        np.testing.assert_array_equal(dones, dummy_dones)
        for info, dummy_info in zip(infos, dummy_infos):
            assert info.keys() == dummy_info.keys()
            assert info["TimeLimit.truncated"] == dummy_info["TimeLimit.truncated"]
            assert info["continue_prob"] == pytest.approx(dummy_info["continue_prob"], abs=1e-4)
            np.testing.assert_allclose(info["latent"], dummy_info["latent"], atol=1e-4)
            if "terminal_observation" in info:
                assert_close_obs(info["terminal_observation"], dummy_info["terminal_observation"], obs_mode)
        for info, dummy_info in zip(ours.reset_infos, dummy.reset_infos):
            np.testing.assert_allclose(info["latent"], dummy_info["latent"], atol=1e-4)
        dones_seen += dones.sum()
    assert dones_seen >= n  # episodes of 3 steps: the comparison crossed resets


def test_vec_env_methods(tiny_world_model):
    env = ImaginationSB3VecEnv(2, tiny_world_model, obs_mode="latent")
    assert env.get_attr("obs_mode") == ["latent", "latent"] and env.get_attr("num_denoise_steps", [1]) == [4]
    assert env.render_mode == "rgb_array"
    env.set_attr("max_episode_steps", 1)
    with pytest.raises(ValueError, match="indices=None"):
        env.set_attr("max_episode_steps", 2, indices=[0])
    assert env.env_is_wrapped(Monitor) == [False, False]
    env.reset()
    assert env.step(np.zeros((2, 1), np.float32))[2].all()  # max_episode_steps=1
    assert env.env_method("render")[0][0].shape == (TINY_SIZE, TINY_SIZE, 3)
    assert env.render().shape[-1] == 3  # SB3 tiles the frames
    env.set_options({"context_frames": np.zeros((1, TINY_SIZE, TINY_SIZE, 3), np.uint8)})
    np.testing.assert_allclose(env.reset()[0], env.reset_infos[0]["latent"])


def test_ppo_learns_on_the_adapter_in_vec_monitor(tiny_world_model):
    env = VecMonitor(ImaginationSB3VecEnv(2, tiny_world_model, obs_mode="latent", max_episode_steps=10))
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.set_logger(Logger(None, []))  # SB3's default logger makes an empty /tmp/SB3-<time> folder on every learn()
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    episodes = [info for info in model.ep_info_buffer]
    assert len(episodes) > 0 and all(np.isfinite(e["r"]) for e in episodes)
