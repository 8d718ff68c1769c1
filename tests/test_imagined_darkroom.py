"""A task-conditioned world model of DarkRoom: trained from learning histories, imagined with a task, same spaces as the real env."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import imaginegym  # noqa: F401
from imaginegym.agents.ad.evaluate import evaluate_in_context, imagined_env_maker
from imaginegym.agents.ad.histories import HistoriesConfig, collect_histories
from imaginegym.cli import main
from imaginegym.data.format import DatasetError
from imaginegym.data.store import EpisodeDataset, task_numbers
from imaginegym.imagination import ImaginationEnv, ImaginationVectorEnv, real_twin
from imaginegym.world_model import WorldModel

FLAGS = ["--tokenizer-kind", "embedding", "--tokenizer-obs-dim", "2", "--tokenizer-num-values", "9", "--tokenizer-num-latents", "1",
         "--tokenizer-latent-dim", "8", "--tokenizer-width", "16", "--tokenizer-steps", "4", "--dynamics-width", "16", "--dynamics-depth", "1",
         "--dynamics-heads", "2", "--dynamics-context-length", "3", "--dynamics-steps", "4", "--dynamics-batch-size", "4", "--dynamics-denoise-steps", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def darkroom_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("darkroom")
    data = collect_histories(HistoriesConfig(num_tasks=3, episodes=3), root / "histories", progress=False)
    assert main(["train", "world-model", "--data", str(data), "--out", str(root / "run"), *FLAGS]) == 0
    return root / "run", data


def test_the_dataset_gives_each_episode_its_task_and_the_model_remembers_them(darkroom_model):
    run, data = darkroom_model
    dataset = EpisodeDataset(data)
    vectors = dataset.task_vectors()
    assert vectors.shape == (9, 2) and vectors.dtype == np.float32
    assert [list(v) for v in vectors[::3]] == [run_.task for run_ in dataset.runs]
    wm = WorldModel.load(run)
    assert wm.dynamics_config.task_dim == 2
    assert wm.env_spec.tasks == [list(r.task) for r in dataset.runs]
    assert wm.env_spec.env_kwargs == {}  # DarkRoom takes no DMC settings: the real twin is gym.make(env_id)
    real = gym.make(wm.env_spec.env_id)
    assert real.observation_space == wm.observation_space and real.action_space == wm.action_space
    assert real_twin(wm).observation_space == real.observation_space


def test_the_imagined_env_takes_its_task_as_the_real_env_does(darkroom_model):
    run, _ = darkroom_model
    wm = WorldModel.load(run)
    env = ImaginationEnv(wm, render_mode=None)
    assert env.task == wm.env_spec.tasks[0]  # the default: the first training task
    assert env.num_denoise_steps == 1 == wm.dynamics_config.denoise_steps  # the model's own default
    assert env.context_length == 1 and wm.env_spec.start_context == 1  # every history starts at the centre
    assert wm.env_spec.terminates is False
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0, options={"task": (2, 7)})
    assert env.observation_space.contains(obs) and env.task == [2, 7]
    env.reset(seed=1)
    assert env.task == [2, 7]  # kept for later episodes, as in the real env
    env.reset(options={"task": 12})  # an index into the real env's task list, as the real env takes it
    assert env.task == list(gym.make("imaginegym/DarkRoom-v0").unwrapped.tasks[12])
    obs, reward, terminated, truncated, info = env.step(4)
    assert env.observation_space.contains(obs) and isinstance(reward, float)
    with pytest.raises(ValueError, match="tasks of 2, like"):
        env.reset(options={"task": (1, 2, 3)})
    with pytest.raises(ValueError, match="not a task of finite numbers"):
        env.reset(options={"task": "corner"})
    with pytest.raises(ValueError, match="lists 81 tasks"):
        env.reset(options={"task": 81})
    assert ImaginationEnv(wm, task=(5, 5), render_mode=None).task == [5, 5]


def test_the_task_changes_what_the_model_imagines(darkroom_model):
    """Same seed, same actions, two goals: the reward head reads the task (its weights made to matter)."""
    run, _ = darkroom_model
    wm = WorldModel.load(run)
    with torch.no_grad():
        for p in wm.dynamics.task_in.parameters():
            p.normal_()
    rewards = []
    for task in ((0, 0), (8, 8)):
        env = ImaginationEnv(wm, task=task, render_mode=None)
        env.reset(seed=3)
        rewards.append([env.step(a)[1] for a in (4, 4, 2)])
    assert not np.allclose(rewards[0], rewards[1])


def test_vector_env_tasks_per_reset_and_a_single_task_model_refuses_one(darkroom_model, tiny_world_model):
    run, _ = darkroom_model
    vec = ImaginationVectorEnv(3, run, render_mode=None, task=(1, 1))
    vec.reset(seed=0)
    assert vec.tasks == ([1, 1],) * 3
    vec.reset(options={"task": (3, 4), "reset_mask": np.array([False, True, False])})
    assert vec.tasks == ([1, 1], [3, 4], [1, 1])
    vec.step(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="trained on one task"):
        ImaginationEnv(tiny_world_model, task=(1, 1))


def test_in_context_evaluation_runs_in_the_imagined_env_against_the_real_optimum(darkroom_model, tmp_path, capsys):
    from imaginegym.agents.ad.agent import InContextAgent

    run, _ = darkroom_model
    agent = InContextAgent.load("darkroom-ad", seed=0)
    make_env, env_id = imagined_env_maker(run)
    assert env_id == "imaginegym/DarkRoom-v0"
    result = evaluate_in_context(agent, env_id, tasks=[(2, 7), (4, 1)], episodes=2, progress=False, make_env=make_env)
    assert result["optimal_return"] == [float(gym.make(env_id, task=t).unwrapped.optimal_return()) for t in ((2, 7), (4, 1))]
    assert len(result["returns"]) == 2 and len(result["returns"][0]) == 2
    out = tmp_path / "imagined.json"
    assert main(["ad", "eval", "--agent", "darkroom-ad", "--env", f"imagined:{run}", "--episodes", "1", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["env"].startswith("imagined:") and len(written["tasks"]) == 8
    with pytest.raises(ValueError, match="trained on one task"):
        imagined_env_maker("cartpole-swingup")


def test_task_numbers_and_mixed_datasets_get_clear_errors(darkroom_model, tmp_path):
    assert task_numbers(((1, 1), (7, 3))).tolist() == [1, 1, 7, 3]
    with pytest.raises(ValueError, match="finite numbers"):
        task_numbers([])
    _, data = darkroom_model
    dataset = EpisodeDataset(data)
    from imaginegym.data.store import write_episode

    episode = dataset[0]
    write_episode(data, 999, episode, dataset.meta, seed=0, policy="none")  # an episode without a run or task
    with pytest.raises(DatasetError, match="name no task"):
        EpisodeDataset(data).task_vectors()
    (data / "episode_000999.h5").unlink()


def test_a_pixel_tokenizer_on_darkroom_says_which_tokenizer_to_use(darkroom_model, tmp_path, capsys):
    _, data = darkroom_model
    with pytest.raises(SystemExit):
        main(["train", "world-model", "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert "use --tokenizer-kind embedding" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "world-model", "--data", str(data), "--out", str(tmp_path / "run"), *FLAGS[:2], "--tokenizer-obs-dim", "2",
              "--tokenizer-num-values", "5", "--device", "cpu"])
    assert "--tokenizer-num-values 9" in capsys.readouterr().err
    run, _ = darkroom_model
    with pytest.raises(SystemExit):
        main(["eval", "world-model", str(run), "--data", str(data), "--device", "cpu"])
    assert "benchmarks/imagined_darkroom.py" in capsys.readouterr().err


def test_the_bundled_darkroom_model_imagines_the_real_room():
    """From the real start, a walk to a held-out goal and back: the imagined cells are the real ones, and so is the reward."""
    wm = WorldModel.load("darkroom")
    assert wm.dynamics_config.task_dim == 2 and len(wm.env_spec.tasks) == 81
    goal = (4, 1)  # a held-out goal of the in-context agents
    real, imagined = gym.make("imaginegym/DarkRoom-v0", task=goal), ImaginationEnv(wm, task=goal, render_mode=None)
    obs, _ = real.reset()
    fake, _ = imagined.reset(seed=0)
    assert np.array_equal(obs, fake)
    same, rewards = [], []
    for action in [1, 1, 1, 0, 0, 3, 4, 2, 2, 4, 4, 1, 1, 0, 3, 3, 1, 0, 2, 1]:  # up to the goal, stay, wander, come back
        obs, reward, _, truncated, _ = real.step(action)
        fake, fake_reward, terminated, fake_truncated, _ = imagined.step(action)
        same.append(np.array_equal(obs, fake))
        rewards.append((reward, fake_reward))
        assert not terminated and truncated == fake_truncated
    assert np.mean(same) >= 0.9
    real_rewards, fake_rewards = np.array(rewards).T
    assert np.abs(real_rewards - fake_rewards).mean() < 0.15 and fake_rewards[real_rewards == 1].min() > 0.5


def test_imagined_cells_do_not_drift_while_the_agent_stays(tiny_world_model):
    """Each imagined frame is snapped to the cell it decodes to before it becomes context (WorldModel.projection)."""
    wm = WorldModel.load("darkroom")
    env = ImaginationEnv(wm, task=(7, 6), render_mode=None)
    for seed, cell in enumerate([(7, 6), (2, 2), (0, 8)]):
        env.reset(seed=seed, options={"context_frames": np.array([cell])})
        assert all(tuple(env.step(0)[0].tolist()) == cell for _ in range(19))
    assert tiny_world_model.projection is None  # pixels are not snapped
