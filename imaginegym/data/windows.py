"""Sequence windows for training: a lazy PyTorch Dataset and an alternating-length sampler.

Item convention (one window of L consecutive frames of one episode):

    frames       (L, *obs shape)       frames[j], in the observation space's dtype
                                       (uint8 (L, H, W, 3) images, int64 (L, 2) DarkRoom)
    actions      float32 (L, A)        the action that led INTO frames[j] (int64 (L,) for
                                       Discrete actions); zeros where frames[j] is the
                                       episode's first frame
    action_mask  bool    (L,)          False where frames[j] has no preceding action
    rewards      float32 (L,)          reward for the action leading into frames[j]
                                       (0 at the episode's first frame)
    terminated   bool    (L,)          frames[j] is terminal

So the window starting at frame s holds the episode's actions[s-1 : s+L-1] (shifted by
one: row j is the action taken at frame j-1), which is what a dynamics model conditions
frame j on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from imaginegym.data.format import DatasetError
from imaginegym.data.store import EpisodeDataset

Window = tuple[int, int, int]
"""(episode position, first frame, number of frames)."""


class EpisodeSource(Protocol):
    """What `WindowDataset` reads: an `EpisodeDataset`, or episodes of another per-frame
    array (e.g. the tokenizer's latents) offering the same lazy reads."""

    root: Path

    @property
    def lengths(self) -> np.ndarray: ...  # int64 (N,): steps T per episode

    @property
    def episode_ids(self) -> list[int]: ...

    def read(self, i: int, key: str, start: int = 0, stop: int | None = None) -> np.ndarray: ...


def _pad_start(array: np.ndarray, pad: int) -> np.ndarray:
    """`array` with `pad` rows of zeros before its first row, whatever its rank."""
    return np.pad(array, [(pad, 0)] + [(0, 0)] * (array.ndim - 1))


class WindowDataset(Dataset):
    """Windows of `seq_len` frames every `stride` frames, read lazily from HDF5 shards.

    Integer items enumerate, for each episode of T+1 frames, the windows starting at
    0, stride, 2*stride, ... plus one ending at frame T, so every frame 0..T is covered.
    Items may also be addressed as `(episode, start, length)` tuples (a `Window`), which
    is how `AlternatingLengthBatchSampler` asks for windows of other lengths. Each item
    is a dict of tensors following the module's item convention.

    Nothing is loaded up front: shards are opened on first read, separately in each
    DataLoader worker (HDF5 handles are never pickled).

    Args:
        source: a dataset directory, or an `EpisodeSource` such as an `EpisodeDataset`.
        seq_len: frames per integer item.
        stride: frames between the starts of consecutive integer items.
        frames_key: the per-frame array returned as "frames", e.g. "latents" for a
            source of encoded episodes; like frames it has T+1 rows.

    Raises:
        DatasetError: an episode has fewer than `seq_len` frames.
    """

    def __init__(
        self,
        source: str | os.PathLike | EpisodeSource,
        seq_len: int,
        stride: int = 1,
        frames_key: str = "frames",
    ) -> None:
        if seq_len < 1 or stride < 1:
            raise ValueError(f"seq_len and stride must be >= 1, got {seq_len} and {stride}")
        is_path = isinstance(source, (str, os.PathLike))
        self.episodes: EpisodeSource = EpisodeDataset(source) if is_path else source
        self.seq_len, self.stride, self.frames_key = seq_len, stride, frames_key
        self.num_frames = self.episodes.lengths + 1  # (N,) frames per episode
        short = np.flatnonzero(self.num_frames < seq_len)
        if short.size:
            i = int(short[0])
            raise DatasetError(
                f"episode {self.episodes.episode_ids[i]} of {self.episodes.root} has "
                f"{self.num_frames[i]} frames, fewer than seq_len={seq_len}: lower "
                "seq_len, or collect longer episodes (raise --max-episode-steps)"
            )
        last_start = self.num_frames - seq_len
        counts = -(-last_start // stride) + 1  # ceil(last_start / stride) + 1 windows
        self._offsets = np.concatenate([[0], np.cumsum(counts)])  # (N+1,)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def window(self, index: int) -> Window:
        """The `(episode, start, length)` of integer item `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        episode = int(np.searchsorted(self._offsets, index, side="right")) - 1
        k = index - int(self._offsets[episode])
        start = min(k * self.stride, int(self.num_frames[episode]) - self.seq_len)
        return episode, start, self.seq_len

    def __getitem__(self, item: int | Window) -> dict[str, torch.Tensor]:
        episode, start, length = self.window(item) if isinstance(item, int) else item
        frames_in_episode = int(self.num_frames[episode])
        if not (0 <= start and length >= 1 and start + length <= frames_in_episode):
            raise IndexError(
                f"window (episode={episode}, start={start}, length={length}) does not fit "
                f"episode {episode}'s {frames_in_episode} frames"
            )
        read = self.episodes.read
        # Step t leads from frame t to frame t+1, so frame j's incoming step is j-1.
        first_step, stop_step = max(start - 1, 0), start + length - 1
        pad = 1 if start == 0 else 0  # the episode's first frame has no incoming step
        actions = read(episode, "actions", first_step, stop_step)  # (L - pad, A) or (L - pad,)
        action_mask = np.ones(length, dtype=bool)
        action_mask[:pad] = False
        rewards = read(episode, "rewards", first_step, stop_step)  # (L - pad,)
        terminated = read(episode, "terminated", first_step, stop_step)  # (L - pad,)
        return {
            "frames": torch.from_numpy(read(episode, self.frames_key, start, start + length)),
            "actions": torch.from_numpy(_pad_start(actions, pad)),
            "action_mask": torch.from_numpy(action_mask),
            "rewards": torch.from_numpy(_pad_start(rewards, pad)),
            "terminated": torch.from_numpy(_pad_start(terminated, pad)),
        }


class AlternatingLengthBatchSampler(Sampler[list[Window]]):
    """Batches of `short_batch_size` windows of `short_len` frames, with every
    `long_every`-th batch instead `long_batch_size` windows of `long_len` frames.

    Every window in a batch has the same length, so default collation stacks them. Starts
    are uniform over all valid positions of the dataset (episodes shorter than a length
    are skipped for that length). Each pass (`iter`) draws new windows from
    `seed` and the pass number, so runs are reproducible.

        sampler = AlternatingLengthBatchSampler(ds, 16, 64, 32, 8, long_every=10)
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=2)

    Args:
        dataset: the windows' source; its own `seq_len` does not matter here.
        num_batches: batches per pass (default: enough short batches to see about
            every frame once).
    """

    def __init__(
        self,
        dataset: WindowDataset,
        short_len: int,
        long_len: int,
        short_batch_size: int,
        long_batch_size: int,
        long_every: int,
        num_batches: int | None = None,
        seed: int = 0,
    ) -> None:
        if long_every < 1:
            raise ValueError(
                f"long_every must be >= 1 (every n-th batch is long), got {long_every}"
            )
        self.num_frames = dataset.num_frames
        self.lengths = (short_len, long_len)
        self.batch_sizes = (short_batch_size, long_batch_size)
        self.long_every = long_every
        longest = int(self.num_frames.max(initial=0))
        for length in self.lengths:
            if length > longest:
                raise DatasetError(
                    f"no episode has {length} frames (the longest has {longest}): lower "
                    "the window length or collect longer episodes"
                )
        frames_per_pass = int(self.num_frames.sum())
        self.num_batches = num_batches or max(1, frames_per_pass // (short_len * short_batch_size))
        self.seed = seed
        self._passes = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[Window]]:
        rng = np.random.default_rng((self.seed, self._passes))
        self._passes += 1
        for b in range(self.num_batches):
            is_long = (b + 1) % self.long_every == 0
            length, batch_size = self.lengths[is_long], self.batch_sizes[is_long]
            starts_per_episode = np.maximum(self.num_frames - length + 1, 0)  # (N,)
            flat = rng.integers(0, starts_per_episode.sum(), size=batch_size)
            offsets = np.cumsum(starts_per_episode)
            episodes = np.searchsorted(offsets, flat, side="right")
            starts = flat - (offsets[episodes] - starts_per_episode[episodes])
            yield [(int(e), int(s), length) for e, s in zip(episodes, starts)]
