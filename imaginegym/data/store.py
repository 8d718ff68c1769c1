"""The episode store: write episodes into a dataset directory and read them back lazily.

Shards are the truth. `index.json` caches each shard's length, seed and policy so a
reader need not open every file; it is keyed by file name, size and modification time,
and a reader rescans any shard the index does not describe (new, rewritten, removed).
No writer takes a lock: each shard appears atomically under its own name, and an index
update lost to a concurrent writer only costs the next reader a rescan.

A run (a learning history: many episodes of one task, in the order they were played) is
a set of shards whose attributes name the run, their order in it and its task; the
dataset groups them (`EpisodeDataset.runs`, `read_run`) and still exposes each episode.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import pairwise
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
from imaginegym.data.meta import DatasetMeta, ensure_meta, json_text, read_meta
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
    run: int | None = None,
    run_episode: int | None = None,
    run_task: Any = None,
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
        run: id (>= 0) of the run (learning history) this episode belongs to, if any.
        run_episode: the episode's place in its run (0, 1, 2, ...); given with `run`.
        run_task: the run's task, anything JSON can hold (e.g. the DarkRoom goal (2, 7));
            the same for every episode of the run.

    Returns:
        Path of the new shard.

    Raises:
        DatasetError: the episode does not match `meta` or the dataset's metadata.
        FileExistsError: the dataset already holds episode `index`.
        ValueError: `run_episode` or `run_task` without `run`, or `run` without
            `run_episode`.
    """
    root = Path(root)
    check_dataset_dir(root)
    _check_fits(episode, meta)
    position = _run_position(run, run_episode, run_task)
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
                seed=seed, policy=policy, max_episode_steps=max_episode_steps, run=position,
            )
    except FileExistsError:
        raise exists from None  # another writer finished the same episode first
    return final


def _check_fits(episode: Episode, meta: DatasetMeta) -> None:
    space, frames = meta.observation_space, episode.frames
    if frames.shape[1:] != space.shape or frames.dtype != space.dtype:
        raise DatasetError(
            f"frames are {frames.shape[1:]} {frames.dtype} per step but the observation "
            f"space {space} is {space.shape} {space.dtype}: pass the env's own observation "
            "space, or cast the observations to its dtype"
        )
    space, actions = meta.action_space, episode.actions
    if not isinstance(space, (spaces.Box, spaces.Discrete)):
        raise DatasetError(
            f"cannot store actions of a {type(space).__name__} action space: datasets hold "
            "Box or Discrete actions; wrap the env so its action space is one of those"
        )
    if isinstance(space, spaces.Discrete) and actions.ndim != 1:
        raise DatasetError(
            f"actions are {actions.shape[1:]} per step but the action space {space} takes "
            "one integer: pass Discrete actions as integers (T,)"
        )
    if isinstance(space, spaces.Box) and actions.shape[1:] != space.shape:
        raise DatasetError(
            f"actions are {actions.shape[1:]} per step but the action space {space} is "
            f"{space.shape}: pass the env's own action space"
        )


def _run_position(run: int | None, run_episode: int | None, run_task: Any) -> tuple | None:
    """(run, run_episode, run_task as JSON text) as `write_shard` takes it; None outside runs."""
    if run is None:
        if run_episode is not None or run_task is not None:
            raise ValueError(
                f"run_episode={run_episode!r} and run_task={run_task!r} place an episode in "
                "a run: give its id too (run=...)"
            )
        return None
    if run_episode is None:
        raise ValueError(
            f"run={run} needs run_episode, the episode's place in the run (0, 1, ...)"
        )
    check_count("run", run, minimum=0)
    check_count("run_episode", run_episode, minimum=0)
    return run, run_episode, json_text(run_task)


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
    "run": (int, type(None)), "run_episode": (int, type(None)), "run_task": (str, type(None)),
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


@dataclass(frozen=True)
class Run:
    """One run of a dataset: episodes of one task in the order they were played.

    Attributes:
        run: the run's id.
        task: its task as written (`run_task`, back from JSON: the DarkRoom goal (2, 7)
            reads as [2, 7]).
        positions: dataset positions of its episodes, in run order.
        run_episodes: their places in the run; 0, 1, 2, ... unless some are missing (a
            writer killed mid-run, or a run still being written).
    """

    run: int
    task: Any
    positions: tuple[int, ...]
    run_episodes: tuple[int, ...]


