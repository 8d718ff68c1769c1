"""Headless OpenGL for MuJoCo: choose EGL when no display is present.

MuJoCo and dm_control read `MUJOCO_GL` once, when they are first imported, so
`use_egl_if_headless()` must run before `import mujoco`, `dm_control` or `shimmy`.
`imaginegym.envs.dmc` calls it at its top; worker processes that import that module
get the same setting. Start such workers with `worker_context()` (spawn): a child
forked after EGL is up inherits a GL state it cannot use.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from multiprocessing.context import SpawnContext


def use_egl_if_headless() -> str | None:
    """Set `MUJOCO_GL=egl` when there is no display and the user chose no backend.

    A user's own `MUJOCO_GL` (e.g. `glfw` on a desktop) is always kept.

    Returns:
        The `MUJOCO_GL` value now in effect, or None when MuJoCo picks its default
        (a display is present and the variable is unset).
    """
    if "MUJOCO_GL" in os.environ:
        return os.environ["MUJOCO_GL"]
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    os.environ["MUJOCO_GL"] = "egl"
    if "mujoco" in sys.modules:
        warnings.warn(
            "MUJOCO_GL=egl was set after mujoco was imported, so mujoco keeps its default "
            "GL backend and rendering may fail without a display. Import "
            "imaginegym.envs.dmc (or set MUJOCO_GL=egl in the environment) before "
            "importing mujoco, dm_control or shimmy.",
            stacklevel=2,
        )
    return "egl"


def worker_context() -> SpawnContext:
    """The multiprocessing context for processes that render: spawn, never fork.

    Use it for pools, `gymnasium.vector.AsyncVectorEnv(..., context="spawn")` and the
    like; a spawned child re-imports `imaginegym.envs` and sets up EGL itself.
    """
    return multiprocessing.get_context("spawn")
