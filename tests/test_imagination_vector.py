"""ImaginationVectorEnv: the same episodes as single envs, autoreset modes, make_vec, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import imaginegym
from imaginegym.imagination import ImaginationEnv, ImaginationVectorEnv

from conftest import TINY_SIZE, assert_close_obs


@pytest.mark.parametrize("obs_mode", ["pixels", "latent"])
def test_vector_env_replays_single_envs_across_autoresets(tiny_world_model, obs_mode):
    n, seed, steps = 3, 5, 8
    kwargs = dict(world_model=tiny_world_model, obs_mode=obs_mode, max_episode_steps=3)
    vec = ImaginationVectorEnv(n, **kwargs)
    singles = [ImaginationEnv(**kwargs) for _ in range(n)]
    assert vec.single_observation_space == singles[0].observation_space
    assert vec.single_action_space == singles[0].action_space
    assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP

    obs, infos = vec.reset(seed=seed)
    for i, env in enumerate(singles):
        single_obs, single_info = env.reset(seed=seed + i)
        assert_close_obs(obs[i], single_obs, obs_mode)
        np.testing.assert_allclose(infos["latent"][i], single_info["latent"], atol=1e-4)
    vec.action_space.seed(0)
    done = np.zeros(n, dtype=bool)
    autoresets = 0
    for _ in range(steps):
        actions = vec.action_space.sample()
        obs, rewards, terminated, truncated, infos = vec.step(actions)
        assert obs.shape == vec.observation_space.shape and rewards.dtype == np.float64
        for i, env in enumerate(singles):
            if done[i]:  # NEXT_STEP: this step resets env i
                single_obs, info = env.reset()
                reward, term, trunc = 0.0, False, False
                assert not infos["_continue_prob"][i]
                autoresets += 1
            else:
                single_obs, reward, term, trunc, info = env.step(actions[i])
                assert infos["continue_prob"][i] == pytest.approx(info["continue_prob"], abs=1e-4)
            assert_close_obs(obs[i], single_obs, obs_mode)
            np.testing.assert_allclose(infos["latent"][i], info["latent"], atol=1e-4)
            assert rewards[i] == pytest.approx(reward, abs=1e-4)
            assert (terminated[i], truncated[i]) == (term, trunc)
        done = terminated | truncated
    assert autoresets >= n


def test_disabled_autoreset_resets_only_the_masked_envs(tiny_world_model):
    vec = ImaginationVectorEnv(
        3, tiny_world_model, obs_mode="latent", max_episode_steps=2, autoreset_mode=AutoresetMode.DISABLED
    )
    assert vec.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    vec.reset(seed=0)
    actions = np.zeros((3, 1), np.float32)
    vec.step(actions)
    obs, _, _, truncated, _ = vec.step(actions)
    assert truncated.all()
    with pytest.raises(ValueError, match=r"envs \[0, 1, 2\] are done.*reset_mask"):
        vec.step(actions)
    mask = np.array([True, False, True])
    reset_obs, infos = vec.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(infos["_latent"], mask)
    np.testing.assert_array_equal(reset_obs[1], obs[1])  # env 1 keeps its state
    assert not np.allclose(reset_obs[0], obs[0])
    with pytest.raises(ValueError, match=r"envs \[1\] are done"):
        vec.step(actions)
    vec.reset(options={"reset_mask": np.array([False, True, False])})
    _, _, _, truncated, _ = vec.step(actions)
    assert not truncated.any()


def test_seeds_per_env(tiny_world_model):
    vec = ImaginationVectorEnv(2, tiny_world_model, obs_mode="latent")
    by_int, _ = vec.reset(seed=10)
    by_list, _ = vec.reset(seed=[10, 11])
    swapped, _ = vec.reset(seed=[11, 10])
    np.testing.assert_array_equal(by_int, by_list)
    np.testing.assert_allclose(swapped, by_list[::-1], atol=1e-5)
    with pytest.raises(ValueError, match="3 seeds for 2 envs"):
        vec.reset(seed=[1, 2, 3])


def test_reset_with_a_given_context(tiny_world_model):
    frames = np.random.default_rng(0).integers(0, 256, (3, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    vec = ImaginationVectorEnv(2, tiny_world_model)
    obs, _ = vec.reset(seed=0, options={"context_frames": frames, "context_actions": np.zeros((2, 1), np.float32)})
    np.testing.assert_array_equal(obs, np.stack([frames[-1]] * 2))
    assert [f.shape for f in vec.render()] == [(TINY_SIZE, TINY_SIZE, 3)] * 2


def test_make_vec_builds_the_native_vector_env(tiny_world_model):
    vec = gym.make_vec(
        "imaginegym/Imagined-v0", num_envs=4, vectorization_mode="vector_entry_point",
        world_model=tiny_world_model, obs_mode="latent",
    )
    assert isinstance(vec, ImaginationVectorEnv) and vec.num_envs == 4
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (4, 64) and vec.observation_space.contains(obs)
    assert vec.step(vec.action_space.sample())[0].shape == (4, 64)
    native = imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=2, world_model=tiny_world_model)
    assert isinstance(native, ImaginationVectorEnv) and native.observation_space.shape == (2, TINY_SIZE, TINY_SIZE, 3)


def test_vector_errors(tiny_world_model):
    vec = ImaginationVectorEnv(2, tiny_world_model)
    with pytest.raises(gym.error.ResetNeeded):
        vec.step(np.zeros((2, 1), np.float32))
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3, 1\), the world model expects \(2, 1\)"):
        vec.step(np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.array([1, 0])})
    with pytest.raises(ValueError, match="SAME_STEP is not supported"):
        ImaginationVectorEnv(2, tiny_world_model, autoreset_mode=AutoresetMode.SAME_STEP)
