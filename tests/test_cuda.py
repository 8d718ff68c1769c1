"""The world model on a CUDA device gives what it gives on the CPU (skipped without one).

The noise is drawn on the CPU and moved, so a rollout on either device sees the same
numbers; only float rounding differs (TF32 is switched off for the comparison).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from imaginegym.imagination import ImaginationEnv, ImaginationVectorEnv
from conftest import assert_close_obs, make_tiny_world_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def full_float32():
    """cuDNN convolutions default to TF32 (about 1e-3 off); these tests compare full float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_imagine_on_cuda_matches_cpu():
    cpu = make_tiny_world_model()
    cuda = copy.deepcopy(cpu).to("cuda")
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (3, 5, 16, 16, 3), dtype=np.uint8))
    ctx_actions = torch.from_numpy(rng.uniform(-1, 1, (3, 4, 1)).astype(np.float32))
    actions = torch.from_numpy(rng.uniform(-1, 1, (3, 7, 1)).astype(np.float32))
    a = cpu.imagine(frames, ctx_actions, actions, 4, torch.Generator().manual_seed(1))
    b = cuda.imagine(frames.cuda(), ctx_actions.cuda(), actions.cuda(), 4, torch.Generator().manual_seed(1))
    assert b["latents"].device.type == "cuda"
    torch.testing.assert_close(b["latents"].cpu(), a["latents"], atol=1e-4, rtol=0)
    torch.testing.assert_close(b["rewards"].cpu(), a["rewards"], atol=1e-4, rtol=0)
    assert (b["frames"].cpu().int() - a["frames"].int()).abs().max() <= 2


@pytest.mark.parametrize("obs_mode", ["latent", "pixels"])
def test_vector_env_on_cuda_matches_cpu(obs_mode):
    envs = [ImaginationVectorEnv(4, make_tiny_world_model().to(device), obs_mode=obs_mode, device=device) for device in ("cpu", "cuda")]
    assert envs[1].world_model.device.type == "cuda"
    observations = [env.reset(seed=3)[0] for env in envs]
    assert_close_obs(observations[1], observations[0], obs_mode)
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 4, 1)).astype(np.float32)
    for action in actions:
        steps = [env.step(action) for env in envs]
        assert isinstance(steps[1][0], np.ndarray) and steps[1][0].dtype == steps[0][0].dtype
        assert_close_obs(steps[1][0], steps[0][0], obs_mode)
        np.testing.assert_allclose(steps[1][1], steps[0][1], atol=1e-4)
        np.testing.assert_array_equal(steps[1][3], steps[0][3])


def test_single_env_on_cuda_passes_the_checker():
    check_env(ImaginationEnv(make_tiny_world_model().to("cuda"), device="cuda"), skip_render_check=True)
