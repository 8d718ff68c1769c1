"""In-context agents: sources, learning histories, AD / Compressed AD models, training and InContextAgent."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import imaginegym  # noqa: F401  (registers the envs)
from imaginegym.agents.ad import HistoriesConfig, SourceConfig, collect_histories, make_source
from imaginegym.agents.ad.agent import InContextAgent
from imaginegym.agents.ad.model import ModelConfig, build_model, decoder_mask
from imaginegym.agents.ad.train import Histories, TrainConfig, train_in_context
from imaginegym.data import EpisodeDataset
from imaginegym.envs import darkroom

TINY_AD = ModelConfig(model="ad", d_model=16, layers=1, heads=2, context=24)
TINY_CAD = ModelConfig(model="compressed-ad", d_model=16, layers=1, heads=2, n_latent=4, segment=5, window=8, encoder_layers=1)


def _play(source, env, episodes, seed=0):
    rng, returns = np.random.default_rng(seed), []
    for k in range(episodes):
        source.begin_episode(k)
        obs, _ = env.reset()
        done, total = False, 0.0
        while not done:
            action = source.act(obs, rng)
            next_obs, reward, term, trunc, _ = env.step(action)
            source.update(obs, action, reward, next_obs, term or trunc)
            obs, done, total = next_obs, term or trunc, total + reward
        returns.append(total / env.unwrapped.optimal_return())
    return np.array(returns)


@pytest.mark.parametrize("name,episodes", [("imaginegym/DarkRoom-v0", 25), ("imaginegym/DarkKeyToDoor-v0", 40)])
def test_optimistic_source_learns_a_task_from_scratch(name, episodes):
    env = gym.make(name, task=darkroom.test_tasks(type(gym.make(name).unwrapped).__name__)[0])
    returns = _play(make_source(SourceConfig(), env), env, episodes)
    assert returns[0] < 0.9  # it starts knowing nothing
    assert returns[-5:].mean() >= 0.9  # and learns the task


def test_source_refuses_envs_it_cannot_learn():
    env = gym.make("CartPole-v1")
    with pytest.raises(ValueError, match="MultiDiscrete observations and Discrete actions"):
        make_source(SourceConfig(), env)
    with pytest.raises(ValueError, match="source='ppo'"):
        SourceConfig(name="ppo")


def test_histories_store_every_run_in_order_and_resume(tmp_path):
    config = HistoriesConfig(num_tasks=2, episodes=6, runs_per_task=2, workers=2)
    root = collect_histories(config, tmp_path / "h", progress=False)
    with EpisodeDataset(root) as ds:
        assert len(ds) == 24 and [r.run for r in ds.runs] == [0, 1, 2, 3]
        tasks = config.task_list()
        assert [tuple(r.task) for r in ds.runs] == [tuple(t) for t in tasks for _ in range(2)]
        assert all(list(r.run_episodes) == list(range(6)) for r in ds.runs)
        before = ds.read_run(1, "actions").copy()
        assert not np.array_equal(before, ds.read_run(0, "actions"))  # each run has its own random stream
    # a killed collection: two episodes lost; the same command replays run 1 and writes only those
    (root / "episode_000007.h5").unlink()
    (root / "episode_000011.h5").unlink()
    written = sorted(p.name for p in root.glob("episode_*.h5"))
    collect_histories(config, root, progress=False)
    with EpisodeDataset(root) as ds:
        assert len(ds) == 24
        np.testing.assert_array_equal(ds.read_run(1, "actions"), before)
    assert len(written) == 22
    with pytest.raises(ValueError, match="episodes differ"):
        collect_histories(HistoriesConfig(num_tasks=2, episodes=7, runs_per_task=2), root, progress=False)


def test_decoder_mask_latents_see_latents_and_transitions_see_the_past():
    mask = decoder_mask(3, 4, "cpu")
    assert mask.shape == (7, 7)
    assert not mask[:3, :3].any() and mask[:3, 3:].all()  # latents: bidirectional among themselves, no transition
    assert not mask[3:, :3].any()  # every transition sees every latent
    assert torch.equal(mask[3:, 3:], torch.triu(torch.ones(4, 4, dtype=torch.bool), 1))


def _tokens(model, batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 9, (batch, length, 2), generator=g)
    data = {"obs": obs, "prev_action": torch.randint(0, 6, (batch, length), generator=g),
            "prev_reward": torch.randint(0, 2, (batch, length), generator=g).float(),
            "prev_done": torch.zeros(batch, length, dtype=torch.bool)}
    return model.tokens(data)


@pytest.mark.parametrize("config", [TINY_AD, TINY_CAD])
def test_no_output_depends_on_a_later_transition(config):
    env = gym.make("imaginegym/DarkRoom-v0")
    torch.manual_seed(0)
    model = build_model(config, env.observation_space, env.action_space).eval()
    length = config.context if config.model == "ad" else config.window
    with torch.no_grad():
        tokens = _tokens(model, 2, length)
        later = tokens.clone()
        later[:, 5:] += torch.randn_like(later[:, 5:])
        if config.model == "ad":
            a, b = model(tokens), model(later)
        else:
            latents = model.compress(model.initial(2), _tokens(model, 2, config.segment, seed=1))
            a, b = model(latents, tokens), model(latents, later)
            # the latents never see the transitions: the decoder's latent rows are the same for any transitions
            x = torch.cat([latents + model.latent_position, tokens + model.position.weight[:length]], 1)
            y = torch.cat([latents + model.latent_position, later + model.position.weight[:length]], 1)
            mask = decoder_mask(config.n_latent, length, "cpu")
            hx = model.decoder(model.decoder_in(x), mask=mask)[:, :config.n_latent]
            hy = model.decoder(model.decoder_in(y), mask=mask)[:, :config.n_latent]
            torch.testing.assert_close(hx, hy)
    torch.testing.assert_close(a[:, :5], b[:, :5])  # outputs before the change are untouched
    assert not torch.allclose(a[:, 5:], b[:, 5:])  # and later ones do read it


def test_compression_reads_only_the_folded_segment_and_previous_latents():
    env = gym.make("imaginegym/DarkRoom-v0")
    model = build_model(TINY_CAD, env.observation_space, env.action_space).eval()
    with torch.no_grad():
        segment = _tokens(model, 1, TINY_CAD.segment)
        latents = model.compress(model.initial(1), segment)
        again = model.compress(model.initial(1), segment.clone())
        other = model.compress(model.initial(1), segment + torch.randn_like(segment))
    torch.testing.assert_close(latents, again)
    assert not torch.allclose(latents, other)
    with pytest.raises(ValueError, match="segment=5"):
        model.compress(model.initial(1), segment[:, :3])


def _tiny_histories(tmp_path, episodes=8):
    return collect_histories(HistoriesConfig(num_tasks=3, episodes=episodes), tmp_path / "h", progress=False)


def test_histories_arrays_shift_previous_transition_inputs(tmp_path):
    root = _tiny_histories(tmp_path, episodes=3)
    h = Histories(root)
    assert len(h) == 3 and h.lengths.tolist() == [60, 60, 60]
    start = h.starts[1]
    assert h.prev_action[start] == 5 and h.prev_reward[start] == 0 and h.prev_done[start]  # a run starts with no history
    assert h.prev_action[start + 1] == h.action[start]
    assert h.prev_done[start + 20] and not h.prev_done[start + 19]  # episode boundaries inside a run
    batch = h.sample(np.random.default_rng(0), 4, 30)
    assert batch["obs"].shape == (4, 30, 2) and batch["action"].shape == (4, 30)


@pytest.mark.parametrize("model", [TINY_AD, TINY_CAD])
def test_training_resumes_and_exports_an_agent(tmp_path, model):
    root = _tiny_histories(tmp_path)
    config = TrainConfig(data=str(root), steps=6, batch_size=4, checkpoint_every=3, eval_every=0, grad_depth=1, latent_refresh=2,
                         threads=1, device="cpu", model=model)
    out = tmp_path / "run"
    agent_dir = train_in_context(config, out, progress=False)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6
    longer = TrainConfig(**{**config.__dict__, "steps": 9})
    train_in_context(longer, out, progress=False)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 9
    agent = InContextAgent.load(agent_dir)
    assert agent.config == model and agent.env_id == "imaginegym/DarkRoom-v0"
    other = TrainConfig(**{**config.__dict__, "model": ModelConfig(**{**model.__dict__, "d_model": 32})})
    with pytest.raises(ValueError, match="another model"):
        train_in_context(other, out, progress=False)


@pytest.mark.parametrize("model", [TINY_AD, TINY_CAD])
def test_agent_streams_across_episodes_with_bounded_memory(model):
    env = gym.make("imaginegym/DarkRoom-v0", task=(2, 2))
    torch.manual_seed(0)
    agent = InContextAgent(build_model(model, env.observation_space, env.action_space), env_id="imaginegym/DarkRoom-v0")
    agent.reset()
    sizes = []
    obs, _ = env.reset()
    for step in range(200):
        action = agent.act(obs)
        assert env.action_space.contains(np.int64(action))
        next_obs, reward, term, trunc, _ = env.step(action)
        agent.observe(action, reward, next_obs, term, trunc)
        obs = env.reset()[0] if term or trunc else next_obs
        sizes.append(agent.memory_bytes())
    assert agent.transitions == 200  # nothing is cleared at episode ends
    assert max(sizes[100:]) == max(sizes[50:100])  # memory stops growing
    attended = model.context - 1 if model.model == "ad" else model.window - 1
    assert agent.tokens.shape[1] <= attended
    agent.reset()
    assert agent.transitions == 0 and agent.tokens.shape[1] == 0
    with pytest.raises(RuntimeError, match="observe\\(\\) before act\\(\\)"):
        agent.observe(0, 0.0, obs, False, False)


def test_agent_save_load_acts_the_same(tmp_path):
    env = gym.make("imaginegym/DarkRoom-v0", task=(1, 7))
    agent = InContextAgent(build_model(TINY_CAD, env.observation_space, env.action_space), env_id="imaginegym/DarkRoom-v0", greedy=True)
    loaded = InContextAgent.load(agent.save(tmp_path / "agent"), greedy=True)
    for a in (agent, loaded):
        a.reset()
    obs, _ = env.reset()
    for _ in range(30):
        action = agent.act(obs)
        assert loaded.act(obs) == action
        obs, reward, term, trunc, _ = env.step(action)
        for a in (agent, loaded):
            a.observe(action, reward, obs, term, trunc)
        if term or trunc:
            obs, _ = env.reset()
    config = json.loads((tmp_path / "agent" / "in_context_agent.json").read_text())
    assert config["config"]["model"] == "compressed-ad"
    with pytest.raises(FileNotFoundError, match="no in-context agent"):
        InContextAgent.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="observation space"):
        agent.check_env(gym.make("CartPole-v1"))


def test_box_actions_use_a_gaussian_head():
    observation_space = spaces.Box(-1, 1, (3,), np.float32)
    action_space = spaces.Box(-1, 1, (2,), np.float32)
    model = build_model(TINY_CAD, observation_space, action_space)
    agent = InContextAgent(model)
    agent.reset(batch=3)
    actions = agent.act_batch(np.zeros((3, 3), np.float32))
    assert actions.shape == (3, 2) and actions.dtype == np.float32 and (np.abs(actions) <= 1).all()
    agent.observe_batch(actions, np.ones(3), np.zeros(3, bool), np.zeros(3, bool))
    target = torch.zeros(1, 1, 2)
    out = torch.zeros(1, 1, 4)
    assert model.head.loss(out, target).shape == (1, 1)


def test_cli_histories_train_eval(tmp_path, capsys):
    from imaginegym.cli import main

    data, run = tmp_path / "h", tmp_path / "run"
    assert main(["ad", "histories", "--out", str(data), "--num-tasks", "2", "--episodes", "4", "--source-epsilon", "0.2"]) == 0
    assert json.loads((data / "histories.json").read_text())["source"]["epsilon"] == 0.2
    assert main(["ad", "train", "--data", str(data), "--out", str(run), "--steps", "3", "--batch-size", "2", "--eval-every", "0",
                 "--model", "compressed-ad", "--d-model", "16", "--layers", "1", "--heads", "2", "--n-latent", "4", "--segment", "5",
                 "--window", "8", "--encoder-layers", "1", "--latent-refresh", "2", "--device", "cpu"]) == 0
    results = tmp_path / "results.json"
    assert main(["ad", "eval", "--agent", str(run), "--episodes", "2", "--out", str(results)]) == 0
    result = json.loads(results.read_text())
    assert len(result["tasks"]) == 8 and np.array(result["returns"]).shape == (8, 2)
    assert "of the optimum" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["ad", "train", "--data", str(tmp_path / "missing"), "--out", str(run)])
    assert exit_info.value.code == 2 and "imaginegym ad histories --out" in capsys.readouterr().err


def test_latency_benchmark_reports_flat_memory_for_compressed_ad(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "benchmarks" / "in_context_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    env = gym.make("imaginegym/DarkRoom-v0")
    paths = []
    for config in (TINY_AD, TINY_CAD):
        agent = InContextAgent(build_model(config, env.observation_space, env.action_space), env_id="imaginegym/DarkRoom-v0")
        paths.append(str(agent.save(tmp_path / config.model)))
    bench.main(["--agents", *paths, "--lengths", "100", "400", "--png", str(tmp_path / "latency.png")])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(f"| {tmp_path}")]
    assert len(rows) == 2
    cad = rows[1].split("|")
    assert cad[-3].strip() == cad[-2].strip()  # the same memory at 100 and 400 transitions
    assert (tmp_path / "latency.png").stat().st_size > 0


def test_stored_latents_are_the_model_folding_each_run_from_its_start(tmp_path):
    from imaginegym.agents.ad.train import LatentStore

    h = Histories(_tiny_histories(tmp_path, episodes=2))
    env = gym.make("imaginegym/DarkRoom-v0")
    model = build_model(TINY_CAD, env.observation_space, env.action_space)
    store = LatentStore(h, TINY_CAD.segment)
    store.refresh(model, torch.device("cpu"), chunk=2)
    assert store.latents.shape == (3, 40 // 5 + 1, 4, 16)
    assert model.training  # refresh leaves the training mode as it was
    model.eval()
    with torch.no_grad():
        run, index = 2, h.starts[2] + np.arange(15)
        from imaginegym.agents.ad.train import _inputs, to_tensors

        tokens = model.tokens(to_tensors({k: v[None] for k, v in _inputs(h, index).items()}, torch.device("cpu")))
        latents = model.initial(1)
        for j in range(3):
            latents = model.compress(latents, tokens[:, j * 5:(j + 1) * 5])
    torch.testing.assert_close(store.latents[run, 3], latents[0])


def test_temperature_scales_the_sampled_distribution_and_must_be_positive():
    discrete = build_model(TINY_AD, spaces.Discrete(2, start=0), spaces.Discrete(5)).head
    logits = torch.tensor([[0.0, 1.0, 0.5, -1.0, 0.2]]).repeat(4000, 1)
    generator = torch.Generator().manual_seed(0)
    shares = [(discrete.sample(logits, generator, temperature=t) == 1).float().mean().item() for t in (2.0, 1.0, 0.25)]
    assert shares[0] < shares[1] < shares[2] and shares[1] == pytest.approx(logits[0].softmax(-1)[1].item(), abs=0.03)
    gaussian = build_model(TINY_CAD, spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (2,), np.float32)).head
    out = torch.zeros(4000, 4)  # mean 0, std 1
    assert gaussian.sample(out, generator, temperature=0.5).std().item() == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="temperature=0 must be > 0"):
        InContextAgent(build_model(TINY_AD, spaces.Discrete(2, start=0), spaces.Discrete(5)), temperature=0)


def test_returns_benchmark_prints_a_row_per_agent_and_plots(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("returns", Path(__file__).resolve().parents[1] / "benchmarks" / "in_context_returns.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    env = gym.make("imaginegym/DarkRoom-v0")
    path = InContextAgent(build_model(TINY_AD, env.observation_space, env.action_space), env_id="imaginegym/DarkRoom-v0").save(tmp_path / "a")
    bench.main(["--agents", str(path), "--episodes", "2", "--png", str(tmp_path / "curve.png"), "--json-dir", str(tmp_path / "json")])
    out = capsys.readouterr().out
    assert out.count(f"| {path} | ad | 8 test |") == 1 and "source algorithm" in out
    bench.main(["--agents", str(path), "--episodes", "2", "--task-every", "3"])
    assert f"| {path} | ad | 3 test[::3] |" in capsys.readouterr().out  # held-out goals 0, 3 and 6
    bench.main(["--agents", str(path), "--episodes", "2", "--task-every", "4", "--temperatures", "0.5", "1"])
    out = capsys.readouterr().out
    assert f"| {path}, temperature 0.5 | ad | 2 test[::4] |" in out and f"| {path} | ad | 2 test[::4] |" in out
    assert (tmp_path / "curve.png").stat().st_size > 0 and json.loads((tmp_path / "json" / "a.json").read_text())["episodes"] == 2


@pytest.mark.parametrize("name,floor", [("darkroom-ad", 0.9), ("darkroom-compressed-ad", 0.5)])
def test_bundled_agent_learns_held_out_goals_in_context(name, floor):
    from imaginegym.agents.ad import evaluate_in_context

    agent = InContextAgent.load(name, seed=0)
    result = evaluate_in_context(agent, "imaginegym/DarkRoom-v0", tasks="test", episodes=30, progress=False)
    returns = np.array(result["returns"])  # (tasks, episodes)
    assert returns[:, 0].mean() < returns[:, -10:].mean()  # it improves in context, with frozen weights
    # measured with 30 episodes (docs/benchmarks.md gives the 50-episode figures): 97.8% and 77.5%
    assert result["mean_fraction_of_optimal_last10"] >= floor


@pytest.mark.parametrize("name,floor", [("darkkeytodoor-ad", 1.6), ("darkkeytodoor-compressed-ad", 1.1)])
def test_bundled_darkkeytodoor_agents_find_key_and_door_of_held_out_pairs_in_context(name, floor):
    from imaginegym.agents.ad import evaluate_in_context
    from imaginegym.envs.darkroom import test_tasks

    agent = InContextAgent.load(name, seed=0)
    tasks = test_tasks("DarkKeyToDoor")[:40:5]  # 8 held-out key-door pairs
    returns = np.array(evaluate_in_context(agent, "imaginegym/DarkKeyToDoor-v0", tasks=tasks, episodes=12, progress=False)["returns"])
    # measured, first episode / episodes 9-12 (of 2): AD 0.25 / 2.00, Compressed AD 0.38 / 1.41
    # (docs/benchmarks.md, 50 episodes on 33 pairs: 1.88 and 1.15)
    assert returns[:, 0].mean() < 1.0 and returns[:, -4:].mean() >= floor
