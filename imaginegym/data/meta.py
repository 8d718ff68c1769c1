"""Dataset-level metadata: what every episode of a dataset has in common.

It lives in `dataset.json`, written atomically by the first writer (a hard link, so of
several concurrent first writers one wins and the others check against it). Every
later episode must match it; the same fields are repeated in each shard's attributes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from imaginegym.data.atomic import write_json_atomic
from imaginegym.data.format import METADATA_FILE, SCHEMA_VERSION, DatasetError, check_schema_version
from imaginegym.data.spaces import space_from_json, space_to_json


@dataclass(frozen=True)
class DatasetMeta:
    """What all episodes of one dataset share.

    Attributes:
        env_id: Gymnasium id the episodes came from, e.g. "imaginegym/DMC-v0".
        task: task name, e.g. "cartpole-swingup" ("" for envs without tasks).
            A dataset of runs over many tasks keeps each run's task in its shards
            (see `write_episode`'s `run_task`) and may leave this "".
        observation_space: the env's observation space: Box of any dtype and shape
            (uint8 (H, W, 3) frames, float vectors), Discrete or MultiDiscrete.
        action_space: the env's action space: Box (usually float32 (A,) in [-1, 1]) or
            Discrete.
        action_repeat: simulator steps per env step (1 for envs without repeat).
        size: frame height and width in pixels for image observations; None otherwise.
    """

    env_id: str
    task: str
    observation_space: spaces.Space
    action_space: spaces.Space
    action_repeat: int
    size: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields, as stored in `dataset.json` and shard attributes."""
        return {
            "env_id": self.env_id,
            "task": self.task,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "action_repeat": int(self.action_repeat),
            "size": None if self.size is None else int(self.size),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetMeta:
        return cls(
            env_id=data["env_id"],
            task=data["task"],
            observation_space=space_from_json(data["observation_space"]),
            action_space=space_from_json(data["action_space"]),
            action_repeat=data["action_repeat"],
            size=data.get("size"),  # absent from shards of non-image datasets
        )

    def differences(self, other: DatasetMeta) -> list[str]:
        """Human-readable lines `field: mine vs other` for each field that differs."""
        mine, theirs = self.to_json(), other.to_json()
        return [f"{k}: {mine[k]} vs {theirs[k]}" for k in mine if mine[k] != theirs[k]]


def read_meta(root: Path) -> DatasetMeta:
    """Read `root/dataset.json`; raise DatasetError naming the problem if it is bad."""
    path = root / METADATA_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(
            f"{root} is not an imaginegym dataset: it has no {METADATA_FILE}; collect one "
            f"with `imaginegym collect --out {root} ...`"
        ) from None
    except ValueError as err:  # not JSON, or not even text
        raise _damaged(path, f"it is not valid JSON: {err}") from None
    version = data.get("schema_version", 0) if isinstance(data, dict) else None
    if not isinstance(version, int):
        raise _damaged(path, "it is not a JSON object with an integer schema_version")
    check_schema_version(version, path)
    try:
        return DatasetMeta.from_json(data)
    except KeyError as err:
        raise _damaged(path, f"it lacks the field {err}") from None
    except (ValueError, TypeError, AttributeError) as err:
        raise _damaged(path, f"{type(err).__name__}: {err}") from None


def _schema_version(path: Path) -> int:
    return json.loads(path.read_text()).get("schema_version", 0)


def task_text(task: Any) -> str:
    """`task` as `DatasetMeta.task` stores it: a str as it is, anything else as JSON text,
    e.g. the DarkRoom goal (2, 7) -> "[2, 7]"."""
    return task if isinstance(task, str) else json_text(task)


def json_text(value: Any) -> str:
    """`value` as JSON text; NumPy arrays and numbers become lists and numbers."""
    return json.dumps(value, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(
        f"{value!r} is not JSON-serialisable: give a task as numbers, strings and lists"
    )


def _damaged(path: Path, problem: str) -> DatasetError:
    return DatasetError(
        f"{path} is damaged ({problem}). Delete it and run `imaginegym collect --resume` "
        "with the dataset's settings: it is written again from the shards"
    )


def ensure_meta(root: Path, meta: DatasetMeta) -> None:
    """Create `root/dataset.json` from `meta`, or check that the existing one matches.

    Raises:
        DatasetError: the dataset holds episodes of another env, task, size or space;
            nothing is written.
    """
    path = root / METADATA_FILE
    if not path.exists():
        try:
            write_json_atomic(
                path, {"schema_version": SCHEMA_VERSION, **meta.to_json()}, overwrite=False
            )
            return
        except FileExistsError:
            pass  # another writer created it first; check against theirs
    existing = read_meta(root)
    if isinstance(meta.action_space, spaces.Discrete) and _schema_version(path) < 2:
        raise DatasetError(
            f"cannot add this episode to {root}: its {METADATA_FILE} has schema version 1, "
            "whose shards store Discrete actions as float32 (T, 1), and new shards store "
            "them as int64 (T,). Write it to another directory (--out)"
        )
    diffs = existing.differences(meta)
    if diffs:
        raise DatasetError(
            f"cannot add this episode to {root}: it differs from the dataset in "
            + "; ".join(f"{d} (dataset vs episode)" for d in diffs)
            + ". Write it to another directory (--out), or collect with the dataset's "
            "settings."
        )
