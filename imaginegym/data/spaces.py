"""Gymnasium spaces to and from JSON, for dataset metadata and shard attributes.

Box bounds that are the same everywhere are stored as one number, so an image space
is a few bytes rather than H*W*3 numbers. Infinite bounds use Python's JSON
`Infinity`, which `json.loads` reads back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def _bound_to_json(bound: np.ndarray) -> float | int | list:
    flat = bound.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return flat[0].item()
    return bound.tolist()


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON-ready dict describing `space` (Box, Discrete or MultiDiscrete).

    Example: `Box(-1, 1, (1,), float32)` -> `{"type": "Box", "shape": [1],
    "dtype": "float32", "low": -1.0, "high": 1.0}`; `MultiDiscrete([9, 9])` ->
    `{"type": "MultiDiscrete", "nvec": [9, 9], "start": [0, 0], "dtype": "int64"}`.
    """
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _bound_to_json(space.low),
            "high": _bound_to_json(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": str(space.dtype),
        }
    raise TypeError(
        f"cannot store a {type(space).__name__} space in a dataset: only Box, Discrete and "
        "MultiDiscrete are supported; wrap the env so its spaces are one of those"
    )


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    """The space described by a dict from `space_to_json`."""
    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        shape = tuple(data["shape"])
        low = np.broadcast_to(np.asarray(data["low"], dtype=dtype), shape)
        high = np.broadcast_to(np.asarray(data["high"], dtype=dtype), shape)
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(data["nvec"], dtype=data["dtype"], start=data["start"])
    raise ValueError(
        f"unknown space type {kind!r} in dataset metadata (known: Box, Discrete, "
        "MultiDiscrete): "
        "was the dataset written by a newer imaginegym?"
    )
