"""SB3 agents: train in imagined or real envs with the same observations, resume, save without pickles, evaluate both worlds."""

import json

import numpy as np
import pytest
import torch

from imaginegym.agents.sb3 import AgentConfig, AgentPolicy, PolicyFile, evaluate_policy, train_agent
from imaginegym.agents.sb3.train import CHECKPOINT_FILE
from imaginegym.cli import main
from imaginegym.data import CollectConfig, collect

TINY = {"num_envs": 4, "horizon": 8, "ppo_rollout_steps": 8, "ppo_batch_size": 16, "ppo_epochs": 1, "net_arch": (16,),
        "device": "cpu", "checkpoint_every": 32}


def test_ppo_trains_in_imagination_resumes_and_saves_a_policy_that_loads_without_pickles(tiny_world_model_path, tmp_path):
    config = AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=64, **TINY)
    policy = train_agent(config, tmp_path / "run", progress=False)
    assert policy.observation_space.shape == (4, 64)  # 4 stacked latents of K*D = 64
    state = torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=True)
    assert state["num_timesteps"] == 64
    saved = json.loads((tmp_path / "run" / "policy" / "policy.json").read_text())
    assert saved["algo"] == "ppo" and saved["world_model"] == tiny_world_model_path and saved["frame_stack"] == 4
    again = AgentPolicy.load(tmp_path / "run" / "policy")
    obs = np.random.default_rng(0).uniform(-1, 1, (3, 4, 64)).astype(np.float32)
    np.testing.assert_array_equal(policy.act(obs), again.act(obs))
    longer = train_agent(AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=128, **TINY), tmp_path / "run", progress=False)
    assert torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=True)["num_timesteps"] == 128  # resumed, not restarted
    assert longer.config.training["trained_steps"] == 128
    with pytest.raises(ValueError, match="holds an agent run with other settings.*frame_stack: 4 .run. vs 2"):
        train_agent(AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=128, **{**TINY, "frame_stack": 2}), tmp_path / "run")


def test_reward_normalization_scales_training_rewards_and_resumes_its_statistics(tiny_world_model_path, tmp_path):
    from imaginegym.agents.sb3.train import load_training_state, make_algorithm, make_env

    config = AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=64, normalize_reward=True, **TINY)
    train_agent(config, tmp_path / "run", progress=False)
    mean, var, count = torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=True)["return_statistics"].tolist()
    assert count > 64 / 4 and var > 0  # one update per vector step, from the tiny model's nonzero rewards
    env = make_env(config)
    model = make_algorithm(config, env, tmp_path / "run")
    load_training_state(model, tmp_path / "run")
    stats = model.get_vec_normalize_env().ret_rms
    assert (float(stats.mean), float(stats.var), stats.count) == pytest.approx((mean, var, count))
    env.close()
    train_agent(AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=128, normalize_reward=True, **TINY), tmp_path / "run", progress=False)
    assert torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=True)["return_statistics"][2] > count  # continued, not restarted


def test_a_linear_learning_rate_decays_to_zero_at_the_last_step_across_a_resume(tiny_world_model_path, tmp_path):
    from imaginegym.agents.sb3.train import make_algorithm, make_env

    with pytest.raises(ValueError, match="lr_schedule='cosine': use one of constant, linear"):
        AgentConfig(lr_schedule="cosine")
    config = AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=64, lr=1e-3, lr_schedule="linear", **TINY)
    train_agent(config, tmp_path / "run", progress=False)
    env = make_env(config)
    model = make_algorithm(config, env, tmp_path / "run")
    assert model.lr_schedule(1.0) == pytest.approx(1e-3) and model.lr_schedule(0.25) == pytest.approx(2.5e-4)
    env.close()
    longer = AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=128, lr=1e-3, lr_schedule="linear", **TINY)
    train_agent(longer, tmp_path / "run", progress=False)  # the schedule stretches to the new end
    state = torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=True)
    assert state["num_timesteps"] == 128 and state["parameters"]["policy.optimizer"]["param_groups"][0]["lr"] == 0.0


def test_episode_start_fraction_reaches_the_imagined_envs_and_needs_start_data(tiny_world_model_path, tiny_dataset):
    from imaginegym.agents.sb3.train import make_env

    with pytest.raises(ValueError, match="episode_start_fraction=0.5 chooses where imagined episodes start in start_data"):
        AgentConfig(env=f"imagined:{tiny_world_model_path}", episode_start_fraction=0.5)
    with pytest.raises(ValueError, match="episode_start_fraction=-0.1 must lie in"):
        AgentConfig(env=f"imagined:{tiny_world_model_path}", start_data=tiny_dataset, episode_start_fraction=-0.1)
    config = AgentConfig(env=f"imagined:{tiny_world_model_path}", start_data=tiny_dataset, episode_start_fraction=0.5, **TINY)
    env = make_env(config)
    assert env.get_attr("episode_start_fraction") == [0.5] * TINY["num_envs"]
    env.close()


