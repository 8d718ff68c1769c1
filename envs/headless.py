"""Headless OpenGL for MuJoCo: choose EGL when no display is present.

MuJoCo and dm_control read `MUJOCO_GL` once, when they are first imported, so
`use_egl_if_headless()` must run before `import mujoco`, `dm_control` or `shimmy`.
`imaginegym.envs.dmc` calls it at its top; worker processes that import that module
get the same setting. Start such workers with `worker_context()` (spawn): a child
forked after EGL is up inherits a GL state it cannot use.
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import os
import sys
import warnings
from multiprocessing.context import SpawnContext


def load_llvm_users_before_mesa() -> None:
    """Load Triton's LLVM before Mesa's, so both can live in one process.

    Mesa renders EGL on the CPU with llvmpipe, which loads its own LLVM. Triton (installed
    with CUDA builds of torch, and imported by torch's optimizers through torch._dynamo)
    bundles another; loading Triton's after Mesa's crashes the process with a segmentation
    fault, while the other order works. Call this before the first EGL context; it loads
    only Triton's extension (not torch) and does nothing when Triton is absent.
    """
    if "triton._C.libtriton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        importlib.import_module("triton._C.libtriton")
    except ImportError:  # a Triton without its compiled core cannot clash either
        pass


def use_egl_if_headless() -> str | None:
    """Set `MUJOCO_GL=egl` when there is no display and the user chose no backend.

    A user's own `MUJOCO_GL` (e.g. `glfw` on a desktop) is always kept.

    Returns:
        The `MUJOCO_GL` value now in effect, or None when MuJoCo picks its default
        (a display is present and the variable is unset).
    """
    if "MUJOCO_GL" in os.environ:
        if os.environ["MUJOCO_GL"] == "egl":
            load_llvm_users_before_mesa()
        return os.environ["MUJOCO_GL"]
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    os.environ["MUJOCO_GL"] = "egl"
    load_llvm_users_before_mesa()
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
