"""Headless OpenGL for MuJoCo: choose EGL when no display is present, and keep it safe.

MuJoCo and dm_control read `MUJOCO_GL` once, when they are first imported, so
`use_egl_if_headless()` must run before `import mujoco`, `dm_control` or `shimmy`.
`import imaginegym` calls it, and so does `imaginegym.envs.dmc`; worker processes that
import either get the same setting.

Two hazards of Mesa's EGL on the CPU (llvmpipe), measured with Mesa 22/LLVM 15:
- LLVM twice. Mesa dlopens its driver (`swrast_dri.so`, linked to `libLLVM-15.so`) with
  RTLD_GLOBAL at the first `eglInitialize`: the first `mujoco.Renderer`, or the import of
  dm_control (so of `shimmy` and `dm_control.suite`) with MUJOCO_GL=egl, whose EGL module
  opens a display at import; `import mujoco` alone maps only libEGL. Triton (which torch's
  optimizers import through torch._dynamo) links its own LLVM statically; loaded after
  Mesa's, its symbols resolve to Mesa's and the process segfaults. The other order works,
  so `load_llvm_users_before_mesa` loads Triton first, or keeps it out when too late.
- Fork. The first GL context starts llvmpipe's render threads; a child forked after that
  inherits the context's state but not its threads, and its first render waits for them
  forever. A display alone (dm_control's import) forks safely. `check_fork_safe_gl` turns
  the hang into an error; start rendering workers with `worker_context()` (spawn).
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import os
import sys
import warnings
from multiprocessing.context import SpawnContext

_gl_pid: int | None = None
"""The process that made (or held, at a fork) the GL state this address space carries; None: no GL yet."""


def _display_present() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _shared_llvm_loaded() -> bool:
    """Whether a shared libLLVM (Mesa's; newer Mesa maps it through libgallium) is in this process."""
    try:
        with open("/proc/self/maps") as maps:
            return any("/libLLVM" in line or "/libgallium" in line for line in maps)
    except OSError:  # no procfs, so not Linux, so no Mesa EGL either
        return False


def load_llvm_users_before_mesa() -> None:
    """Load Triton's LLVM before Mesa's, or block Triton if Mesa's is already loaded.

    Call it before the first EGL display (see the module docstring). It loads only
    Triton's extension (not torch) and does nothing when Triton is absent or loaded.
    When Mesa's LLVM came first, `import triton` is made to fail (once, with a warning):
    torch then treats Triton as absent, which costs nothing where Mesa renders on the CPU.
    """
    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:  # loaded, blocked or absent
        return
    if _shared_llvm_loaded():
        sys.modules["triton"] = None  # `import triton` now raises ImportError
        warnings.warn(
            "Mesa's LLVM (EGL rendering on the CPU; `import shimmy` or `dm_control` with MUJOCO_GL=egl loads it) is "
            "already in this process, and Triton's LLVM loaded after it crashes the process, so imaginegym blocks "
            "`import triton`: torch runs without Triton. To keep Triton, import imaginegym before shimmy and dm_control.",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    try:
        importlib.import_module("triton._C.libtriton")
    except ImportError:  # a Triton without its compiled core cannot clash either
        pass


def use_egl_if_headless() -> str | None:
    """Set `MUJOCO_GL=egl` when there is no display and the user chose no backend.

    A user's own `MUJOCO_GL` (e.g. `glfw` on a desktop) is always kept. With EGL,
    Triton's LLVM is loaded (or blocked) first: `load_llvm_users_before_mesa`.

    Returns:
        The `MUJOCO_GL` value now in effect, or None when MuJoCo picks its default
        (a display is present and the variable is unset).
    """
    if "MUJOCO_GL" not in os.environ and not _display_present():
        os.environ["MUJOCO_GL"] = "egl"
        if "mujoco" in sys.modules:
            warnings.warn(
                "MUJOCO_GL=egl was set after mujoco was imported, so mujoco keeps its default "
                "GL backend and rendering may fail without a display. Import "
                "imaginegym (or set MUJOCO_GL=egl in the environment) before "
                "importing mujoco, dm_control or shimmy.",
                stacklevel=2,
            )
    if os.environ.get("MUJOCO_GL") == "egl":
        load_llvm_users_before_mesa()
    return os.environ.get("MUJOCO_GL")


def _llvmpipe_threads_running() -> bool:
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:  # no procfs: no Mesa either
        return False
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                if comm.read().startswith("llvmpipe"):
                    return True
        except OSError:  # the thread ended meanwhile
            continue
    return False


def _note_gl_before_fork() -> None:
    # Catches contexts made without `check_fork_safe_gl`, e.g. by dm_control's Physics.render.
    global _gl_pid
    if _gl_pid is None and _llvmpipe_threads_running():
        _gl_pid = os.getpid()


if hasattr(os, "register_at_fork"):  # absent on Windows, which cannot fork
    os.register_at_fork(before=_note_gl_before_fork)


def check_fork_safe_gl() -> None:
    """Call before making a GL context: raises RuntimeError in a child forked from a process with GL state.

    Such a child's first render would hang (see the module docstring). Otherwise this
    process is recorded as holding GL state, for the children it forks later.
    """
    global _gl_pid
    if _gl_pid is None:
        _gl_pid = os.getpid()
    elif _gl_pid != os.getpid():
        raise RuntimeError(
            f"this process (pid {os.getpid()}) was forked from pid {_gl_pid} after that one had made an OpenGL "
            "context, and a forked child cannot render with its parent's GL state (Mesa's EGL hangs). Start "
            "rendering workers with spawn: imaginegym.envs.worker_context(), AsyncVectorEnv(..., context='spawn'), "
            "or gym.make_vec('imaginegym/DMC-v0', num_envs=...) without a vectorization_mode."
        )


def worker_context() -> SpawnContext:
    """The multiprocessing context for processes that render: spawn, never fork.

    Use it for pools, `gymnasium.vector.AsyncVectorEnv(..., context="spawn")` and the
    like; a spawned child re-imports `imaginegym.envs` and sets up EGL itself.
    """
    return multiprocessing.get_context("spawn")