def test_sac_trains_in_the_real_env_with_the_imagined_envs_observations(tiny_world_model_path, tmp_path):
    config = AgentConfig(algo="sac", env=f"real:{tiny_world_model_path}", steps=40, num_envs=1, sac_learning_starts=20,
                         sac_buffer_size=100, net_arch=(16,), device="cpu", checkpoint_every=20)
    policy = train_agent(config, tmp_path / "sac", progress=False)
    assert (tmp_path / "sac" / "replay_buffer.npz").is_file()
    imagined, real = policy.imagined_env(), policy.real_env()
    assert imagined.observation_space == real.observation_space == policy.observation_space
    obs, _ = real.reset(seed=0)
    assert policy.action_space.contains(policy.act(obs))


def test_evaluation_reports_both_worlds_and_their_gap_and_writes_a_gif(tiny_world_model_path, tmp_path, monkeypatch):
    from imaginegym.envs import dmc

    policy = train_agent(AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=32, **TINY), tmp_path / "run", progress=False)
    monkeypatch.setattr(dmc.DMCEnv, "__init__", _short_episodes(dmc.DMCEnv.__init__))
    result = evaluate_policy(policy, episodes=2, seed=3, gif=tmp_path / "eval.gif", progress=False, device="cpu")
    summary = result.summary()
    assert summary["episodes"] == 2 and result.episode_steps == [10, 10]
    assert len(result.imagined_returns) == 2 and summary["gap"] == pytest.approx(summary["imagined_mean"] - summary["real_mean"])
    assert (tmp_path / "eval.gif").stat().st_size > 0
    with pytest.raises(ValueError, match="episodes=0"):
        evaluate_policy(policy, episodes=0)


def _short_episodes(init):
    def short(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "time_limit": 0.2})  # 10 steps of cartpole at action repeat 2
    return short


def test_a_policy_on_the_models_state_acts_on_raw_frames_as_in_its_real_twin(tiny_world_model_path, tmp_path):
    import gymnasium as gym

    config = AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=32, obs="state", **{**TINY, "frame_stack": 1})
    policy = train_agent(config, tmp_path / "run", progress=False)
    twin = policy.real_env()
    assert twin.observation_space == policy.imagined_env().observation_space == policy.observation_space
    wm = twin.get_wrapper_attr("world_model")
    raw = gym.make(wm.env_spec.env_id, **wm.env_spec.env_kwargs, max_episode_steps=8)
    episode = PolicyFile(str(tmp_path / "run" / "policy"), deterministic=True).make(wm.action_space, seed=3)
    obs, _ = twin.reset(seed=3)
    frame, _ = raw.reset(seed=3)
    for _ in range(8):  # past the tiny model's 6-frame window: the cache's ring buffer turns
        action = episode(frame)
        np.testing.assert_allclose(action, policy.act(obs), atol=1e-6)
        obs, *_ = twin.step(action)
        frame, *_ = raw.step(action)
    from imaginegym.agents.sb3.evaluate import same_observations
    from imaginegym.world_model import WorldModel

    other = WorldModel.load(tiny_world_model_path)  # the same tokenizer, other dynamics: its states mean something else
    with torch.no_grad():
        other.dynamics.norm.weight.mul_(2.0)
    with pytest.raises(ValueError, match="other dynamics weights.*evaluate it in imagination with its own world model"):
        same_observations(policy, str(other.save(tmp_path / "other.safetensors")), "cpu")


def test_collection_takes_a_trained_policy_and_records_its_name(tiny_world_model_path, tmp_path):
    policy = train_agent(AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=32, **TINY), tmp_path / "run", progress=False)
    source = policy.source(tmp_path / "saved")
    assert isinstance(source, PolicyFile) and source.name == f"agent:{tmp_path / 'saved'}"
    config = CollectConfig(task="cartpole-swingup", size=16, max_episode_steps=6, policy=source)
    first = collect(tmp_path / "data", config, episodes=2, progress=False)
    assert [shard.policy for shard in first.shards] == [source.name] * 2
    again = collect(tmp_path / "again", config, episodes=2, progress=False)
    np.testing.assert_array_equal(first.read(1, "actions"), again.read(1, "actions"))  # seeded per episode
    grown = collect(tmp_path / "data", config, episodes=3, resume=True, progress=False)
    assert len(grown) == 3
    with pytest.raises(ValueError, match="--policy"):
        collect(tmp_path / "data", CollectConfig(task="cartpole-swingup", size=16, max_episode_steps=6), episodes=4, resume=True)


