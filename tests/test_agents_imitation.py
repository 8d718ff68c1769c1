"""DAgger: a scripted expert that reads the simulator state, distilled into a policy on a world model's observations."""

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_world_model

from imaginegym.agents.imitation import LABELS_FILE, STATE_FILE, DistillConfig, distill_expert, expert_share
from imaginegym.agents.sb3 import AgentPolicy, evaluate_policy
from imaginegym.cli import main

TINY = {"episodes": 1, "epochs": 2, "net_arch": (16,), "batch_size": 64}


def test_dagger_labels_every_visited_state_saves_the_best_student_and_resumes(tiny_world_model_path, tmp_path):
    out = tmp_path / "distill"
    policy = distill_expert(DistillConfig(world_model=tiny_world_model_path, iterations=3, **TINY), out, progress=False)
    state = json.loads((out / STATE_FILE).read_text())
    assert [r["expert_share"] for r in state["iterations"]] == [expert_share(0), expert_share(1), expert_share(2)] == [1.0, 0.5, 0.0]
    assert [r["labels"] for r in state["iterations"]] == [500, 1000, 1500]  # every step of every episode, 500 steps each
    assert state["iterations"][0]["return_mean"] > 500  # iteration 0 is the expert itself (~800 noiseless, noise 0.3)
    with np.load(out / LABELS_FILE) as saved:
        assert saved["observations"].shape == (1500, 4, 64) and saved["labels"].shape == (1500, 1)
        assert np.abs(saved["labels"]).max() <= 1.0
    loaded = AgentPolicy.load(out / "policy")  # the best student-only iteration's policy, an SB3 PPO policy
    assert loaded.config.algo == "ppo" and loaded.config.training["distilled_from"] == "swingup-expert"
    obs = np.random.default_rng(0).uniform(-1, 1, (4, 64)).astype(np.float32)
    np.testing.assert_array_equal(policy.act(obs), loaded.act(obs))
    again = distill_expert(DistillConfig(world_model=tiny_world_model_path, iterations=4, **TINY), out, progress=False)
    state = json.loads((out / STATE_FILE).read_text())
    assert len(state["iterations"]) == 4 and state["iterations"][3]["labels"] == 2000  # resumed: iterations 0-2 not rerun
    assert again.action_space == policy.action_space
    with pytest.raises(ValueError, match="other settings .*expert_noise"):
        distill_expert(DistillConfig(world_model=tiny_world_model_path, iterations=4, expert_noise=0.1, **TINY), out)


def test_bad_settings_name_the_value_and_the_fix(tiny_world_model_path):
    with pytest.raises(ValueError, match="expert='ou': use a scripted policy that reads the simulator's state: swingup-expert"):
        DistillConfig(world_model=tiny_world_model_path, expert="ou")
    with pytest.raises(ValueError, match="iterations=2: DAgger needs at least 3"):
        DistillConfig(world_model=tiny_world_model_path, iterations=2)


def test_cli_distills_and_eval_imagines_with_another_model_of_the_same_tokenizer(tiny_world_model_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["agent", "distill", "--world-model", tiny_world_model_path, "--iterations", "3", "--episodes", "1", "--epochs", "1",
                 "--net-arch", "16", "--out", str(out)]) == 0
    assert "the best student" in capsys.readouterr().out
    policy = AgentPolicy.load(out / "policy")
    assert main(["collect", "--task", "cartpole-swingup", "--size", "16", "--episodes", "1", "--max-episode-steps", "10",
                 "--policy", str(out / "policy"), "--out", str(tmp_path / "data")]) == 0  # collection takes a saved policy
    from imaginegym.data import EpisodeDataset

    assert EpisodeDataset(tmp_path / "data").shards[0].policy == f"agent:{(out / 'policy').resolve()}"
    with pytest.raises(SystemExit):
        main(["collect", "--task", "cartpole-swingup", "--episodes", "1", "--policy", str(tmp_path), "--out", str(tmp_path / "d2")])
    assert "use one of ou, random, swingup-expert or a directory holding a trained agent's policy.json" in capsys.readouterr().err
    same = make_tiny_world_model(seed=0)  # same tokenizer weights, other dynamics
    with torch.no_grad():
        for p in same.dynamics.parameters():
            p.mul_(0.5)
    other_dynamics = str(same.save(tmp_path / "other-dynamics.safetensors"))
    result = evaluate_policy(policy, episodes=1, imagined_model=other_dynamics, device="cpu", progress=False)
    assert len(result.imagined_returns) == 1
    other_tokenizer = str(make_tiny_world_model(seed=1).save(tmp_path / "other-tokenizer.safetensors"))
    with pytest.raises(ValueError, match="other tokenizer weights than the policy's world model.*--freeze-tokenizer"):
        evaluate_policy(policy, episodes=1, imagined_model=other_tokenizer, device="cpu", progress=False)
