"""Checks of arguments shared across the package, so every bad count reads the same way."""

from __future__ import annotations

import numbers


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer >= ``minimum`` (NumPy integers too; never a bool or a float).

    Raises:
        ValueError: naming ``name``, the value and the bound, e.g. "num_envs=2.5 must be an integer >= 1".
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)
