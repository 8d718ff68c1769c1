"""Shared fixtures: a tiny world model (random weights) that any test can build in milliseconds."""

from __future__ import annotations

import shutil
import signal
import subprocess

from imaginegym.envs.headless import use_egl_if_headless

use_egl_if_headless()  # before any test module imports mujoco, so plain `pytest` renders headless too

import numpy as np  # noqa: E402
import pytest
import torch
from gymnasium import spaces

from imaginegym.data.spaces import space_to_json
from imaginegym.models.dynamics import DynamicsConfig
from imaginegym.models.tokenizer import TokenizerConfig
from imaginegym.world_model import EnvSpec, WorldModel

TINY_SIZE = 16


def make_tiny_world_model(context_length: int = 6, starts: int = 3, seed: int = 0, background: str = "learned") -> WorldModel:
    """A 16x16-pixel, 1-D-action world model with random weights and a few start contexts."""
    torch.manual_seed(seed)
    tokenizer = TokenizerConfig(kind="cnn", image_size=TINY_SIZE, channels=(8, 8), latent_channels=4, token_patch=2, background=background)
    dynamics = DynamicsConfig(
        latent_tokens=tokenizer.latent_tokens, latent_dim=tokenizer.token_dim, action_kind="box", action_dim=1,
        width=32, depth=2, heads=2, context_length=context_length, k_max=8,
        prior_input=True, condition_tokens=False, context_noise=0.0625,  # the bundled models' layout
    )
    env = EnvSpec(
        env_id="imaginegym/DMC-v0", task="cartpole-swingup",
        observation_space=space_to_json(spaces.Box(0, 255, (TINY_SIZE, TINY_SIZE, 3), np.uint8)),
        action_space=space_to_json(spaces.Box(-1, 1, (1,), np.float32)),
        env_kwargs={"task": "cartpole-swingup", "size": TINY_SIZE, "action_repeat": 2}, max_episode_steps=50,
    )
    model = WorldModel(tokenizer, dynamics, env)
    with torch.no_grad():  # like cartpole, episodes go on (tests that need a termination set this bias themselves)
        model.dynamics.continue_head[-1].bias.fill_(4.0)
    rng = np.random.default_rng(seed)
    model.start_frames = torch.from_numpy(rng.integers(0, 256, (starts, context_length - 1, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8))
    model.start_actions = torch.from_numpy(rng.uniform(-1, 1, (starts, context_length - 2, 1)).astype(np.float32))
    return model.eval()


@pytest.fixture
def tiny_world_model() -> WorldModel:
    return make_tiny_world_model()


@pytest.fixture
def tiny_world_model_path(tmp_path) -> str:
    """A tiny world model saved as a .safetensors file."""
    return str(make_tiny_world_model().save(tmp_path / "tiny.safetensors"))


def write_tiny_dataset(root, episodes: int = 3, steps: int = 30, seed: int = 0) -> str:
    """A dataset of 16x16 frames: a bright square that an action moves left or right."""
    from imaginegym.data import DatasetMeta, Episode, write_episode

    rng = np.random.default_rng(seed)
    meta = DatasetMeta(
        env_id="imaginegym/DMC-v0", task="cartpole-swingup",
        observation_space=spaces.Box(0, 255, (TINY_SIZE, TINY_SIZE, 3), np.uint8),
        action_space=spaces.Box(-1, 1, (1,), np.float32), action_repeat=2, size=TINY_SIZE,
    )
    for i in range(episodes):
        actions = rng.uniform(-1, 1, (steps, 1)).astype(np.float32)
        x = np.clip(8 + np.concatenate([[0], np.cumsum(np.round(actions[:, 0]))]), 0, TINY_SIZE - 4).astype(int)
        frames = np.zeros((steps + 1, TINY_SIZE, TINY_SIZE, 3), np.uint8)
        for t, xt in enumerate(x):
            frames[t, 6:10, xt : xt + 4] = 255
        rewards = (x[1:] / TINY_SIZE).astype(np.float32)
        episode = Episode(frames, actions, rewards, np.zeros(steps, bool), np.eye(1, steps, steps - 1, dtype=bool)[0])
        write_episode(root, i, episode, meta, seed=seed + i, policy="random")
    return str(root)


@pytest.fixture
def tiny_dataset(tmp_path) -> str:
    return write_tiny_dataset(tmp_path / "tiny-data")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models step fastest on one thread (and do not fight other jobs for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_close_obs(a: np.ndarray, b: np.ndarray, obs_mode: str) -> None:
    """Batched and single matmuls differ in the last bits: pixels by a level or two."""
    if obs_mode == "pixels":
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    else:
        np.testing.assert_allclose(a, b, atol=1e-4)


FILE_SIZE_LIMIT = 48 << 10  # bytes; episodes 0-2 of test_data_faults' NoisePixel fit, episode 3 does not


def limit_file_size() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so write() fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


@pytest.fixture
def small_disk(tmp_path):
    """(directory, preexec_fn): a process started with preexec_fn runs out of room there.

    A 256 KiB tmpfs (needs root), else a file size limit (RLIMIT_FSIZE): the disk is then
    not full, but writes fail alike, with EFBIG instead of ENOSPC.
    """
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]
    if shutil.which("mount") and subprocess.run(mount, capture_output=True, timeout=30).returncode == 0:
        try:
            yield disk, None
        finally:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)
        return
    pytest.importorskip("resource", reason="neither a tmpfs mount nor RLIMIT_FSIZE available")
    yield disk, limit_file_size
