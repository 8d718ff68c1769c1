"""Schema 2: vector and discrete observations, Discrete actions, runs, and schema-1 datasets."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from gymnasium import spaces

from imaginegym.data import (
    CollectConfig,
    DatasetError,
    DatasetMeta,
    Episode,
    EpisodeDataset,
    WindowDataset,
    collect,
    write_episode,
)
from imaginegym.data.format import INDEX_FILE, METADATA_FILE

VECTOR = spaces.Box(-np.inf, np.inf, (4,), np.float32)
DISCRETE = spaces.Discrete(7)
GRID = spaces.MultiDiscrete([9, 9])
MOVES = spaces.Discrete(5)
PUSH = spaces.Box(-1, 1, (2,), np.float32)


def make_meta(observation_space: spaces.Space, action_space: spaces.Space, task: str = "") -> DatasetMeta:
    return DatasetMeta("Test-v0", task, observation_space, action_space, action_repeat=1)


def make_episode(observation_space: spaces.Space, action_space: spaces.Space, steps: int, seed: int = 0) -> Episode:
    observation_space.seed(seed)
    action_space.seed(seed + 1)
    rng = np.random.default_rng(seed)
    return Episode(
        frames=np.stack([observation_space.sample() for _ in range(steps + 1)]),
        actions=np.stack([action_space.sample() for _ in range(steps)]),
        rewards=rng.standard_normal(steps).astype(np.float32),
        terminated=np.zeros(steps, bool),
        truncated=np.arange(steps) == steps - 1,
    )


def assert_same(a: Episode, b: Episode) -> None:
    for key in ("frames", "actions", "rewards", "terminated", "truncated"):
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and x.shape == y.shape, key
        np.testing.assert_array_equal(x, y, err_msg=key)


@pytest.mark.parametrize(
    "observation_space, action_space, frame_shape",
    [(VECTOR, PUSH, (4,)), (VECTOR, MOVES, (4,)), (DISCRETE, MOVES, ()), (GRID, MOVES, (2,)), (GRID, PUSH, (2,))],
    ids=["box-box", "box-discrete", "discrete-discrete", "multidiscrete-discrete", "multidiscrete-box"],
)
def test_round_trip(tmp_path, observation_space, action_space, frame_shape):
    meta = make_meta(observation_space, action_space)
    written = [make_episode(observation_space, action_space, steps=5 + i, seed=i) for i in range(3)]
    for i, episode in enumerate(written):
        write_episode(tmp_path, i, episode, meta, seed=i, policy="random")
    for _ in range(2):  # the second open trusts index.json
        ds = EpisodeDataset(tmp_path)
        assert ds.meta == meta and ds.meta.size is None and ds.runs == ()
        for a, b in zip(written, ds):
            assert_same(a, b)
    frames, actions = ds.read(1, "frames", 2, 4), ds.read(1, "actions")
    assert frames.shape == (2, *frame_shape) and frames.dtype == observation_space.dtype
    discrete = isinstance(action_space, spaces.Discrete)
    assert actions.shape == ((6,) if discrete else (6, 2)) and actions.dtype == (np.int64 if discrete else np.float32)
    with h5py.File(tmp_path / "episode_000000.h5") as f:
        assert f["frames"].chunks is None and f["frames"].compression is None  # a few numbers a step: plain
        assert "size" not in f.attrs
    assert json.loads((tmp_path / METADATA_FILE).read_text())["size"] is None


def test_images_keep_per_frame_gzip_chunks(tmp_path):
    image = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    write_episode(tmp_path, 0, make_episode(image, MOVES, 4), DatasetMeta("Test-v0", "", image, MOVES, 1, size=8), seed=0, policy="random")
    with h5py.File(tmp_path / "episode_000000.h5") as f:
        assert f["frames"].chunks == (1, 8, 8, 3) and f["frames"].compression == "gzip"
        assert f["actions"].dtype == np.int64 and f["actions"].shape == (4,)


def test_windows_of_discrete_actions(tmp_path):
    meta = make_meta(GRID, MOVES)
    episode = make_episode(GRID, MOVES, steps=6)
    write_episode(tmp_path, 0, episode, meta, seed=0, policy="random")
    windows = WindowDataset(tmp_path, seq_len=3)
    first, later = windows[(0, 0, 3)], windows[(0, 2, 3)]
    assert first["frames"].shape == (3, 2) and first["actions"].shape == (3,)
    assert first["actions"].tolist() == [0, *episode.actions[:2]] and first["action_mask"].tolist() == [False, True, True]
    assert later["actions"].tolist() == episode.actions[1:4].tolist()
    np.testing.assert_array_equal(later["frames"].numpy(), episode.frames[2:5])


def write_run(root: Path, run: int, task, episodes: int, first_index: int, order: list[int]) -> list[Episode]:
    """Episodes of one run, written in the index order `order` (a permutation of places)."""
    meta = make_meta(GRID, MOVES)
    written = [make_episode(GRID, MOVES, steps=20, seed=100 * run + k) for k in range(episodes)]
    for index, place in zip(range(first_index, first_index + episodes), order):
        write_episode(root, index, written[place], meta, seed=index, policy="ppo", run=run, run_episode=place, run_task=task)
    return written


def test_run_reads_back_in_order_with_its_task(tmp_path):
    meta = make_meta(GRID, MOVES)
    write_episode(tmp_path, 0, make_episode(GRID, MOVES, 4), meta, seed=0, policy="random")  # in no run
    history = write_run(tmp_path, run=7, task=(2, 7), episodes=6, first_index=1, order=[3, 0, 5, 1, 4, 2])
    other = write_run(tmp_path, run=2, task=np.array([5, 1]), episodes=2, first_index=10, order=[1, 0])
    for _ in range(2):  # the second open trusts index.json
        ds = EpisodeDataset(tmp_path)
        assert [(run.run, run.task, run.run_episodes) for run in ds.runs] == [(2, [5, 1], (0, 1)), (7, [2, 7], tuple(range(6)))]
        assert len(ds) == 9 and ds.lengths.tolist() == [4] + [20] * 8  # episodes stay addressable one by one
        run = ds.runs[1]
        assert [ds.shards[i].run_episode for i in run.positions] == list(range(6))
        for key in ("frames", "actions", "rewards"):
            expected = np.concatenate([getattr(episode, key) for episode in history])
            np.testing.assert_array_equal(ds.read_run(7, key), expected, err_msg=key)
        np.testing.assert_array_equal(ds.read_run(2, "actions"), np.concatenate([e.actions for e in other]))
        assert ds.read_run(7, "frames").shape == (6 * 21, 2)
    with pytest.raises(KeyError, match=r"no run 3 .*runs \[2, 7\]"):
        ds.read_run(3, "frames")


def test_run_conflicts_are_named(tmp_path):
    write_run(tmp_path, run=0, task=[1, 1], episodes=2, first_index=0, order=[0, 1])
    meta, episode = make_meta(GRID, MOVES), make_episode(GRID, MOVES, 3)
    write_episode(tmp_path, 5, episode, meta, seed=5, policy="ppo", run=0, run_episode=2, run_task=[3, 3])
    with pytest.raises(DatasetError, match=r"run 0 .*different tasks \(\[1, 1\], \[3, 3\]\).*move the shards"):
        EpisodeDataset(tmp_path)
    (tmp_path / "episode_000005.h5").unlink()
    write_episode(tmp_path, 6, episode, meta, seed=6, policy="ppo", run=0, run_episode=1, run_task=[1, 1])
    with pytest.raises(DatasetError, match=r"episode_000001\.h5 and episode_000006\.h5 both hold episode 1 of run 0.*delete"):
        EpisodeDataset(tmp_path)
    with pytest.raises(ValueError, match="give its id too"):
        write_episode(tmp_path, 7, episode, meta, seed=7, policy="ppo", run_episode=0)
    with pytest.raises(ValueError, match="run=0 needs run_episode"):
        write_episode(tmp_path, 7, episode, meta, seed=7, policy="ppo", run=0)
    assert not (tmp_path / "episode_000007.h5").exists()


def test_mismatching_spaces_are_refused_with_the_fix(tmp_path):
    meta = make_meta(GRID, MOVES)
    episode = make_episode(GRID, MOVES, 4)
    floats = Episode(episode.frames.astype(np.float32), episode.actions, episode.rewards, episode.terminated, episode.truncated)
    with pytest.raises(DatasetError, match=r"frames are \(2,\) float32 .*MultiDiscrete.*int64.*cast the observations"):
        write_episode(tmp_path, 0, floats, meta, seed=0, policy="random")
    as_columns = Episode(episode.frames, episode.actions[:, None].astype(np.float32), episode.rewards, episode.terminated, episode.truncated)
    with pytest.raises(DatasetError, match=r"actions are \(1,\) per step but the action space Discrete\(5\).*integers \(T,\)"):
        write_episode(tmp_path, 0, as_columns, meta, seed=0, policy="random")
    with pytest.raises(DatasetError, match=r"actions are \(\) per step but the action space Box.*\(2,\)"):
        write_episode(tmp_path, 0, episode, make_meta(GRID, PUSH), seed=0, policy="random")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    write_episode(tmp_path, 0, episode, meta, seed=0, policy="random")
    bigger = spaces.MultiDiscrete([17, 17])
    with pytest.raises(DatasetError, match=r"observation_space.*\[9, 9\].*\[17, 17\].*another directory"):
        write_episode(tmp_path, 1, episode, make_meta(bigger, MOVES), seed=1, policy="random")


# The layout the schema-1 writer produced, byte for byte in what matters: uint8 frames in
# per-frame gzip chunks, float32 (T, A) actions, `size` always an attribute.
def write_schema1_dataset(root: Path, action_space: spaces.Space, episodes: int = 2, steps: int = 6) -> list[Episode]:
    from imaginegym.data.spaces import space_to_json

    root.mkdir()
    fields = {
        "env_id": "imaginegym/DMC-v0", "task": "cartpole-swingup",
        "observation_space": space_to_json(spaces.Box(0, 255, (8, 8, 3), np.uint8)),
        "action_space": space_to_json(action_space), "action_repeat": 2, "size": 8,
    }
    (root / METADATA_FILE).write_text(json.dumps({"schema_version": 1, **fields}))
    written, records = [], []
    for i in range(episodes):
        rng = np.random.default_rng(i)
        episode = Episode(
            frames=rng.integers(0, 256, (steps + 1, 8, 8, 3), dtype=np.uint8),
            actions=rng.uniform(-1, 1, (steps, 1)).astype(np.float32),
            rewards=rng.standard_normal(steps).astype(np.float32),
            terminated=np.zeros(steps, bool), truncated=np.arange(steps) == steps - 1,
        )
        path = root / f"episode_{i:06d}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("frames", data=episode.frames, chunks=(1, 8, 8, 3), compression="gzip", compression_opts=4)
            for key in ("actions", "rewards", "terminated", "truncated"):
                f.create_dataset(key, data=getattr(episode, key))
            attrs = {"schema_version": 1, "episode": i, "seed": i, "policy": "random", **fields}
            for key, value in attrs.items():
                f.attrs[key] = json.dumps(value) if isinstance(value, dict) else value
        stat = path.stat()
        records.append({"file": path.name, "episode": i, "length": steps, "seed": i, "policy": "random",
                        "max_episode_steps": None, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        written.append(episode)
    (root / INDEX_FILE).write_text(json.dumps({"schema_version": 1, "dataset": fields, "shards": records}))
    return written


def test_schema1_dataset_reads_identically_and_takes_new_image_episodes(tmp_path):
    root = tmp_path / "old"
    written = write_schema1_dataset(root, spaces.Box(-1, 1, (1,), np.float32))
    before = {p.name: p.read_bytes() for p in root.iterdir() if p.name != INDEX_FILE}
    for _ in range(2):  # the first rebuilds the schema-1 index (a cache), the second trusts it
        ds = EpisodeDataset(root)
        assert ds.meta.size == 8 and ds.task == "cartpole-swingup" and ds.runs == ()
        assert [(s.seed, s.policy, s.run) for s in ds.shards] == [(0, "random", None), (1, "random", None)]
        for a, b in zip(written, ds):
            assert_same(a, b)
        window = WindowDataset(ds, seq_len=4)[(1, 0, 4)]
        assert window["frames"].shape == (4, 8, 8, 3) and window["actions"].shape == (4, 1)
    assert {p.name: p.read_bytes() for p in root.iterdir() if p.name != INDEX_FILE} == before  # never rewritten
    new = Episode(written[0].frames, written[0].actions, written[0].rewards, written[0].terminated, written[0].truncated)
    write_episode(root, 2, new, EpisodeDataset(root).meta, seed=2, policy="random")  # e.g. collect --resume
    ds = EpisodeDataset(root)
    assert ds.episode_ids == [0, 1, 2]
    assert_same(ds[2], written[0])


def test_schema1_discrete_actions_read_as_stored_and_refuse_new_episodes(tmp_path):
    root = tmp_path / "old"
    written = write_schema1_dataset(root, spaces.Discrete(3))
    ds = EpisodeDataset(root)
    assert ds.read(0, "actions").dtype == np.float32 and ds.read(0, "actions").shape == (6, 1)
    assert_same(ds[1], written[1])
    episode = Episode(written[0].frames, np.zeros(6, np.int64), written[0].rewards, written[0].terminated, written[0].truncated)
    with pytest.raises(DatasetError, match=r"schema version 1.*float32 \(T, 1\).*int64 \(T,\).*another directory"):
        write_episode(root, 2, episode, ds.meta, seed=2, policy="random")
    assert not (root / "episode_000002.h5").exists()


def test_collect_darkroom(tmp_path):
    config = CollectConfig(env_id="imaginegym/DarkRoom-v0", policy="random")
    ds = collect(tmp_path / "dark", config, episodes=3, progress=False)
    assert ds.observation_space == GRID and ds.action_space == MOVES
    assert (ds.task, ds.meta.size, ds.meta.action_repeat) == ("[0, 0]", None, 1)
    assert ds.lengths.tolist() == [20, 20, 20]
    for episode in ds:
        assert episode.frames.dtype == np.int64 and episode.frames.shape == (21, 2)
        assert episode.actions.dtype == np.int64 and episode.actions.shape == (20,)
        assert ((episode.frames >= 0) & (episode.frames < 9)).all() and (episode.frames[0] == 4).all()
        assert set(episode.actions.tolist()) <= set(range(5)) and episode.truncated[-1] and not episode.terminated.any()
        steps = np.abs(np.diff(episode.frames, axis=0)).sum(axis=1)
        assert (steps <= 1).all()  # one cell per step at most
    again = collect(tmp_path / "dark", config, episodes=5, resume=True, progress=False)  # resumes episodes 3, 4
    for a, b in zip(ds, again):
        assert_same(a, b)
    goal = collect(tmp_path / "goal", CollectConfig(env_id="imaginegym/DarkRoom-v0", task=(2, 7)), episodes=1, progress=False)
    assert goal.task == "[2, 7]"
    collect(tmp_path / "goal", CollectConfig(env_id="imaginegym/DarkRoom-v0", task=(2, 7)), episodes=2, resume=True, progress=False)
    with pytest.raises(DatasetError, match=r"cannot resume .*--task '\[2, 7\]' \(asked '\[3, 3\]'\)"):
        collect(tmp_path / "goal", CollectConfig(env_id="imaginegym/DarkRoom-v0", task=(3, 3)), episodes=2, resume=True, progress=False)


def test_collect_darkroom_with_ou_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"Ornstein-Uhlenbeck.*Discrete\(5\).*'random'"):
        collect(tmp_path / "dark", CollectConfig(env_id="imaginegym/DarkRoom-v0", policy="ou"), episodes=1, progress=False)
