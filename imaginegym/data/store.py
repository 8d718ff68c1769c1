"""The episode store: write episodes into a dataset directory and read them back lazily.

Shards are the truth. `index.json` caches each shard's length, seed and policy so a
reader need not open every file; it is keyed by file name, size and modification time,
and a reader rescans any shard the index does not describe (new, rewritten, removed).
No writer takes a lock: each shard appears atomically under its own name, and an index
update lost to a concurrent writer only costs the next reader a rescan.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from imaginegym.data.atomic import atomic_write, write_json_atomic
from imaginegym.data.format import (
    EPISODE_KEYS,
    INDEX_FILE,
    SCHEMA_VERSION,
    DatasetError,
    shard_episode,
    shard_name,
)
from imaginegym.data.meta import DatasetMeta, ensure_meta, read_meta
from imaginegym.data.shard import Episode, ShardInfo, open_shard, read_shard_info, write_shard
from imaginegym.validation import check_count


def check_dataset_dir(root: Path) -> None:
    """Raise DatasetError if `root` is a file, or cannot be created because a parent is."""
    if root.exists() and not root.is_dir():
        raise DatasetError(
            f"{root} is a file, not a dataset directory: choose another output path "
            "(a dataset is a directory of episode_*.h5 shards)"
        )
    parent = next((p for p in root.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DatasetError(
            f"cannot create the dataset directory {root}: {parent} is a file; choose "
            "another output path"
        )


def write_episode(
    root: str | os.PathLike,
    index: int,
    episode: Episode,
    meta: DatasetMeta,
    *,
    seed: int,
    policy: str,
    max_episode_steps: int | None = None,
) -> Path:
    """Write `episode` as shard `index` of the dataset at `root`, atomically.

    The first writer creates `root` and its `dataset.json` from `meta`; later episodes
    must match it. The shard is written under a temporary name, fsynced and linked into
    place, so a crash leaves either no shard or a complete one.

    Args:
        root: dataset directory (created if missing).
        index: episode index; the shard is `episode_{index:06d}.h5`.
        episode: the episode's arrays (see `Episode` for shapes and dtypes).
        meta: env id, task, spaces, action repeat and size of the dataset.
        seed: seed of the env reset and the policy RNG for this episode.
        policy: name of the policy that acted, e.g. "random".
        max_episode_steps: the time limit episodes were cut at, if any.

    Returns:
        Path of the new shard.

    Raises:
        DatasetError: the episode does not match `meta` or the dataset's metadata.
        FileExistsError: the dataset already holds episode `index`.
    """
    root = Path(root)
    check_dataset_dir(root)
    _check_fits(episode, meta)
    root.mkdir(parents=True, exist_ok=True)
    ensure_meta(root, meta)
    final = root / shard_name(index)
    exists = FileExistsError(
        f"{final} already exists: shards are never overwritten; delete it first to "
        f"replace episode {index}"
    )
    if final.exists():
        raise exists
    try:
        with atomic_write(final, overwrite=False) as tmp:
            write_shard(
                tmp, index, episode, meta,
                seed=seed, policy=policy, max_episode_steps=max_episode_steps,
            )
    except FileExistsError:
        raise exists from None  # another writer finished the same episode first
    return final


def _check_fits(episode: Episode, meta: DatasetMeta) -> None:
    frame_shape = episode.frames.shape[1:]
    if frame_shape != meta.observation_space.shape:
        raise DatasetError(
            f"frames are {frame_shape} but the observation space is "
            f"{meta.observation_space.shape}: pass the env's own observation space"
        )
    action_shape = meta.action_space.shape or (1,)  # Discrete actions are stored as (T, 1)
    if episode.actions.shape[1:] != action_shape:
        raise DatasetError(
            f"actions are {episode.actions.shape[1:]} per step but the action space is "
            f"{action_shape}: pass the env's own action space"
        )


def load_index(root: Path, meta: DatasetMeta) -> list[ShardInfo]:
    """Facts about every finished shard in `root`, sorted by episode index.

    Uses `index.json` where it describes a shard's current size and modification time
    (and was built against the same `meta`), and reads the shard otherwise, checking that
    it belongs to the dataset; a changed index is rewritten atomically (skipped silently
    on read-only storage). Temporary files of writers in flight are ignored.

    Raises:
        DatasetError: a shard is unreadable, belongs to another dataset, or is named
            after another episode than the one it holds.
    """
    cached = _read_index_file(root, meta)
    shards, changed = [], False
    with os.scandir(root) as entries:
        for entry in entries:
            episode = shard_episode(entry.name)
            if episode is None:
                continue
            stat = entry.stat()
            record = cached.pop(entry.name, None)
            facts = (episode, stat.st_size, stat.st_mtime_ns)
            if record and (record["episode"], record["bytes"], record["mtime_ns"]) == facts:
                info = ShardInfo(**{k: record[k] for k in ShardInfo.__dataclass_fields__})
            else:
                info = read_shard_info(Path(entry.path), meta)
                changed = True
            if info.episode != episode:
                raise DatasetError(
                    f"{entry.path} holds episode {info.episode} (its 'episode' attribute): "
                    f"rename it to {shard_name(info.episode)}"
                )
            shards.append((info, stat))
    shards.sort(key=lambda item: item[0].episode)
    if changed or cached:
        records = [
            {**asdict(info), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            for info, stat in shards
        ]
        try:
            index = {"schema_version": SCHEMA_VERSION, "dataset": meta.to_json(), "shards": records}
            write_json_atomic(root / INDEX_FILE, index)
        except OSError:
            pass  # read-only storage or a full disk: the index is only a cache
    return [info for info, _ in shards]


_RECORD_TYPES = {
    "file": str, "episode": int, "length": int, "seed": int, "policy": str,
    "max_episode_steps": (int, type(None)), "bytes": int, "mtime_ns": int,
}


def _read_index_file(root: Path, meta: DatasetMeta) -> dict[str, dict[str, Any]]:
    """The well-formed cached records by file name.

    An unreadable index, or one built against other metadata (`dataset.json` was
    replaced, so every shard must be checked again), counts as empty.
    """
    try:
        data = json.loads((root / INDEX_FILE).read_text())
        if data.get("schema_version") != SCHEMA_VERSION or data.get("dataset") != meta.to_json():
            return {}
        return {record["file"]: record for record in data["shards"] if _is_record(record)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _is_record(record: Any) -> bool:
    return isinstance(record, dict) and all(
        isinstance(record.get(key, ...), kind) for key, kind in _RECORD_TYPES.items()
    )


class EpisodeDataset:
    """Read-only, lazy view of a dataset directory: episodes in episode-index order.

    Episodes are addressed by position `0 <= i < len(dataset)`; `episode_ids[i]` is the
    index in the shard's name (they differ when a collection left gaps). HDF5 files are
    opened on first use, at most `max_open_files` at once, and never pickled: a copy sent
    to a DataLoader worker opens its own.

        ds = EpisodeDataset("data/cartpole")
        len(ds), ds.lengths, ds.task, ds.action_space
        ds.read(0, "frames", 10, 20)     # uint8 (10, H, W, 3), only those frames read
        for episode in ds: ...           # Episode objects, one shard at a time

    Raises:
        DatasetError: `path` is not a dataset, or a shard is unreadable or too new.
    """

    def __init__(self, path: str | os.PathLike, max_open_files: int = 64) -> None:
        check_count("max_open_files", max_open_files)
        self.root = Path(path)
        if not self.root.exists():
            raise DatasetError(
                f"no dataset at {self.root}: collect one with "
                f"`imaginegym collect --out {self.root} ...`"
            )
        check_dataset_dir(self.root)
        self.meta: DatasetMeta = read_meta(self.root)
        self.shards: tuple[ShardInfo, ...] = tuple(load_index(self.root, self.meta))
        self.max_open_files = max_open_files
        self._files: OrderedDict[int, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    @property
    def env_id(self) -> str:
        return self.meta.env_id

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def observation_space(self) -> spaces.Space:
        return self.meta.observation_space

    @property
    def action_space(self) -> spaces.Space:
        return self.meta.action_space

    @property
    def episode_ids(self) -> list[int]:
        """Episode index (from the shard name) of each position."""
        return [shard.episode for shard in self.shards]

    @property
    def lengths(self) -> np.ndarray:
        """int64 (N,): steps T of each episode (each has T+1 frames)."""
        return np.array([shard.length for shard in self.shards], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> Episode:
        """The whole episode at position `i`, loaded into memory."""
        return Episode(**{key: self.read(i, key) for key in EPISODE_KEYS})

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def read(self, i: int, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows `start:stop` of array `key` of the episode at position `i`.

        Only those rows are read from disk. `key` is one of frames (T+1, H, W, 3) uint8,
        actions (T, A) float32, rewards / terminated / truncated (T,).

        Raises:
            DatasetError: the shard is damaged where these rows are stored (e.g. a flipped
                bit in a compressed chunk); it names the file and the fix.
        """
        if key not in EPISODE_KEYS:
            raise KeyError(f"unknown key {key!r}: episodes hold {', '.join(EPISODE_KEYS)}")
        array = self._file(i)[key]
        try:
            return array[start:stop]
        except (OSError, RuntimeError) as err:  # HDF5 says "filter returned failure"
            rows = range(len(array))[start:stop]
            shard = self.shards[i % len(self)]
            raise DatasetError(
                f"{self.root / shard.file} (episode {shard.episode}) is damaged: reading "
                f"{key} rows {rows.start}:{rows.stop} failed ({err}). Delete it and run "
                "`imaginegym collect --resume` with the same settings to collect it again"
            ) from None

    def _file(self, i: int) -> h5py.File:
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode position {i} out of range for {len(self)} episodes")
        i %= len(self)
        if self._pid != os.getpid():
            # A forked child must not use the parent's HDF5 handles; drop them unclosed.
            self._files, self._pid = OrderedDict(), os.getpid()
        if i in self._files:
            self._files.move_to_end(i)
            return self._files[i]
        if len(self._files) >= self.max_open_files:
            self._files.popitem(last=False)[1].close()
        self._files[i] = open_shard(self.root / self.shards[i].file)
        return self._files[i]

    def close(self) -> None:
        """Close every open shard (they reopen on the next read)."""
        if self._pid == os.getpid():
            for f in self._files.values():
                f.close()
        self._files.clear()

    def __enter__(self) -> EpisodeDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": OrderedDict()}

    def __repr__(self) -> str:
        return (
            f"EpisodeDataset({str(self.root)!r}, episodes={len(self)}, "
            f"steps={int(self.lengths.sum())}, env_id={self.env_id!r}, task={self.task!r})"
        )


