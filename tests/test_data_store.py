"""The episode store: round trip, atomic writes, index rebuild, and each bad-input error."""

from __future__ import annotations

import json
import multiprocessing
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from gymnasium import spaces

from imaginegym.data import SCHEMA_VERSION, DatasetError, DatasetMeta, Episode, EpisodeDataset, write_episode
from imaginegym.data.format import INDEX_FILE, METADATA_FILE
from imaginegym.data.store import InMemoryEpisodes


def make_meta(size: int = 8, action_dim: int = 2) -> DatasetMeta:
    return DatasetMeta(
        env_id="Test-v0",
        task="test-task",
        observation_space=spaces.Box(0, 255, (size, size, 3), np.uint8),
        action_space=spaces.Box(-1, 1, (action_dim,), np.float32),
        action_repeat=2,
        size=size,
    )


def make_episode(steps: int, seed: int = 0, size: int = 8, action_dim: int = 2) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        frames=rng.integers(0, 256, (steps + 1, size, size, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, (steps, action_dim)).astype(np.float32),
        rewards=rng.standard_normal(steps).astype(np.float32),
        terminated=np.arange(steps) == steps - 1,
        truncated=np.zeros(steps, dtype=bool),
    )


def write(root: Path, index: int, steps: int = 5, **kwargs) -> Episode:
    episode = make_episode(steps, seed=index)
    write_episode(root, index, episode, make_meta(), seed=100 + index, policy="random", **kwargs)
    return episode


def assert_same(a: Episode, b: Episode) -> None:
    for key in ("frames", "actions", "rewards", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)


def test_round_trip(tmp_path):
    written = [write(tmp_path, i, steps=3 + i, max_episode_steps=9) for i in range(3)]
    ds = EpisodeDataset(tmp_path)
    assert len(ds) == 3 and ds.episode_ids == [0, 1, 2]
    np.testing.assert_array_equal(ds.lengths, [3, 4, 5])
    assert (ds.env_id, ds.task) == ("Test-v0", "test-task")
    assert ds.observation_space == make_meta().observation_space
    assert ds.action_space == make_meta().action_space
    for episode, read in zip(written, ds):
        assert_same(episode, read)
    frames = ds.read(2, "frames", 1, 4)
    assert frames.dtype == np.uint8 and frames.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(frames, written[2].frames[1:4])
    assert ds.read(1, "actions").dtype == np.float32
    shard = ds.shards[1]
    assert (shard.seed, shard.policy, shard.max_episode_steps) == (101, "random", 9)
    with h5py.File(tmp_path / "episode_000001.h5") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert json.loads(f.attrs["action_space"])["shape"] == [2]
        assert f["frames"].chunks == (1, 8, 8, 3) and f["frames"].compression == "gzip"


def test_in_memory_episodes_read_like_the_dataset(tmp_path):
    for i in range(3):
        write(tmp_path, i, steps=3 + i)
    ds = EpisodeDataset(tmp_path)
    memory = InMemoryEpisodes(ds, ("frames", "rewards"), progress=False)
    assert len(memory) == 3
    np.testing.assert_array_equal(memory.lengths, ds.lengths)
    for i in range(3):
        for key, start, stop in (("frames", 0, None), ("frames", 1, 3), ("rewards", 2, None)):
            np.testing.assert_array_equal(memory.read(i, key, start, stop), ds.read(i, key, start, stop))
    assert InMemoryEpisodes.nbytes(ds) == (4 + 5 + 6) * 8 * 8 * 3
    with pytest.raises(KeyError, match="'actions' is not in memory"):
        memory.read(0, "actions")
    with pytest.raises(KeyError, match="unknown keys"):
        InMemoryEpisodes(ds, ("pixels",))


def test_positions_follow_episode_order_with_gaps(tmp_path):
    for i in (7, 2, 4):
        write(tmp_path, i)
    ds = EpisodeDataset(tmp_path)
    assert ds.episode_ids == [2, 4, 7]
    assert_same(ds[0], make_episode(5, seed=2))


def test_pickled_dataset_carries_no_open_files(tmp_path):
    write(tmp_path, 0)
    ds = EpisodeDataset(tmp_path)
    ds.read(0, "frames")
    copy = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(copy.read(0, "frames"), ds.read(0, "frames"))


def test_temp_files_of_unfinished_writes_are_ignored(tmp_path):
    write(tmp_path, 0)
    (tmp_path / ".episode_000001.h5.0123abcd.tmp").write_bytes(b"half a shard")
    assert EpisodeDataset(tmp_path).episode_ids == [0]