def group_runs(root: Path, shards: tuple[ShardInfo, ...]) -> tuple[Run, ...]:
    """The runs among `shards` (in dataset order), by run id.

    Raises:
        DatasetError: two shards hold the same place of a run, or a run's shards name
            different tasks.
    """
    members: dict[int, list[tuple[int, int]]] = {}
    for position, shard in enumerate(shards):
        if shard.run is not None:
            members.setdefault(shard.run, []).append((shard.run_episode, position))
    runs = []
    for run, entries in sorted(members.items()):
        entries.sort()
        for (place, a), (next_place, b) in pairwise(entries):
            if place == next_place:
                raise DatasetError(
                    f"{root / shards[a].file} and {shards[b].file} both hold episode {place} "
                    f"of run {run}: one was written twice; delete the one that does not belong"
                )
        tasks = {shards[position].run_task for _, position in entries}
        if len(tasks) > 1:
            raise DatasetError(
                f"the shards of run {run} in {root} name different tasks "
                f"({', '.join(sorted(tasks))}): a run holds episodes of one task; move the "
                "shards of the other task out"
            )
        places, positions = zip(*entries)
        runs.append(Run(run, json.loads(tasks.pop()), positions, places))
    return tuple(runs)


def task_numbers(task: Any, where: str = "task") -> np.ndarray:
    """A task (a number or nested sequences of numbers: (2, 7), ((1, 1), (7, 3))) as float32 (n,), its numbers in order.

    Raises:
        ValueError: the task holds something other than numbers, or nothing.
    """
    try:
        numbers = np.asarray(task, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        numbers = None
    if numbers is None or numbers.size == 0 or not np.isfinite(numbers).all():
        raise ValueError(f"{where}: {task!r} is not a task of finite numbers (like the DarkRoom goal (2, 7), or ((1, 1), (7, 3)))")
    return numbers.astype(np.float32)


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
        ds.runs                          # (Run(run, task, positions, run_episodes), ...)
        ds.read_run(0, "rewards")        # run 0's rewards, its episodes concatenated in order

    Raises:
        DatasetError: `path` is not a dataset, or a shard is unreadable or too new, or
            two shards claim the same place of a run.
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
        self.runs: tuple[Run, ...] = group_runs(self.root, self.shards)
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

        Only those rows are read from disk. `key` is one of frames (T+1, *observation
        shape) in the observation space's dtype (e.g. uint8 (T+1, H, W, 3), int64 (T+1, 2)),
        actions float32 (T, A) or int64 (T,) (Discrete), rewards / terminated / truncated (T,).

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

    def read_run(self, run: int, key: str) -> np.ndarray:
        """Array `key` of every episode of run `run`, concatenated in run order.

        frames: (sum of T+1, *observation shape), each episode's frames from reset on;
        the other keys: (sum of T, ...). Episode k of the run is the k-th block, of
        `lengths[positions[k]]` steps (plus one frame).
        """
        found = next((r for r in self.runs if r.run == run), None)
        if found is None:
            runs = [r.run for r in self.runs]
            raise KeyError(f"no run {run} in {self.root}: it holds runs {runs}")
        return np.concatenate([self.read(i, key) for i in found.positions])

    def task_vectors(self) -> np.ndarray | None:
        """Each episode's task as numbers, float32 (N, task_dim), or None when no episode names a task.

        A run's task (e.g. the DarkRoom goal (2, 7), or a key-door pair ((1, 1), (7, 3))) is flattened
        into its numbers, in order: what a task-conditioned world model trains on.

        Raises:
            DatasetError: some episodes name a task and others do not, or tasks hold other than numbers,
                or differ in how many numbers they hold.
        """
        texts = [shard.run_task for shard in self.shards]
        if all(text is None for text in texts):
            return None
        if any(text is None for text in texts):
            raise DatasetError(
                f"{self.root}: {sum(t is None for t in texts)} of {len(texts)} episodes name no task (run_task): "
                "a task-conditioned model needs every episode's task; move the others out"
            )
        vectors = {text: task_numbers(json.loads(text), where=f"{self.root}'s task {text}") for text in set(texts)}
        sizes = {len(v) for v in vectors.values()}
        if len(sizes) > 1:
            raise DatasetError(f"{self.root}: tasks hold different numbers of values ({sorted(sizes)}): one env's tasks share one shape")
        return np.stack([vectors[text] for text in texts])

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
