"""Spaces survive the JSON round trip of dataset metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gymnasium import spaces

from imaginegym.data.spaces import space_from_json, space_to_json


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(0, 255, (64, 64, 3), np.uint8),
        spaces.Box(-1, 1, (6,), np.float32),
        spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, 2.0]), dtype=np.float64),
        spaces.Box(-np.inf, np.inf, (3,), np.float32),
        spaces.Discrete(5, start=1),
        spaces.Discrete(5),
        spaces.MultiDiscrete([9, 9]),
        spaces.MultiDiscrete([[3, 4], [5, 6]], start=[[1, 0], [0, 2]]),
        spaces.MultiDiscrete([17, 17], dtype=np.int32),
    ],
)
def test_round_trip(space):
    back = space_from_json(json.loads(json.dumps(space_to_json(space))))
    assert back == space and back.dtype == space.dtype


def test_uniform_image_bounds_are_stored_as_numbers():
    data = space_to_json(spaces.Box(0, 255, (64, 64, 3), np.uint8))
    assert (data["low"], data["high"], data["dtype"]) == (0, 255, "uint8")


def test_unsupported_space_is_named():
    with pytest.raises(TypeError, match="Tuple space.*Box, Discrete and MultiDiscrete"):
        space_to_json(spaces.Tuple([spaces.Discrete(2)]))
    with pytest.raises(ValueError, match="unknown space type 'Graph'"):
        space_from_json({"type": "Graph"})
