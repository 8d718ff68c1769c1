"""One shard: an HDF5 file holding one complete episode.

Datasets (T = number of steps):
    frames      (T+1, *obs shape)       the observations, in the observation space's dtype:
                                        frames[0] after reset, frames[t+1] after actions[t].
                                        Images (H, W, C) are chunked one frame per chunk
                                        and gzip-compressed; other observations are stored
                                        plain. (The name is older than non-image spaces.)
    actions     float32 (T, A)          action taken at frame t (Box action space), or
                int64   (T,)            its index (Discrete)
    rewards     float32 (T,)            reward for actions[t]
    terminated  bool    (T,)            frames[t+1] is terminal
    truncated   bool    (T,)            the episode was cut after actions[t] (time limit)
Attributes: schema_version, episode, seed, policy, max_episode_steps (when set), run,
run_episode and run_task (for an episode of a run), and the dataset metadata (env_id,
task, observation_space and action_space as JSON, action_repeat, size when set).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from imaginegym.data.format import (
    EPISODE_KEYS,
    METADATA_FILE,
    SCHEMA_VERSION,
    DatasetError,
    check_schema_version,
)
from imaginegym.data.meta import DatasetMeta

_DTYPES = {"rewards": np.float32, "terminated": np.bool_, "truncated": np.bool_}
_META_FIELDS = tuple(field.name for field in fields(DatasetMeta))  # also attributes
_OPTIONAL_META_FIELDS = ("size",)  # None for non-image datasets: no attribute


@dataclass(frozen=True)
class Episode:
    """One complete episode of T steps.

    Attributes:
        frames: (T+1, *observation shape) observations in the observation space's dtype,
            e.g. uint8 (T+1, H, W, 3) images, float32 (T+1, D) vectors, int64 (T+1,)
            Discrete, int64 (T+1, n) MultiDiscrete; frames[0] comes from reset,
            frames[t+1] from step t.
        actions: float32 (T, A) for a Box action space, int64 (T,) for a Discrete one;
            actions[t] is taken at frames[t].
        rewards: float32 (T,); rewards[t] is received for actions[t].
        terminated: bool (T,); True where frames[t+1] is terminal.
        truncated: bool (T,); True where the episode was cut after actions[t].
    """

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        steps = frames.shape[0] - 1 if frames.ndim else 0
        if steps < 1:
            raise DatasetError("an episode needs at least one step (two frames)")
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "actions", _actions_array(self.actions, steps))
        for key in EPISODE_KEYS[2:]:
            array = np.asarray(getattr(self, key), dtype=_DTYPES[key])
            if array.shape != (steps,):
                raise DatasetError(
                    f"{key} has shape {array.shape}, expected ({steps},): an episode with "
                    f"{steps + 1} frames has {steps} steps, one {key} entry per step"
                )
            object.__setattr__(self, key, array)

    @property
    def length(self) -> int:
        """Number of steps T (one fewer than frames)."""
        return self.actions.shape[0]


def _actions_array(actions: np.ndarray, steps: int) -> np.ndarray:
    """float32 (T, A) Box actions, or int64 (T,) Discrete ones (told apart by their rank)."""
    actions = np.asarray(actions)
    if actions.ndim == 2 and actions.shape[0] == steps:
        return actions.astype(np.float32, copy=False)
    if actions.shape == (steps,) and actions.dtype.kind in "iu":
        return actions.astype(np.int64, copy=False)
    raise DatasetError(
        f"actions are {actions.dtype} {actions.shape}, expected float ({steps}, A) for a Box "
        f"action space or integers ({steps},) for a Discrete one: an episode with "
        f"{steps + 1} frames has {steps} steps, one action per step"
    )


@dataclass(frozen=True)
class ShardInfo:
    """Facts about one shard, cached in the dataset index.

    `run`, `run_episode` and `run_task` (the run's task as JSON text) are None unless
    the episode belongs to a run (see `write_episode`).
    """

    file: str
    episode: int
    length: int
    seed: int
    policy: str
    max_episode_steps: int | None
    run: int | None = None
    run_episode: int | None = None
    run_task: str | None = None


def write_shard(
    path: Path,
    episode_index: int,
    episode: Episode,
    meta: DatasetMeta,
    *,
    seed: int,
    policy: str,
    max_episode_steps: int | None,
    run: tuple[int, int, str] | None = None,
) -> None:
    """Write `episode` to a new HDF5 file at `path` (callers pass a temporary path).

    The file is built in memory and then written with plain file I/O: HDF5 cannot close
    a file after a failed write (a full disk), and h5py then crashes the process with a
    segmentation fault (h5py issue 914), while Python's write raises a clean OSError.

    `run` is (run, run_episode, run_task as JSON text) for an episode of a run.
    """
    observation_shape = episode.frames.shape[1:]
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        if len(observation_shape) == 3:  # images: a window decodes only its own frames
            f.create_dataset(
                "frames",
                data=episode.frames,
                chunks=(1, *observation_shape),
                compression="gzip",
                compression_opts=4,
            )
        else:  # a few numbers per step: chunking and compression would cost more than they save
            f.create_dataset("frames", data=episode.frames)
        for key in EPISODE_KEYS[1:]:
            f.create_dataset(key, data=getattr(episode, key))
        attrs: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "episode": episode_index,
            "seed": seed,
            "policy": policy,
            "max_episode_steps": max_episode_steps,
            **meta.to_json(),
        }
        if run is not None:
            attrs["run"], attrs["run_episode"], attrs["run_task"] = run
        for key, value in attrs.items():
            if value is not None:
                f.attrs[key] = json.dumps(value) if isinstance(value, dict) else value
    path.write_bytes(buffer.getbuffer())


def open_shard(path: Path) -> h5py.File:
    """Open a shard for reading, turning HDF5's low-level errors into a clear one."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise DatasetError(
            f"{path} is gone: it was removed after the dataset was opened; open the "
            "dataset again"
        ) from None
    except OSError as err:
        raise DatasetError(
            f"{path} is not a readable HDF5 shard ({err}): it may be truncated or not "
            "written by imaginegym. Delete it and run `imaginegym collect --resume` to "
            "collect that episode again."
        ) from None