@pytest.mark.parametrize("content", [b"not hdf5 at all", "truncated"])
def test_unreadable_shard_names_file_and_fix(tmp_path, content):
    write(tmp_path, 0)
    bad = tmp_path / "episode_000001.h5"
    if content == "truncated":
        full = (tmp_path / "episode_000000.h5").read_bytes()
        content = full[: len(full) // 2]
    bad.write_bytes(content)
    with pytest.raises(DatasetError, match=r"episode_000001\.h5 is not a readable HDF5.*--resume"):
        EpisodeDataset(tmp_path)


def test_newer_schema_asks_for_upgrade(tmp_path):
    write(tmp_path, 0)
    with h5py.File(tmp_path / "episode_000000.h5", "a") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(DatasetError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade imaginegym"):
        EpisodeDataset(tmp_path)


def test_newer_metadata_schema_asks_for_upgrade(tmp_path):
    write(tmp_path, 0)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    (tmp_path / METADATA_FILE).write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(DatasetError, match="schema version 99.*upgrade"):
        EpisodeDataset(tmp_path)


def test_shard_missing_a_dataset_is_named(tmp_path):
    write(tmp_path, 0)
    with h5py.File(tmp_path / "episode_000000.h5", "a") as f:
        del f["rewards"]
    with pytest.raises(DatasetError, match="lacks the dataset.*rewards"):
        EpisodeDataset(tmp_path)


def test_unknown_key_lists_the_keys(tmp_path):
    write(tmp_path, 0)
    with pytest.raises(KeyError, match="'observations'.*frames, actions"):
        EpisodeDataset(tmp_path).read(0, "observations")


def test_appending_other_frame_size_writes_nothing(tmp_path):
    write(tmp_path, 0)
    before = sorted(p.name for p in tmp_path.iterdir())
    meta_before = (tmp_path / METADATA_FILE).read_text()
    with pytest.raises(DatasetError, match=r"observation_space.*\[16, 16, 3\].*another directory"):
        write_episode(tmp_path, 1, make_episode(5, size=16), make_meta(size=16), seed=1, policy="random")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / METADATA_FILE).read_text() == meta_before


def test_episode_not_matching_its_own_spaces_is_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"frames are \(16, 16, 3\) uint8.*is \(8, 8, 3\) uint8"):
        write_episode(tmp_path, 0, make_episode(5, size=16), make_meta(size=8), seed=0, policy="random")
    with pytest.raises(DatasetError, match=r"actions are \(3,\).*\(2,\)"):
        write_episode(tmp_path, 0, make_episode(5, action_dim=3), make_meta(), seed=0, policy="random")
    assert not any(tmp_path.iterdir())


def test_malformed_episode_arrays_are_refused():
    good = make_episode(4)
    with pytest.raises(DatasetError, match=r"rewards has shape \(3,\), expected \(4,\)"):
        Episode(good.frames, good.actions, good.rewards[:3], good.terminated, good.truncated)
    with pytest.raises(DatasetError, match=r"actions are float32 \(4,\), expected float \(4, A\).*integers \(4,\)"):
        Episode(good.frames, good.actions[:, 0], good.rewards, good.terminated, good.truncated)
    with pytest.raises(DatasetError, match="at least one step"):
        Episode(good.frames[:1], good.actions[:0], good.rewards[:0], good.terminated[:0], good.truncated[:0])


def test_existing_shard_is_never_overwritten(tmp_path):
    write(tmp_path, 0)
    before = (tmp_path / "episode_000000.h5").read_bytes()
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_episode(tmp_path, 0, make_episode(5, seed=9), make_meta(), seed=9, policy="random")
    assert (tmp_path / "episode_000000.h5").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_output_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(DatasetError, match="is a file, not a dataset directory"):
        write_episode(path, 0, make_episode(3), make_meta(), seed=0, policy="random")
    with pytest.raises(DatasetError, match="is a file"):
        EpisodeDataset(path)
    assert path.read_text() == "keep me"


def test_directory_without_metadata_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="not an imaginegym dataset.*imaginegym collect"):
        EpisodeDataset(tmp_path)
    with pytest.raises(DatasetError, match="no dataset at"):
        EpisodeDataset(tmp_path / "missing")


def test_stale_or_broken_index_is_rebuilt_from_shards(tmp_path):
    for i in range(3):
        write(tmp_path, i)
    assert len(EpisodeDataset(tmp_path)) == 3  # writes the index
    (tmp_path / "episode_000001.h5").unlink()
    write(tmp_path, 5, steps=8)
    ds = EpisodeDataset(tmp_path)
    assert ds.episode_ids == [0, 2, 5] and ds.lengths.tolist() == [5, 5, 8]
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert [r["file"] for r in index["shards"]] == ["episode_000000.h5", "episode_000002.h5", "episode_000005.h5"]
    (tmp_path / INDEX_FILE).write_text("{ garbage")
    assert EpisodeDataset(tmp_path).episode_ids == [0, 2, 5]


def test_index_is_used_when_fresh(tmp_path):
    write(tmp_path, 0)
    EpisodeDataset(tmp_path)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    index["shards"][0]["policy"] = "from-the-index"
    (tmp_path / INDEX_FILE).write_text(json.dumps(index))
    assert EpisodeDataset(tmp_path).shards[0].policy == "from-the-index"


def _write_from_process(root: str, index: int) -> None:
    write(Path(root), index)


def test_concurrent_writers_without_locks(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(_write_from_process, [(str(tmp_path), i) for i in range(8)])
    ds = EpisodeDataset(tmp_path)
    assert ds.episode_ids == list(range(8))
    for i in range(8):
        assert_same(ds[i], make_episode(5, seed=i))
