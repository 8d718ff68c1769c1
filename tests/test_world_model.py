"""WorldModel: one safetensors file, load by path, errors that name the fix, seeded imagination."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import imaginegym
from conftest import make_tiny_world_model
from imaginegym.world_model import WorldModel


def test_save_load_round_trip(tiny_world_model, tmp_path):
    path = tiny_world_model.save(tmp_path / "wm.safetensors")
    loaded = WorldModel.load(path)
    assert loaded.env_spec == tiny_world_model.env_spec
    assert loaded.observation_space == tiny_world_model.observation_space
    assert torch.equal(loaded.start_frames, tiny_world_model.start_frames)
    frames = tiny_world_model.start_frames[:1]
    assert torch.equal(loaded.encode(frames), tiny_world_model.encode(frames))
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left behind


def test_imagination_is_seeded_and_shaped(tiny_world_model):
    wm = tiny_world_model
    ctx, ctx_actions = wm.start_frames[:2], wm.start_actions[:2]
    actions = torch.zeros(2, 5, 1)
    a = wm.imagine(ctx, ctx_actions, actions, 4, torch.Generator().manual_seed(3))
    b = wm.imagine(ctx, ctx_actions, actions, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a["frames"], b["frames"]) and a["frames"].shape == (2, 5, 16, 16, 3)
    assert a["rewards"].shape == (2, 5) and ((a["continues"] >= 0) & (a["continues"] <= 1)).all()


def test_context_noise_can_be_set_for_imagination(tiny_world_model):
    wm = tiny_world_model
    ctx, ctx_actions, actions = wm.start_frames[:2], wm.start_actions[:2], torch.zeros(2, 3, 1)
    trained = wm.imagine(ctx, ctx_actions, actions, 4, torch.Generator().manual_seed(3))
    wm.set_context_noise(0.5)
    assert wm.dynamics_config.context_noise == wm.dynamics.config.context_noise == 0.5
    noisier = wm.imagine(ctx, ctx_actions, actions, 4, torch.Generator().manual_seed(3))
    assert not torch.allclose(trained["rewards"], noisier["rewards"])
    with pytest.raises(ValueError, match="context_noise=1.5"):
        wm.set_context_noise(1.5)


def test_opacity_floor_can_be_set_and_is_saved(tmp_path):
    wm = make_tiny_world_model(background="median")
    with torch.no_grad():
        wm.tokenizer.background.copy_(torch.rand_like(wm.tokenizer.background))
    latents = wm.encode(wm.start_frames[:2])
    plain = wm.decode(latents)
    wm.set_opacity_floor(0.99)  # a random decoder paints with opacities around 0.5: all gone
    assert wm.tokenizer_config.opacity_floor == wm.tokenizer.config.opacity_floor == 0.99
    floored = wm.decode(latents)
    background = wm.tokenizer.to_observation(wm.tokenizer.background)
    assert torch.equal(floored, background.expand_as(floored)) and not torch.equal(plain, floored)
    assert WorldModel.load(wm.save(tmp_path / "wm.safetensors")).tokenizer_config.opacity_floor == 0.99
    with pytest.raises(ValueError, match="opacity_floor=1.5"):
        wm.set_opacity_floor(1.5)
    with pytest.raises(ValueError, match="opacity_floor=0.2 needs kind='cnn' with background='median'"):
        make_tiny_world_model().set_opacity_floor(0.2)


def test_missing_model_names_the_choices(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundled name"):
        WorldModel.load(tmp_path / "nope.safetensors")


def test_foreign_and_old_files_are_refused(tiny_world_model, tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(ValueError, match="no imaginegym configuration"):
        WorldModel.load(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a safetensors world model"):
        WorldModel.load(junk)
    path = tiny_world_model.save(tmp_path / "wm.safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    config = json.loads(meta["imaginegym"])
    config["format_version"] = 0
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={"imaginegym": json.dumps(config)})
    with pytest.raises(ValueError, match="format 0"):
        WorldModel.load(old)


def test_bad_frames_and_actions_get_clear_errors(tiny_world_model):
    wm = tiny_world_model
    with pytest.raises(ValueError, match=r"shape \(2, 32, 32, 3\).*\(\.\.\., 16, 16, 3\)"):
        wm.encode(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="dtype torch.float32.*uint8"):
        wm.encode(np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match=r"expects \(2, 1\)"):
        wm.check_actions(np.zeros((2, 3), np.float32), (2,))
    with pytest.raises(ValueError, match="NaN"):
        wm.check_actions(np.array([[np.nan], [0.0]], np.float32), (2,))
    clipped = wm.check_actions(np.array([[5.0], [-5.0]], np.float32), (2,))
    assert clipped.flatten().tolist() == [1.0, -1.0]


def test_a_local_directory_without_a_model_does_not_stand_in_for_a_bundled_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cartpole-swingup").mkdir()  # e.g. an unfinished run named like the bundled model
    with pytest.raises(FileNotFoundError, match=r"'cartpole-swingup' is a directory without world_model.safetensors.*the bundled model 'cartpole-swingup' is at .*pretrained"):
        WorldModel.load("cartpole-swingup")
    (tmp_path / "cartpole-swingup").rmdir()
    assert WorldModel.load("cartpole-swingup").env_spec.task == "cartpole-swingup"  # no directory: the bundled model


@pytest.mark.parametrize("device, message", [
    ("cuda", "sees no CUDA device.*use device='cpu'"), ("cuda:7", "sees no CUDA device|has 1 CUDA device"),
    ("gpu", "device='gpu' is not a device: use 'auto', 'cpu', 'cuda'"), ("meta", "runs on 'cpu', 'cuda' or 'mps'"),
])
def test_devices_this_machine_lacks_get_a_clear_error(tiny_world_model_path, device, message):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=message):
        WorldModel.load(tiny_world_model_path, device=device)
    with pytest.raises(ValueError, match=message):
        imaginegym.make_vec("imaginegym/Imagined-v0", num_envs=2, world_model=tiny_world_model_path, device=device)
