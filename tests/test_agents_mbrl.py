"""The model-based loop: every phase on tiny settings, every real step counted, resumed after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from imaginegym.agents.mbrl import LoopConfig, ModelBasedLoop
from imaginegym.data import EpisodeDataset

TINY = dict(size=16, max_episode_steps=20, real_steps=60, initial_episodes=2, episodes_per_iteration=1, tokenizer_steps_first=4,
            tokenizer_steps_per_iteration=2, dynamics_steps_first=6, dynamics_steps_per_iteration=2, agent_steps_per_iteration=64,
            horizon=8, num_envs=4, eval_episodes=1, device="cpu")
RUN = "import sys\nfrom imaginegym.agents.mbrl import LoopConfig, ModelBasedLoop\nModelBasedLoop(LoopConfig(**{tiny}), sys.argv[1], progress=False).run()\n"


def test_loop_killed_mid_run_resumes_from_its_last_finished_phase(tmp_path):
    out = tmp_path / "loop"
    code = RUN.format(tiny=repr(TINY))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    process = subprocess.Popen([sys.executable, "-c", code, str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None:
            state = json.loads((out / "loop.json").read_text()) if (out / "loop.json").is_file() else {"done": []}
            if [0, "agent"] in state["done"]:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        os.killpg(process.pid, signal.SIGKILL)  # mid-run: in the first evaluation, or the second collection
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finished = json.loads((out / "loop.json").read_text())["done"]
    assert finished[:3] == [[0, "collect"], [0, "world_model"], [0, "agent"]]
    curve = ModelBasedLoop(LoopConfig(**TINY), out, progress=False).run()  # resumes, then finishes
    state = json.loads((out / "loop.json").read_text())
    assert state["done"][:3] == finished[:3] and len(state["done"]) == len({tuple(d) for d in state["done"]})  # nothing repeated
    dataset = EpisodeDataset(out / "data")
    assert dataset.episode_ids == [0, 1, 2] and [s.policy for s in dataset.shards][:2] == ["ou", "ou"]
    assert dataset.shards[2].policy == f"agent:{out / 'policies' / 'iteration_001'}"  # iteration 1 collects with iteration 0's policy
    assert [p["real_steps"] for p in curve] == [40, 60]  # every real step of the data, the OU episodes' too
    assert (out / "curve.png").stat().st_size > 0 and (out / "agent" / "policy" / "policy.json").is_file()
    with pytest.raises(ValueError, match="holds a loop with other settings"):
        ModelBasedLoop(LoopConfig(**{**TINY, "horizon": 16}), out)
    saved = json.loads((out / "loop.json").read_text())  # as a loop saved before these fields existed
    for new in ("dynamics_recent_fraction", "dynamics_context_length", "agent_normalize_reward", "agent_lr_schedule",
                "agent_episode_start_fraction", "dynamics_rollout_min_context", "dynamics_rollout_episode_start_fraction"):
        del saved["config"][new]
    (out / "loop.json").write_text(json.dumps(saved))
    longer = ModelBasedLoop(LoopConfig(**{**TINY, "real_steps": 80}), out, progress=False).run()  # more real steps: one more iteration
    assert [p["real_steps"] for p in longer] == [40, 60, 80] and EpisodeDataset(out / "data").episode_ids == [0, 1, 2, 3]


def test_loop_continues_a_trained_model_on_a_copy_of_its_data_with_the_tokenizer_frozen(tmp_path):
    import torch

    from imaginegym.world_model import WorldModel

    first = tmp_path / "first"
    ModelBasedLoop(LoopConfig(**{**TINY, "real_steps": 40}), first, progress=False).run()  # iteration 0 only: OU data, a model
    out = tmp_path / "continued"
    config = LoopConfig(**{**TINY, "init_data": str(first / "data"), "init_model": str(first / "world_model"), "dynamics_steps_first": 2,
                           "dynamics_rollout_length": 3, "dynamics_recent_fraction": 0.5, "dynamics_context_length": 10,
                           "agent_normalize_reward": True, "agent_lr_schedule": "linear", "agent_episode_start_fraction": 0.25})
    curve = ModelBasedLoop(config, out, progress=False).run()
    from imaginegym.training.checkpoint import load_checkpoint

    saved = load_checkpoint(out / "world_model" / "dynamics.pt")[1]
    assert saved["lengths"]["rollout_length"] == 3 and saved["dynamics"]["context_length"] == 10
    assert saved["lengths"]["recent_episodes"] == 1 and saved["lengths"]["recent_fraction"] == 0.5  # iteration 1: its one new episode
    agent = json.loads((out / "agent" / "agent.json").read_text())
    assert agent["normalize_reward"] is True and agent["lr_schedule"] == "linear" and agent["episode_start_fraction"] == 0.25
    with pytest.raises(ValueError, match="agent_episode_start_fraction=2.0 must lie in"):
        LoopConfig(**{**TINY, "agent_episode_start_fraction": 2.0})
    with pytest.raises(ValueError, match="dynamics_context_length=1: the dynamics attends to >= 2 frames"):
        LoopConfig(**{**TINY, "dynamics_context_length": 1})
    with pytest.raises(ValueError, match="dynamics_rollout_episode_start_fraction=1.5 must lie in"):
        LoopConfig(**{**TINY, "dynamics_rollout_episode_start_fraction": 1.5})
    dataset = EpisodeDataset(out / "data")
    assert dataset.episode_ids == [0, 1, 2] and [s.policy for s in dataset.shards][:2] == ["ou", "ou"]  # the copy, then its own
    assert dataset.shards[2].policy == f"agent:{out / 'policies' / 'iteration_001'}"
    assert [p["real_steps"] for p in curve] == [40, 60]  # the copied steps count
    base, continued = WorldModel.load(first / "world_model"), WorldModel.load(out / "world_model")
    for name, tensor in base.tokenizer.state_dict().items():
        assert torch.equal(tensor, continued.tokenizer.state_dict()[name]), name
    assert any(not torch.equal(t, continued.dynamics.state_dict()[n]) for n, t in base.dynamics.state_dict().items())
    assert EpisodeDataset(first / "data").episode_ids == [0, 1]  # the source dataset is left as it was


def test_loop_trains_a_fresh_policy_on_the_models_state_each_iteration(tmp_path):
    from imaginegym.agents.sb3 import AgentPolicy

    out = tmp_path / "fresh"
    curve = ModelBasedLoop(LoopConfig(**{**TINY, "agent_obs": "state", "agent_fresh": True, "dynamics_context_length": 6,
                                         "dynamics_rollout_min_context": 1, "dynamics_rollout_episode_start_fraction": 0.5}),
                           out, progress=False).run()
    assert [p["iteration"] for p in curve] == [0, 1]
    from imaginegym.training.checkpoint import load_checkpoint

    saved = load_checkpoint(out / "world_model" / "dynamics.pt")[1]  # a model trained from scratch with a longer context
    assert saved["dynamics"]["context_length"] == 6
    assert saved["lengths"]["rollout_min_context"] == 1 and saved["lengths"]["rollout_episode_start_fraction"] == 0.5
    for iteration in range(2):
        run = out / "agent" / f"iteration_{iteration:03d}"
        settings = json.loads((run / "agent.json").read_text())
        assert settings["obs"] == "state" and settings["frame_stack"] == 1 and settings["steps"] == TINY["agent_steps_per_iteration"]
        assert settings["seed"] == iteration  # a new policy, not the last one continued
        assert AgentPolicy.load(run / "policy").config.obs_mode == "state"
    policies = [shard.policy for shard in EpisodeDataset(out / "data").shards]
    assert policies[2:] == [f"agent:{out / 'policies' / 'iteration_001'}"]  # iteration 0's policy collected iteration 1's episode
    assert (out / "policies" / "iteration_001" / "world_model.safetensors").is_file()  # with the model it observed through then
    with pytest.raises(ValueError, match="agent_obs='pixels'"):
        LoopConfig(**{**TINY, "agent_obs": "pixels"})
