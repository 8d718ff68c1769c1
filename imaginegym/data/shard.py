"""One shard: an HDF5 file holding one complete episode.

Datasets (T = number of steps):
    frames      uint8   (T+1, H, W, 3)  frames[0] after reset, frames[t+1] after actions[t];
                                        chunked one frame per chunk, gzip-compressed
    actions     float32 (T, A)          action taken at frame t
    rewards     float32 (T,)            reward for actions[t]
    terminated  bool    (T,)            frames[t+1] is terminal
    truncated   bool    (T,)            the episode was cut after actions[t] (time limit)
Attributes: schema_version, episode, seed, policy, max_episode_steps (when set) and the
dataset metadata (env_id, task, observation_space and action_space as JSON, action_repeat,
size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from imaginegym.data.format import EPISODE_KEYS, SCHEMA_VERSION, DatasetError, check_schema_version
from imaginegym.data.meta import DatasetMeta

_DTYPES = {
    "frames": np.uint8,
    "actions": np.float32,
    "rewards": np.float32,
    "terminated": np.bool_,
    "truncated": np.bool_,
}


@dataclass(frozen=True)
class Episode:
    """One complete episode of T steps.

    Attributes:
        frames: uint8 (T+1, H, W, 3); frames[0] comes from reset, frames[t+1] from step t.
        actions: float32 (T, A); actions[t] is taken at frames[t].
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
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise DatasetError(
                f"frames must be uint8 (T+1, H, W, 3), got {self.frames.dtype} "
                f"{self.frames.shape}: record the env's pixel observations"
            )
        steps = self.frames.shape[0] - 1
        if steps < 1:
            raise DatasetError("an episode needs at least one step (two frames)")
        for key in EPISODE_KEYS[1:]:
            array = np.asarray(getattr(self, key), dtype=_DTYPES[key])
            expected_ndim = 2 if key == "actions" else 1
            if array.ndim != expected_ndim or array.shape[0] != steps:
                expected = f"({steps}, A)" if key == "actions" else f"({steps},)"
                raise DatasetError(
                    f"{key} has shape {array.shape}, expected {expected}: an episode with "
                    f"{steps + 1} frames has {steps} steps, one {key} entry per step"
                )
            object.__setattr__(self, key, array)

    @property
    def length(self) -> int:
        """Number of steps T (one fewer than frames)."""
        return self.actions.shape[0]


@dataclass(frozen=True)
class ShardInfo:
    """Facts about one shard, cached in the dataset index."""

    file: str
    episode: int
    length: int
    seed: int
    policy: str
    max_episode_steps: int | None


def write_shard(
    path: Path,
    episode_index: int,
    episode: Episode,
    meta: DatasetMeta,
    *,
    seed: int,
    policy: str,
    max_episode_steps: int | None,
) -> None:
    """Write `episode` to a new HDF5 file at `path` (callers pass a temporary path)."""
    _, height, width, _ = episode.frames.shape
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "frames",
            data=episode.frames,
            chunks=(1, height, width, 3),
            compression="gzip",
            compression_opts=4,
        )
        for key in EPISODE_KEYS[1:]:
            f.create_dataset(key, data=getattr(episode, key))
        attrs: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "episode": episode_index,
            "seed": seed,
            "policy": policy,
            **meta.to_json(),
        }
        if max_episode_steps is not None:
            attrs["max_episode_steps"] = max_episode_steps
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, dict) else value


def open_shard(path: Path) -> h5py.File:
    """Open a shard for reading, turning HDF5's low-level errors into a clear one."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(
            f"{path} is not a readable HDF5 shard ({err}): it may be truncated or not "
            "written by imaginegym. Delete it and run `imaginegym collect --resume` to "
            "collect that episode again."
        ) from None


def read_shard_info(path: Path) -> ShardInfo:
    """Open a shard, check its schema and datasets, and return its `ShardInfo`."""
    with open_shard(path) as f:
        check_schema_version(int(f.attrs.get("schema_version", 0)), path)
        missing = [key for key in EPISODE_KEYS if key not in f]
        if missing:
            raise DatasetError(
                f"{path} lacks the dataset(s) {', '.join(missing)} (it has "
                f"{', '.join(f.keys()) or 'none'}): it was not written by imaginegym's "
                "write_episode; delete it or write it again"
            )
        max_steps = f.attrs.get("max_episode_steps")
        return ShardInfo(
            file=path.name,
            episode=int(f.attrs["episode"]),
            length=int(f["actions"].shape[0]),
            seed=int(f.attrs["seed"]),
            policy=str(f.attrs["policy"]),
            max_episode_steps=None if max_steps is None else int(max_steps),
        )
