"""ImaginationEnv: Gymnasium and SB3 contracts, reset modes, determinism, errors, long rollouts."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import imaginegym
from imaginegym.data import DatasetError, DatasetMeta, Episode, EpisodeDataset, write_episode
from imaginegym.imagination import ImaginationEnv, LatentObservation
from imaginegym.models import noise

from conftest import TINY_SIZE, assert_close_obs


def set_continue(wm, logit: float) -> None:
    """Make the continue head say `logit` whatever it sees (+: the episode goes on)."""
    head = wm.dynamics.continue_head[-1]
    head.weight.data.zero_()
    head.bias.data.fill_(logit)


def rollout(env: gym.Env, seed: int, actions: list) -> list:
    obs, info = env.reset(seed=seed)
    out = [(obs, info["latent"])]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info["latent"], info["continue_prob"]))
    return out


@pytest.mark.parametrize("obs_mode", ["pixels", "latent", "state"])
def test_env_checkers_pass(tiny_world_model, obs_mode):
    env = gym.make("imaginegym/Imagined-v0", world_model=tiny_world_model, obs_mode=obs_mode).unwrapped
    check_env(env, skip_render_check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 warns that 16x16 images are small for its CNN
        sb3_check_env(env)


def test_spaces_match_the_real_env_or_the_latents(tiny_world_model):
    wm = tiny_world_model
    pixels = gym.make("imaginegym/Imagined-v0", world_model=wm)
    assert pixels.observation_space == wm.observation_space == spaces.Box(0, 255, (TINY_SIZE, TINY_SIZE, 3), np.uint8)
    assert pixels.action_space == wm.action_space
    latent = gym.make("imaginegym/Imagined-v0", world_model=wm, obs_mode="latent")
    k, d = wm.dynamics_config.latent_tokens, wm.dynamics_config.latent_dim
    assert latent.observation_space == spaces.Box(-1, 1, (k * d,), np.float32)
    obs, info = latent.reset(seed=0)
    assert obs.shape == (k * d,) and obs.dtype == np.float32 and info["latent"].dtype == np.float32


def test_loads_a_model_file_and_names_a_missing_one(tiny_world_model_path, tmp_path):
    env = gym.make("imaginegym/Imagined-v0", world_model=tiny_world_model_path, device="cpu")
    assert env.reset(seed=0)[0].shape == (TINY_SIZE, TINY_SIZE, 3)
    with pytest.raises(FileNotFoundError, match="no world model at"):
        ImaginationEnv(tmp_path / "missing")


def test_step_types_and_info(tiny_world_model):
    env = ImaginationEnv(tiny_world_model, max_episode_steps=3)
    env.reset(seed=0)
    for t in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == (TINY_SIZE, TINY_SIZE, 3) and obs.dtype == np.uint8
        assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
        assert type(info["continue_prob"]) is float and 0 <= info["continue_prob"] <= 1
        assert info["latent"].shape == (64,) and info["latent"].dtype == np.float32
        assert truncated == (t == 2)  # max_episode_steps


def test_terminated_follows_the_continue_head(tiny_world_model):
    env = ImaginationEnv(tiny_world_model)
    env.reset(seed=0)
    set_continue(tiny_world_model, -8.0)
    _, _, terminated, _, info = env.step(np.zeros(1, np.float32))
    assert terminated and info["continue_prob"] < 0.01
    set_continue(tiny_world_model, 8.0)
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(np.zeros(1, np.float32))
    assert not terminated and info["continue_prob"] > 0.99


@pytest.mark.parametrize("end", ["terminated", "truncated"])
def test_step_after_the_episode_ended_needs_a_reset_like_any_gymnasium_env(tiny_world_model, end):
    env = ImaginationEnv(tiny_world_model, max_episode_steps=2 if end == "truncated" else None)
    env.reset(seed=0)
    if end == "terminated":
        set_continue(tiny_world_model, -8.0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        done = terminated or truncated
    with pytest.raises(ResetNeeded, match="the episode has ended"):
        env.step(np.zeros(1, np.float32))
    env.reset(seed=1)
    env.step(np.zeros(1, np.float32))  # a reset starts the next episode


@pytest.mark.parametrize("obs_mode", ["pixels", "latent", "state"])
def test_same_seed_same_episode(tiny_world_model, obs_mode):
    env = ImaginationEnv(tiny_world_model, obs_mode=obs_mode)
    actions = [np.array([a], np.float32) for a in np.linspace(-1, 1, 6)]
    first, again, other = (rollout(env, seed, actions) for seed in (7, 7, 8))
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[-1][0], other[-1][0])


def test_reset_from_given_context_starts_at_its_last_frame(tiny_world_model):
    wm = tiny_world_model
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
    options = {"context_frames": frames, "context_actions": actions}
    obs, info = ImaginationEnv(wm).reset(seed=0, options=options)
    np.testing.assert_array_equal(obs, frames[-1])
    assert not np.shares_memory(obs, frames)
    latent_env = ImaginationEnv(wm, obs_mode="latent")
    obs, info = latent_env.reset(seed=0, options=options)
    np.testing.assert_allclose(obs, wm.encode(frames[-1]).flatten().numpy(), atol=1e-5)
    obs, _ = latent_env.reset(seed=0, options={"context_frames": frames[:1]})  # a single frame, no actions
    np.testing.assert_allclose(obs, wm.encode(frames[0]).flatten().numpy(), atol=1e-5)
    assert latent_env.step(np.zeros(1, np.float32))[0].shape == (64,)


def test_reset_samples_context_windows_from_a_dataset(tiny_world_model, tmp_path):
    meta = DatasetMeta(
        env_id="imaginegym/DMC-v0", task="cartpole-swingup", observation_space=tiny_world_model.observation_space,
        action_space=tiny_world_model.action_space, action_repeat=2, size=TINY_SIZE,
    )
    steps = 12
    frames = np.broadcast_to(np.arange(steps + 1, dtype=np.uint8)[:, None, None, None], (steps + 1, TINY_SIZE, TINY_SIZE, 3))
    episode = Episode(
        frames=np.ascontiguousarray(frames), actions=np.zeros((steps, 1), np.float32), rewards=np.zeros(steps, np.float32),
        terminated=np.zeros(steps, bool), truncated=np.zeros(steps, bool),
    )
    write_episode(tmp_path / "data", 0, episode, meta, seed=0, policy="random")
    env = ImaginationEnv(tiny_world_model, context_length=3)
    firsts = {int(env.reset(seed=seed, options={"dataset": tmp_path / "data"})[0][0, 0, 0]) for seed in range(30)}
    assert firsts <= set(range(2, steps + 1)) and len(firsts) > 3  # the last frame of a 3-frame window
    assert env.step(np.zeros(1, np.float32))[0].shape == (TINY_SIZE, TINY_SIZE, 3)


def test_out_of_bounds_actions_are_clipped(tiny_world_model):
    env = ImaginationEnv(tiny_world_model, obs_mode="latent")
    clipped = rollout(env, 0, [np.array([5.0], np.float32)])[-1]
    bound = rollout(env, 0, [np.array([1.0], np.float32)])[-1]
    np.testing.assert_array_equal(clipped[0], bound[0])
    assert clipped[1] == bound[1]


def test_observations_never_share_memory(tiny_world_model):
    for obs_mode in ("pixels", "latent"):
        env = ImaginationEnv(tiny_world_model, obs_mode=obs_mode)
        obs0, info0 = env.reset(seed=0)
        obs1, _, _, _, info1 = env.step(np.zeros(1, np.float32))
        frame0, frame1 = env.render(), env.render()
        arrays = [obs0, info0["latent"], obs1, info1["latent"], frame0, frame1]
        assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:])
    assert frame0.shape == (TINY_SIZE, TINY_SIZE, 3) and frame0.dtype == np.uint8


def test_render_is_the_decoded_frame(tiny_world_model):
    env = ImaginationEnv(tiny_world_model)
    env.reset(seed=0)
    obs, *_ = env.step(np.zeros(1, np.float32))
    np.testing.assert_array_equal(env.render(), obs)
    assert ImaginationEnv(tiny_world_model, render_mode=None).render() is None


def test_record_video_writes_an_mp4(tiny_world_model, tmp_path):
    pytest.importorskip("moviepy")
    env = gym.wrappers.RecordVideo(
        ImaginationEnv(tiny_world_model, max_episode_steps=5), str(tmp_path / "videos"), episode_trigger=lambda _: True,
        disable_logger=True,
    )
    env.reset(seed=0)
    truncated = False
    while not truncated:
        *_, truncated, _ = env.step(env.action_space.sample())
    env.close()
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0


def test_long_rollout_stays_bounded_with_a_capped_cache(tiny_world_model):
    env = ImaginationEnv(tiny_world_model, obs_mode="latent", num_denoise_steps=1, max_episode_steps=10_000)
    env.reset(seed=0)
    cache = env.kv_cache
    shapes = (cache.k.shape, cache.v.shape)
    c = tiny_world_model.dynamics_config
    s = tiny_world_model.dynamics.tokens_per_frame
    assert cache.k.shape[:3] == (c.depth, 1, c.heads) and cache.k.shape[3] <= c.context_length * s  # one window
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (10_000, 1)).astype(np.float32)
    low, high, rewards = np.inf, -np.inf, []
    for t, action in enumerate(actions):
        obs, reward, _, truncated, info = env.step(action)
        low, high = min(low, obs.min()), max(high, obs.max())
        rewards.append(reward)
        assert truncated == (t == 9_999)
    assert -1 <= low and high <= 1 and np.isfinite(rewards).all() and np.abs(rewards).max() < 100
    assert (cache.k.shape, cache.v.shape) == shapes and int(cache.time[0]) == 10_000 + c.context_length - 1


def test_latent_observation_gives_a_real_env_the_same_space(tiny_world_model):
    frame = np.random.default_rng(0).integers(0, 256, (TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)

    class Frames(gym.Env):
        observation_space = tiny_world_model.observation_space
        action_space = tiny_world_model.action_space

        def reset(self, *, seed=None, options=None):
            return frame.copy(), {}

        def step(self, action):
            return frame.copy(), 0.0, False, False, {}

    real = LatentObservation(Frames(), tiny_world_model)
    assert real.observation_space == ImaginationEnv(tiny_world_model, obs_mode="latent").observation_space
    obs, _ = real.reset(seed=0)
    assert real.observation_space.contains(obs)
    np.testing.assert_array_equal(obs, tiny_world_model.encode(frame).flatten().numpy())
    assert imaginegym.LatentObservation is LatentObservation
    other = Frames()
    other.observation_space = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"trained on Box\(0, 255, \(16, 16, 3\)"):
        LatentObservation(other, tiny_world_model)


def test_errors_name_the_value_and_the_fix(tiny_world_model):
    wm = tiny_world_model
    with pytest.raises(ValueError, match="obs_mode='rgb'.*'pixels'.*'latent'"):
        ImaginationEnv(wm, obs_mode="rgb")
    for steps in (3, 16, 0):
        with pytest.raises(ValueError, match=f"num_denoise_steps={steps} must be a power of two"):
            ImaginationEnv(wm, num_denoise_steps=steps)
    with pytest.raises(ValueError, match="context_length=6.*use 1 to 5"):
        ImaginationEnv(wm, context_length=6)
    env = ImaginationEnv(wm)
    with pytest.raises(ResetNeeded, match="reset"):
        env.step(np.zeros(1, np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\), the world model expects \(1,\)"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan], np.float32))
    frames = np.zeros((3, TINY_SIZE, TINY_SIZE, 3), np.uint8)
    actions = np.zeros((2, 1), np.float32)
    with pytest.raises(ValueError, match=r"context_frames have shape \(3, 8, 8, 3\).*expects"):
        env.reset(options={"context_frames": np.zeros((3, 8, 8, 3), np.uint8), "context_actions": actions})
    with pytest.raises(ValueError, match="context_frames have dtype torch.float32.*uint8"):
        env.reset(options={"context_frames": frames.astype(np.float32), "context_actions": actions})
    with pytest.raises(ValueError, match=r"context_frames have shape \(16, 16, 3\): give \(C, 16, 16, 3\)"):
        env.reset(options={"context_frames": frames[0]})
    with pytest.raises(ValueError, match="1 context_actions for 3 context_frames: give C-1 = 2"):
        env.reset(options={"context_frames": frames, "context_actions": actions[:1]})
    with pytest.raises(ValueError, match="3 context_frames need the 2 context_actions"):
        env.reset(options={"context_frames": frames})
    with pytest.raises(ValueError, match="reset options"):
        env.reset(options={"frames": frames})
    wm.start_frames = torch.zeros(0, dtype=torch.uint8)
    with pytest.raises(ValueError, match="bundles 0 start contexts.*options=\\{'dataset': path\\}"):
        env.reset(seed=0)


def test_actions_that_are_not_numbers_and_fractional_env_counts_are_refused(tiny_world_model):
    env = ImaginationEnv(tiny_world_model)
    env.reset(seed=0)
    for action in ("left", None, ["a"]):
        with pytest.raises(ValueError, match=r"are not numbers: the world model expects floats of shape \(1,\)"):
            env.step(action)
    for num_envs in (2.5, 0, -1, True, "2"):
        with pytest.raises(ValueError, match=f"num_envs={num_envs!r} must be an integer >= 1"):
            imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=num_envs, world_model=tiny_world_model)
    assert imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=np.int64(2), world_model=tiny_world_model).num_envs == 2


def test_a_batch_larger_than_memory_is_refused_before_allocating(tiny_world_model, monkeypatch):
    from imaginegym import imagination, resources

    per_env = imagination.memory_per_env(tiny_world_model, "pixels")
    assert per_env > imagination.memory_per_env(tiny_world_model, "latent") > 0
    monkeypatch.setattr(resources, "available_memory", lambda device: 2**30)
    with pytest.raises(ValueError, match=r"num_envs=100000 needs about .* GiB on cpu .* MiB per env.* use at most [\d,]+ envs, or obs_mode='latent'"):
        imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=100_000, world_model=tiny_world_model)
    vec = imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=4, world_model=tiny_world_model)  # small batches still fit
    assert vec.reset(seed=0)[0].shape == (4, TINY_SIZE, TINY_SIZE, 3)


def test_batches_beyond_one_tokenizer_chunk_equal_single_envs(tiny_world_model, monkeypatch):
    from imaginegym import imagination

    monkeypatch.setattr(imagination, "CHUNK", 7)  # 1 env per reset chunk (context 5), 7 frames per decode chunk
    vec = imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=9, world_model=tiny_world_model)
    obs, _ = vec.reset(seed=3)
    stepped = vec.step(np.zeros((9, 1), np.float32))[0]
    for i in (0, 8):
        single = ImaginationEnv(tiny_world_model)
        assert_close_obs(obs[i], single.reset(seed=3 + i)[0], "pixels")
        assert_close_obs(stepped[i], single.step(np.zeros(1, np.float32))[0], "pixels")


def test_latent_observation_refuses_an_env_of_another_task_or_action_repeat(tiny_world_model):
    class Frames(gym.Env):
        observation_space = tiny_world_model.observation_space
        action_space = tiny_world_model.action_space

        def __init__(self, task="cartpole-swingup", action_repeat=2, size=TINY_SIZE):
            self.task, self.action_repeat, self.size = task, action_repeat, size

    LatentObservation(Frames(), tiny_world_model)  # the model's own settings
    with pytest.raises(ValueError, match="task: 'reacher-easy' vs 'cartpole-swingup'.*env_kwargs"):
        LatentObservation(Frames(task="reacher-easy"), tiny_world_model)
    with pytest.raises(ValueError, match="action_repeat: 4 vs 2"):
        LatentObservation(Frames(action_repeat=4), tiny_world_model)
    other_actions = Frames()
    other_actions.action_space = spaces.Box(-1, 1, (2,), np.float32)
    with pytest.raises(ValueError, match="acts in Box.*trained on Box"):
        LatentObservation(other_actions, tiny_world_model)


def test_frame_stacks_are_filled_from_the_context_and_match_the_real_twins_space(tiny_world_model, tiny_dataset):
    from imaginegym.imagination import real_twin

    env = ImaginationEnv(tiny_world_model, obs_mode="latent", frame_stack=3)
    check_env(env, skip_render_check=True)
    frames = np.random.default_rng(0).integers(0, 256, (4, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    obs, info = env.reset(seed=0, options={"context_frames": frames, "context_actions": np.zeros((3, 1), np.float32)})
    np.testing.assert_allclose(obs, tiny_world_model.encode(frames[1:]).flatten(1).numpy(), atol=1e-6)  # the last 3 context latents
    np.testing.assert_array_equal(obs[-1], info["latent"])
    obs, _ = env.reset(seed=0, options={"context_frames": frames[:1]})  # one frame: repeated, as FrameStackObservation pads
    assert (obs == obs[:1]).all()
    after, *_ , info = env.step(np.zeros(1, np.float32))
    np.testing.assert_array_equal(after[:2], obs[1:])
    np.testing.assert_array_equal(after[2], info["latent"])
    vec = imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=2, world_model=tiny_world_model, frame_stack=2, start_dataset=tiny_dataset)
    assert vec.reset(seed=0)[0].shape == (2, 2, TINY_SIZE, TINY_SIZE, 3) and vec.start_dataset == tiny_dataset
    pixels = ImaginationEnv(tiny_world_model, frame_stack=2, start_dataset=tiny_dataset)
    stacked, _ = pixels.reset(seed=1)
    assert stacked.shape == (2, TINY_SIZE, TINY_SIZE, 3)
    assert any((stacked[-1] == episode.frames).all(axis=(1, 2, 3)).any() for episode in EpisodeDataset(tiny_dataset))  # a real frame
    real = real_twin(tiny_world_model, "latent", frame_stack=3)
    assert real.observation_space == env.observation_space and real.action_space == env.action_space
    with pytest.raises(ValueError, match="frame_stack=0 must be an integer >= 1"):
        ImaginationEnv(tiny_world_model, frame_stack=0)
    with pytest.raises(DatasetError, match="no dataset at"):
        ImaginationEnv(tiny_world_model, start_dataset="no/such/data")


def test_episode_start_fraction_starts_imagined_episodes_where_real_ones_start(tiny_world_model, tiny_dataset):
    episodes = list(EpisodeDataset(tiny_dataset))
    env = ImaginationEnv(tiny_world_model, start_dataset=tiny_dataset, context_length=2, episode_start_fraction=1.0)
    for seed in range(6):
        obs, _ = env.reset(seed=seed)  # the last context frame: frame 1 of some episode
        assert any((obs == episode.frames[1]).all() for episode in episodes)
    anywhere = ImaginationEnv(tiny_world_model, start_dataset=tiny_dataset, context_length=2)
    later = [anywhere.reset(seed=seed)[0] for seed in range(12)]
    assert not all(any((obs == episode.frames[1]).all() for episode in episodes) for obs in later)  # windows anywhere
    with pytest.raises(ValueError, match="episode_start_fraction=1.5"):
        ImaginationEnv(tiny_world_model, start_dataset=tiny_dataset, episode_start_fraction=1.5)


def test_state_observations_are_the_latents_then_the_models_state_of_the_frame(tiny_world_model):
    wm = tiny_world_model
    k, d, w = wm.dynamics_config.latent_tokens, wm.dynamics_config.latent_dim, wm.dynamics_config.width
    env = ImaginationEnv(wm, obs_mode="state")
    space = env.observation_space
    assert space.shape == (k * d + w,) and space.dtype == np.float32 and np.isfinite(space.high).all()
    np.testing.assert_array_equal(space.high[: k * d], 1)  # the latents' tanh range, then the normalised state's reach
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs[: k * d], info["latent"])
    first = obs[k * d:].copy()
    assert np.isfinite(first).all() and np.abs(first).max() > 0  # the state of the last context frame, not a placeholder
    obs, _, _, _, info = env.step(np.array([0.5], np.float32))
    np.testing.assert_array_equal(obs[: k * d], info["latent"])
    np.testing.assert_allclose(obs[k * d:], env.kv_cache.state[0].numpy())
    assert not np.allclose(obs[k * d:], first)


def test_model_state_observation_follows_a_real_episode_as_the_model_reads_it_in_training(tiny_world_model):
    """The real twin's states are the hidden states that `Dynamics.forward` computes for the same frames,
    actions and context noise, with the frames after the first flagged as the model's own (as in imagination)."""
    from imaginegym.imagination import ModelStateObservation, real_twin

    wm = tiny_world_model
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (12, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)  # more steps than the 6-frame window

    class Frames(gym.Env):
        observation_space, action_space = wm.observation_space, wm.action_space

        def reset(self, *, seed=None, options=None):
            self.t = 0
            return frames[0].copy(), {}

        def step(self, action):
            self.t += 1
            return frames[self.t].copy(), 0.0, False, False, {}

    real = ModelStateObservation(Frames(), wm)
    assert real.observation_space == ImaginationEnv(wm, obs_mode="state").observation_space
    assert real_twin(wm, "state").observation_space == real.observation_space
    actions = rng.uniform(-1, 1, (11, 1)).astype(np.float32)
    observations = [real.reset(seed=5)[0]] + [real.step(a)[0] for a in actions]
    dyn, c = wm.dynamics, wm.dynamics_config
    k, d = c.latent_tokens, c.latent_dim
    noise_rng = np.random.default_rng(5)  # the tracker's: (1, 1, K, D) at the start, then (1, K, D) per step
    eps = np.concatenate([noise_rng.standard_normal((1, 1, k, d), dtype=np.float32)[0]]
                         + [noise_rng.standard_normal((1, k, d), dtype=np.float32) for _ in actions])
    z = wm.encode(frames)  # (12, K, D)
    tau = torch.full((1, 12), c.context_noise)
    z_tau = noise.add_noise(dyn.normalize(z)[None], tau, torch.from_numpy(eps)[None])
    per_frame = torch.cat([torch.zeros(1, 1, 1), torch.from_numpy(actions)[None]], dim=1)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[:, 0] = False
    captured = {}
    hook = dyn.norm.register_forward_hook(lambda module, inputs, output: captured.setdefault("h", output))
    with torch.no_grad():
        dyn(z_tau, tau, torch.zeros(1, 12, dtype=torch.long), per_frame, mask, imagined=mask)
    hook.remove()
    expected = captured["h"][0].mean(dim=1).numpy()  # (12, W)
    got = np.stack(observations)
    np.testing.assert_allclose(got[:, : k * d], z.reshape(12, -1).numpy(), atol=1e-6)
    np.testing.assert_allclose(got[:, k * d:], expected, atol=1e-4)


def test_state_observations_of_a_real_env_refuse_a_task_conditioned_model(tiny_world_model):
    from dataclasses import replace

    from imaginegym.imagination import ModelStateTracker

    tiny_world_model.dynamics_config = replace(tiny_world_model.dynamics_config, task_dim=2)
    with pytest.raises(ValueError, match="conditioned on the task .2 numbers.*obs_mode='latent'"):
        ModelStateTracker(tiny_world_model)
