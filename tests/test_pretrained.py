"""Every bundled world model loads with this code and runs as a Gymnasium env."""

import gymnasium as gym
import numpy as np
import pytest

import imaginegym  # noqa: F401  (registers the env ids)
from imaginegym.world_model import PRETRAINED_DIR, WorldModel

BUNDLED = sorted(p.parent.name for p in PRETRAINED_DIR.glob("*/world_model.safetensors"))


def test_the_default_the_fast_and_the_darkroom_model_are_bundled():
    assert {"cartpole-swingup", "cartpole-swingup-fast", "cartpole-swingup-loop", "darkroom"} <= set(BUNDLED)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_steps_in_the_real_envs_spaces(name):
    model = WorldModel.load(name)
    spec = model.env_spec
    if spec.env_id == "imaginegym/DMC-v0":
        assert spec.env_kwargs["size"] == 64 and spec.env_kwargs["action_repeat"] == 2
    # the start contexts: all the model attends to, or the reset observation alone for an env that always starts alike
    assert len(model.start_frames) > 0 and model.start_frames.shape[1] == (spec.start_context or model.dynamics_config.context_length - 1)
    env = gym.make("imaginegym/Imagined-v0", world_model=model, max_episode_steps=5)
    real = gym.make(spec.env_id, **spec.env_kwargs)
    assert env.observation_space == real.observation_space and env.action_space == real.action_space
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(reward) and 0 <= info["continue_prob"] <= 1
    assert truncated
    real.close()
    env.close()
