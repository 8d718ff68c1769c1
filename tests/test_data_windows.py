"""WindowDataset's item convention, coverage, DataLoader workers, alternating sampler."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.utils.data import DataLoader

from imaginegym.data import (
    AlternatingLengthBatchSampler,
    DatasetError,
    DatasetMeta,
    Episode,
    WindowDataset,
    write_episode,
)

META = DatasetMeta(
    env_id="Test-v0",
    task="",
    observation_space=spaces.Box(0, 255, (4, 4, 3), np.uint8),
    action_space=spaces.Box(-100, 100, (2,), np.float32),
    action_repeat=1,
    size=4,
)


def labelled_episode(episode: int, steps: int) -> Episode:
    """Frame t is filled with 10*episode + t; step t has action (t+1, -(t+1)) and reward 100+t."""
    t = np.arange(steps)
    frames = np.broadcast_to((10 * episode + np.arange(steps + 1))[:, None, None, None], (steps + 1, 4, 4, 3))
    return Episode(
        frames=frames.astype(np.uint8),
        actions=np.stack([t + 1, -(t + 1)], axis=1).astype(np.float32),
        rewards=(100 + t).astype(np.float32),
        terminated=t == steps - 1,
        truncated=np.zeros(steps, dtype=bool),
    )


@pytest.fixture
def dataset_dir(tmp_path):
    """Episodes 0, 1, 2 of 6, 9 and 4 steps (7, 10 and 5 frames)."""
    for i, steps in enumerate([6, 9, 4]):
        write_episode(tmp_path, i, labelled_episode(i, steps), META, seed=i, policy="test")
    return tmp_path


def frame_ids(item) -> list[int]:
    return item["frames"][:, 0, 0, 0].tolist()


def test_item_convention_at_episode_start(dataset_dir):
    item = WindowDataset(dataset_dir, seq_len=4)[(1, 0, 4)]
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (4, 4, 4, 3)
    assert frame_ids(item) == [10, 11, 12, 13]
    assert item["action_mask"].tolist() == [False, True, True, True]
    # frame j's action is step j-1's: (j, -j); zeros before the first frame
    assert item["actions"].dtype == torch.float32
    assert item["actions"].tolist() == [[0, 0], [1, -1], [2, -2], [3, -3]]
    assert item["rewards"].tolist() == [0, 100, 101, 102]
    assert item["terminated"].tolist() == [False, False, False, False]


def test_item_convention_mid_episode_and_terminal_frame(dataset_dir):
    item = WindowDataset(dataset_dir, seq_len=3)[(0, 4, 3)]  # frames 4, 5, 6 of 7
    assert frame_ids(item) == [4, 5, 6]
    assert item["action_mask"].tolist() == [True, True, True]
    assert item["actions"][:, 0].tolist() == [4, 5, 6]
    assert item["rewards"].tolist() == [103, 104, 105]
    assert item["terminated"].tolist() == [False, False, True]
    assert item["terminated"].dtype == torch.bool


def test_windows_cover_every_frame(dataset_dir):
    ds = WindowDataset(dataset_dir, seq_len=4, stride=3)
    # 7 frames: starts 0, 3; 10 frames: 0, 3, 6; 5 frames: 0, 1
    assert [ds.window(i) for i in range(len(ds))] == [
        (0, 0, 4), (0, 3, 4), (1, 0, 4), (1, 3, 4), (1, 6, 4), (2, 0, 4), (2, 1, 4)
    ]
    seen = {(e, s + j) for e, s, n in map(ds.window, range(len(ds))) for j in range(n)}
    assert seen == {(e, f) for e, n in enumerate([7, 10, 5]) for f in range(n)}
    assert len(WindowDataset(dataset_dir, seq_len=5)) == 3 + 6 + 1
    with pytest.raises(IndexError):
        ds.window(len(ds))


def test_window_outside_its_episode_is_refused(dataset_dir):
    with pytest.raises(IndexError, match="does not fit episode 2's 5 frames"):
        WindowDataset(dataset_dir, seq_len=4)[(2, 3, 4)]


def test_episode_shorter_than_seq_len_is_named(dataset_dir):
    with pytest.raises(DatasetError, match="episode 2 .* 5 frames, fewer than seq_len=6.*--max-episode-steps"):
        WindowDataset(dataset_dir, seq_len=6)


def test_dataloader_with_two_workers(dataset_dir):
    ds = WindowDataset(dataset_dir, seq_len=4)
    ds[0]  # open files in the parent before workers fork
    assert "h5py" not in pickle.dumps(ds).decode("latin-1")
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    batches = list(loader)
    frames = torch.cat([b["frames"] for b in batches])
    assert frames.shape == (len(ds), 4, 4, 4, 3)
    expected = torch.stack([ds[i]["frames"] for i in range(len(ds))])
    assert torch.equal(frames, expected)
    assert batches[0]["action_mask"].shape == (3, 4)


def test_alternating_sampler_lengths_and_validity(dataset_dir):
    ds = WindowDataset(dataset_dir, seq_len=2)
    sampler = AlternatingLengthBatchSampler(ds, 2, 8, 5, 2, long_every=3, num_batches=9, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 9
    for b, batch in enumerate(batches):
        long = b % 3 == 2
        assert len(batch) == (2 if long else 5)
        for episode, start, length in batch:
            assert length == (8 if long else 2)
            assert 0 <= start and start + length <= ds.num_frames[episode]
    # only episode 1 (10 frames) has room for 8
    assert {w[0] for b in batches[2::3] for w in b} == {1}
    assert list(AlternatingLengthBatchSampler(ds, 2, 8, 5, 2, 3, num_batches=9, seed=0)) == batches
    assert list(sampler) != batches  # a new pass draws new windows


def test_alternating_sampler_through_dataloader(dataset_dir):
    ds = WindowDataset(dataset_dir, seq_len=2)
    sampler = AlternatingLengthBatchSampler(ds, 2, 6, 4, 2, long_every=2, num_batches=4)
    shapes = [batch["frames"].shape for batch in DataLoader(ds, batch_sampler=sampler, num_workers=2)]
    assert shapes == [(4, 2, 4, 4, 3), (2, 6, 4, 4, 3)] * 2


def test_alternating_sampler_refuses_a_length_no_episode_has(dataset_dir):
    with pytest.raises(DatasetError, match="no episode has 11 frames.*longest has 10"):
        AlternatingLengthBatchSampler(WindowDataset(dataset_dir, seq_len=2), 2, 11, 4, 2, 5)


class LatentSource:
    """Episodes of another per-frame array, read like an EpisodeDataset."""

    def __init__(self, dataset_dir):
        from imaginegym.data import EpisodeDataset

        self.inner = EpisodeDataset(dataset_dir)
        self.root, self.lengths, self.episode_ids = dataset_dir, self.inner.lengths, self.inner.episode_ids

    def read(self, i, key, start=0, stop=None):
        if key == "latents":  # (T+1, 2) float32: the frame's label, twice
            return self.inner.read(i, "frames", start, stop)[:, 0, 0, :2].astype(np.float32)
        return self.inner.read(i, key, start, stop)


def test_any_episode_source_and_frames_key(dataset_dir):
    ds = WindowDataset(LatentSource(dataset_dir), seq_len=3, frames_key="latents")
    item = ds[(1, 0, 3)]
    assert item["frames"].tolist() == [[10, 10], [11, 11], [12, 12]]
    assert item["actions"][:, 0].tolist() == [0, 1, 2]


def test_sample_windows_draws_the_recent_share_from_the_newest_episodes(dataset_dir):
    from imaginegym.training.dynamics_trainer import BatchLengths, sample_windows

    windows = WindowDataset(dataset_dir, seq_len=4)
    generator = torch.Generator().manual_seed(0)
    episode_of = lambda batch: (batch["latents"][:, 0, 0, 0, 0] // 10).tolist()  # noqa: E731  (frame ids 10 * episode + t)
    uniform = [e for _ in range(20) for e in episode_of(sample_windows(windows, 40, 4, generator))]
    recent = [e for _ in range(20) for e in episode_of(sample_windows(windows, 40, 4, generator, recent_episodes=1, recent_fraction=0.5))]
    # episode 2 holds 2 of the 13 windows of 4 frames: ~15% uniformly, 50% + 15% of the rest with half of each batch reserved
    assert 0.08 < uniform.count(2) / len(uniform) < 0.24
    assert 0.52 < recent.count(2) / len(recent) < 0.66
    assert {0, 1} <= set(recent)  # the other half still covers everything
    # no window of 6 frames fits in episode 2 (5 frames): every window then comes from the others
    assert set(episode_of(sample_windows(windows, 40, 6, generator, recent_episodes=1, recent_fraction=0.5))) <= {0, 1}
    with pytest.raises(ValueError, match="recent_fraction=1.5 must lie in"):
        BatchLengths(recent_episodes=4, recent_fraction=1.5)
