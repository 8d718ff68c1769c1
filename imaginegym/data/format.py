"""The on-disk layout of a dataset: file names, schema version, and its error type.

    data/cartpole/
      dataset.json          metadata: env id, task, spaces, size, action repeat
      index.json            cache of per-shard facts; rebuilt from the shards when stale
      episode_000000.h5     one complete episode per shard (of a run, when its
      episode_000001.h5     attributes say so: see docs/data_format.md, "Runs")
      .episode_000002.h5.<random>.tmp   a shard being written (ignored by readers)

See docs/data_format.md for every field.
"""

from __future__ import annotations

import re
from pathlib import Path

from imaginegym.validation import check_count

SCHEMA_VERSION = 2
METADATA_FILE = "dataset.json"
INDEX_FILE = "index.json"
EPISODE_KEYS = ("frames", "actions", "rewards", "terminated", "truncated")

# Six digits, more only when needed: `episode_0000017.h5` is not a second episode 17.
_SHARD_RE = re.compile(r"episode_(\d{6}|[1-9]\d{6,})\.h5")


class DatasetError(ValueError):
    """A dataset on disk is missing, malformed, or does not match what is written."""


class WorkerDiedError(RuntimeError):
    """A collection worker process ended without reporting (killed, or crashed in native code)."""


def shard_name(episode: int) -> str:
    """File name of episode `episode`'s shard, e.g. 17 -> `episode_000017.h5`."""
    return f"episode_{check_count('episode', episode, minimum=0):06d}.h5"


def shard_episode(name: str) -> int | None:
    """The episode index of a shard file name, or None if `name` is not a shard."""
    match = _SHARD_RE.fullmatch(name)
    return int(match.group(1)) if match else None


def check_schema_version(version: int, where: Path) -> None:
    """Raise if `where` was written with a schema this code cannot read."""
    if version > SCHEMA_VERSION:
        raise DatasetError(
            f"{where} has schema version {version}, but this imaginegym reads versions up "
            f"to {SCHEMA_VERSION}: upgrade imaginegym (pip install -U imaginegym)"
        )