def read_shard_info(path: Path, meta: DatasetMeta) -> ShardInfo:
    """Open a shard, check it against the dataset's `meta`, and return its `ShardInfo`.

    Raises:
        DatasetError: the shard is unreadable, too new, lacks a dataset or attribute,
            or belongs to another dataset (other env, task, size, action repeat or spaces).
    """
    with open_shard(path) as f:
        try:
            return _shard_info(path, f, meta)
        except (OSError, RuntimeError) as err:  # HDF5 metadata damaged past the header
            raise DatasetError(
                f"{path} is damaged ({err}). Delete it and run `imaginegym collect "
                "--resume` with the same settings to collect that episode again."
            ) from None


def read_shard_meta(path: Path) -> DatasetMeta:
    """The dataset metadata a shard repeats in its attributes (to rebuild `dataset.json`)."""
    with open_shard(path) as f:
        return _shard_meta(path, f.attrs)


def _shard_info(path: Path, f: h5py.File, meta: DatasetMeta) -> ShardInfo:
    check_schema_version(int(f.attrs.get("schema_version", 0)), path)
    missing = [key for key in EPISODE_KEYS if key not in f]
    if missing:
        raise DatasetError(
            f"{path} lacks the dataset(s) {', '.join(missing)} (it has "
            f"{', '.join(f.keys()) or 'none'}): it was not written by imaginegym's "
            "write_episode; delete it or write it again"
        )
    diffs = meta.differences(_shard_meta(path, f.attrs))
    if diffs:
        raise DatasetError(
            f"{path} does not belong to the dataset in {path.parent}: it differs from its "
            f"{METADATA_FILE} in " + "; ".join(diffs) + f" ({METADATA_FILE} vs shard). It "
            f"was probably copied from another dataset: move it out of {path.parent} or "
            "delete it (`imaginegym collect --resume` collects a deleted episode again)"
        )
    _check_attrs(path, f.attrs, ("episode", "seed", "policy"))
    if "run" in f.attrs:
        _check_attrs(path, f.attrs, ("run_episode", "run_task"))
    return ShardInfo(
        file=path.name,
        episode=int(f.attrs["episode"]),
        length=int(f["actions"].shape[0]),
        seed=int(f.attrs["seed"]),
        policy=str(f.attrs["policy"]),
        max_episode_steps=_optional(f.attrs, "max_episode_steps", int),
        run=_optional(f.attrs, "run", int),
        run_episode=_optional(f.attrs, "run_episode", int),
        run_task=_optional(f.attrs, "run_task", str),
    )


def _optional(attrs: h5py.AttributeManager, key: str, kind: type) -> Any:
    return kind(attrs[key]) if key in attrs else None


def _shard_meta(path: Path, attrs: h5py.AttributeManager) -> DatasetMeta:
    required = tuple(key for key in _META_FIELDS if key not in _OPTIONAL_META_FIELDS)
    _check_attrs(path, attrs, required)
    values = {key: attrs[key] for key in _META_FIELDS if key in attrs}
    try:
        for key in ("observation_space", "action_space"):
            values[key] = json.loads(values[key])
        return DatasetMeta.from_json(values)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise DatasetError(
            f"{path} has unreadable metadata attributes ({type(err).__name__}: {err}): it "
            f"was not written by imaginegym; move it out of {path.parent} or delete it"
        ) from None


def _check_attrs(path: Path, attrs: h5py.AttributeManager, keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if key not in attrs]
    if missing:
        raise DatasetError(
            f"{path} lacks the attribute(s) {', '.join(missing)}: it was not written by "
            f"imaginegym's write_episode; move it out of {path.parent} or delete it"
        )