def test_an_exported_policy_carries_or_names_its_world_model_and_acts_the_same(tiny_world_model_path, tmp_path, monkeypatch, capsys):
    from conftest import make_tiny_world_model

    from imaginegym.agents.sb3 import export_policy
    from imaginegym.agents.sb3 import policy as policy_module

    trained = train_agent(AgentConfig(env=f"imagined:{tiny_world_model_path}", steps=32, **TINY), tmp_path / "run", progress=False)
    same = make_tiny_world_model(seed=0)  # the policy's tokenizer weights, other dynamics
    with torch.no_grad():
        for p in same.dynamics.parameters():
            p.mul_(0.5)
    retrained = str(same.save(tmp_path / "retrained.safetensors"))
    shipped = export_policy(tmp_path / "run" / "policy", retrained, tmp_path / "shipped")
    assert sorted(p.name for p in shipped.iterdir()) == ["policy.json", "policy.safetensors", "world_model.safetensors"]
    (tmp_path / "retrained.safetensors").unlink()  # the copy beside the policy is what it loads
    loaded = AgentPolicy.load(shipped)
    assert loaded.config.world_model == str(shipped / "world_model.safetensors")
    assert loaded.config.training["exported_from"] == str(tmp_path / "run" / "policy")
    obs = np.random.default_rng(0).uniform(-1, 1, (3, 4, 64)).astype(np.float32)
    np.testing.assert_array_equal(loaded.act(obs), trained.act(obs))
    assert loaded.imagined_env(device="cpu").world_model.dynamics.state_dict().keys()  # imagines through the copy
    bundled = tmp_path / "pretrained"
    same.save(bundled / "tiny-bundled" / "world_model.safetensors")
    monkeypatch.setattr(policy_module, "PRETRAINED_DIR", bundled)
    monkeypatch.setattr("imaginegym.world_model.PRETRAINED_DIR", bundled)
    assert main(["agent", "export", "--policy", str(shipped), "--world-model", "tiny-bundled", "--out", str(bundled / "tiny-ppo")]) == 0
    assert "world model: tiny-bundled" in capsys.readouterr().out
    assert not (bundled / "tiny-ppo" / "world_model.safetensors").exists()  # a bundled model is named, not copied
    np.testing.assert_array_equal(AgentPolicy.load("tiny-ppo").act(obs), trained.act(obs))
    other_tokenizer = str(make_tiny_world_model(seed=1).save(tmp_path / "other-tokenizer.safetensors"))
    with pytest.raises(ValueError, match="other tokenizer weights than the policy's world model"):
        export_policy(shipped, other_tokenizer, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


def test_cli_trains_and_evaluates(tiny_world_model_path, tmp_path, capsys, monkeypatch):
    from imaginegym.envs import dmc

    run = tmp_path / "cli"
    flags = ["--num-envs", "4", "--horizon", "8", "--ppo-rollout-steps", "8", "--ppo-batch-size", "16", "--ppo-epochs", "1",
             "--net-arch", "16", "--device", "cpu"]
    assert main(["agent", "train", "--env", f"imagined:{tiny_world_model_path}", "--steps", "32", "--out", str(run), *flags]) == 0
    monkeypatch.setattr(dmc.DMCEnv, "__init__", _short_episodes(dmc.DMCEnv.__init__))
    assert main(["agent", "eval", "--policy", str(run / "policy"), "--episodes", "1", "--out", str(tmp_path / "r.json"), "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert {"real_mean", "real_std", "real_returns", "imagined_mean", "gap"} <= set(results)
    assert "real return" in capsys.readouterr().out and (tmp_path / "r.gif").is_file()
    with pytest.raises(SystemExit):
        main(["agent", "train", "--env", "dreamed:x", "--out", str(tmp_path / "bad")])
    assert "env='dreamed:x': use imagined:MODEL or real:MODEL" in capsys.readouterr().err


def test_the_bundled_policy_reproduces_its_recorded_real_return():
    from imaginegym.agents.sb3.evaluate import run_real
    from imaginegym.world_model import PRETRAINED_DIR

    policy = AgentPolicy.load("cartpole-swingup-ppo")
    recorded = json.loads((PRETRAINED_DIR / "cartpole-swingup-ppo" / "eval.json").read_text())
    assert policy.config.world_model == "cartpole-swingup-student" and recorded["seed"] == 0
    env = policy.real_env("cpu")
    assert env.observation_space == policy.observation_space and env.observation_space.shape == (4, 32)
    total, steps, _ = run_real(policy, env, seed=0)  # the first episode of `imaginegym agent eval --policy cartpole-swingup-ppo`
    env.close()
    assert steps == 500 and total == pytest.approx(recorded["real_returns"][0], rel=0.02)
