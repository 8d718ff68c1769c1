"""Episodes on disk: the HDF5 episode store, collection from real envs, training windows.

    from imaginegym.data import CollectConfig, EpisodeDataset, WindowDataset, collect
    ds = collect("data/cartpole", CollectConfig(task="cartpole-swingup"), episodes=50)
    windows = WindowDataset("data/cartpole", seq_len=16)

The format is documented in docs/data_format.md. `WindowDataset` and
`AlternatingLengthBatchSampler` import torch, so they load on first use: collection
workers stay light.
"""

from __future__ import annotations

from imaginegym.data.collect import TIERS, CollectConfig, collect
from imaginegym.data.format import SCHEMA_VERSION, DatasetError
from imaginegym.data.meta import DatasetMeta
from imaginegym.data.policies import OrnsteinUhlenbeckPolicy, RandomPolicy, make_policy
from imaginegym.data.shard import Episode
from imaginegym.data.store import EpisodeDataset, Run, write_episode

__all__ = [
    "SCHEMA_VERSION",
    "TIERS",
    "AlternatingLengthBatchSampler",
    "CollectConfig",
    "DatasetError",
    "DatasetMeta",
    "Episode",
    "EpisodeDataset",
    "OrnsteinUhlenbeckPolicy",
    "RandomPolicy",
    "Run",
    "WindowDataset",
    "collect",
    "make_policy",
    "write_episode",
]


def __getattr__(name: str):
    if name in ("WindowDataset", "AlternatingLengthBatchSampler"):
        from imaginegym.data import windows

        return getattr(windows, name)
    raise AttributeError(f"module 'imaginegym.data' has no attribute {name!r}")