class InMemoryEpisodes:
    """Some arrays of every episode of an `EpisodeDataset`, read once into memory.

    Training draws short windows at random. Decoding their HDF5 chunks each time costs
    more than a small model's step on a GPU (about 70 ms for 128 single frames on one
    core), so a dataset that fits in memory is read once. `read` and `lengths` behave as
    in `EpisodeDataset`; `nbytes` tells beforehand what loading would take.
    """

    def __init__(
        self, dataset: EpisodeDataset, keys: tuple[str, ...] = ("frames",), progress: bool = True
    ) -> None:
        from tqdm.auto import tqdm

        unknown = [key for key in keys if key not in EPISODE_KEYS]
        if unknown:
            raise KeyError(f"unknown keys {unknown}: episodes hold {', '.join(EPISODE_KEYS)}")
        self.lengths = dataset.lengths
        self.keys = tuple(keys)
        self._arrays: dict[str, list[np.ndarray]] = {key: [] for key in keys}
        desc = f"load {'/'.join(keys)} into memory"
        for i in tqdm(range(len(dataset)), desc=desc, disable=not progress):
            for key in keys:
                self._arrays[key].append(dataset.read(i, key))

    @staticmethod
    def nbytes(dataset: EpisodeDataset) -> int:
        """Bytes that holding every episode's frames would take (the other arrays are small)."""
        frames = int((dataset.lengths + 1).sum())
        space = dataset.observation_space
        return frames * int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize

    def __len__(self) -> int:
        return len(self.lengths)

    def read(self, i: int, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        if key not in self._arrays:
            raise KeyError(
                f"{key!r} is not in memory (loaded: {', '.join(self.keys)}); "
                f"pass keys=(..., {key!r})"
            )
        return self._arrays[key][i][start:stop]
