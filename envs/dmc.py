"""DeepMind Control suite tasks as pixel Gymnasium envs, rendered fast offscreen.

    env = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=64, action_repeat=2)

The task runs through Shimmy's `DmControlCompatibilityV0`; frames come from one
`mujoco.Renderer` per env with shadows, reflections, the skybox and multisampling off
and an offscreen buffer the size of the frame (MuJoCo's defaults render 4x multisampled
shadows into a 640x480 buffer, and dm_control's `Physics.render` builds a new camera at
every call); `benchmarks/render_speed.py` measures the difference. The renderer opens at
the first frame, so an env made only to read its spaces (as `AsyncVectorEnv` makes one in
the parent) holds no GL context, and workers forked after it can still render.

`gym.make_vec("imaginegym/DMC-v0", num_envs=8, task=...)` runs each env in a worker
process started with spawn (`make_vector_env`).
"""

from __future__ import annotations

import atexit
import weakref
from functools import partial
from typing import Any

from imaginegym.resources import check_fits
from imaginegym.validation import check_count

from .headless import check_fork_safe_gl, use_egl_if_headless

use_egl_if_headless()  # before mujoco, dm_control and shimmy read MUJOCO_GL

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from dm_control import suite  # noqa: E402
from shimmy.dm_control_compatibility import DmControlCompatibilityV0  # noqa: E402

TASKS: tuple[str, ...] = tuple(f"{domain}-{task}" for domain, task in suite.ALL_TASKS)
"""Every dm_control suite task as a `domain-task` string, e.g. "ball_in_cup-catch"."""
_NO_BOUND = 1e9  # action bounds this large mean "unbounded" (lqr declares +-1e10)


# Renderers still open at exit. MuJoCo terminates the EGL display in an atexit hook, and
# a renderer freed later (by the garbage collector) prints EGL errors: close them first.
_open_renderers: weakref.WeakSet[mujoco.Renderer] = weakref.WeakSet()


def _close_open_renderers() -> None:
    for renderer in list(_open_renderers):
        renderer.close()


def fast_renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    """One offscreen renderer for (size, size, 3) uint8 frames, without the costly extras.

    Sets `model`'s multisampling to 0 and its offscreen buffer to size x size (both are
    read when the GL context is made, so before the renderer), then switches off
    shadows, reflections and the skybox in the renderer's scene. The model can no
    longer render frames larger than `size` afterwards. Raises RuntimeError in a child
    forked from a process that had made a GL context (`check_fork_safe_gl`).
    """
    check_fork_safe_gl()
    model.vis.quality.offsamples = 0
    model.vis.global_.offwidth = size
    model.vis.global_.offheight = size
    renderer = mujoco.Renderer(model, height=size, width=size)
    for flag in (
        mujoco.mjtRndFlag.mjRND_SHADOW,
        mujoco.mjtRndFlag.mjRND_REFLECTION,
        mujoco.mjtRndFlag.mjRND_SKYBOX,
    ):
        renderer.scene.flags[flag] = False
    _open_renderers.add(renderer)
    # (Re-)registered after MuJoCo's hook, made with the first GL context, so runs before it.
    atexit.unregister(_close_open_renderers)
    atexit.register(_close_open_renderers)
    return renderer


class DMCEnv(gym.Env[np.ndarray, np.ndarray]):
    """A dm_control suite task with pixel observations and an action repeat.

    Observations: `uint8 (size, size, 3)` frames from camera `camera_id`, a new array
    at every call. Actions: `float32 (A,)` in [-1, 1], rescaled to the task's action
    bounds (`dmc_action`); values outside [-1, 1] are clipped. Each `step` repeats the
    action `action_repeat` times (fewer if the episode ends) and returns the summed
    reward.
    Episodes end at dm_control's time limit, `truncated=True` after
    ceil(time_limit / control_timestep / action_repeat) steps (cartpole: 1000 / 2 =
    500), or with `terminated=True` when dm_control ends one with discount 0. A `step`
    before the first `reset` or after the episode ended raises `gymnasium.error.ResetNeeded`.

    Args:
        task: a dm_control suite task as "domain-task", one of `TASKS`.
        size: frame height and width in pixels.
        action_repeat: dm_control steps per env step.
        camera_id: the model's camera to render from (-1: MuJoCo's free camera).
        include_state: if True, `info["state"]` holds the task's proprioceptive
            observations concatenated in spec order, `float64 (state_space.shape[0],)`.
        time_limit: episode length in seconds of simulated time; None keeps the
            task's own (10 s for cartpole).
        render_mode: "rgb_array" (`render()` returns the current frame) or None.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        task: str = "cartpole-swingup",
        size: int = 64,
        action_repeat: int = 2,
        camera_id: int = 0,
        include_state: bool = False,
        time_limit: float | None = None,
        render_mode: str | None = "rgb_array",
    ) -> None:
        if task not in TASKS:
            raise ValueError(
                f"unknown dm_control task {task!r}: give it as 'domain-task', one of "
                + ", ".join(TASKS)
            )
        if size < 1:
            raise ValueError(f"size={size}: frames need at least 1 pixel, e.g. size=64")
        if action_repeat < 1:
            raise ValueError(f"action_repeat={action_repeat}: use 1 or more")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: use 'rgb_array' or None")
        self.task, self.size, self.action_repeat = task, size, action_repeat
        self.camera_id, self.include_state = camera_id, include_state
        self.render_mode = render_mode

        domain, task_name = task.split("-", 1)
        task_kwargs = {} if time_limit is None else {"time_limit": time_limit}
        self._dmc = DmControlCompatibilityV0(suite.load(domain, task_name, task_kwargs))
        self._physics = self._dmc.physics
        ncam = self._physics.model.ncam
        if not -1 <= camera_id < ncam:
            raise ValueError(
                f"camera_id={camera_id}: {task} has cameras -1 (MuJoCo's free camera) "
                f"to {ncam - 1}"
            )
        self._renderer: mujoco.Renderer | None = None  # opened by the first frame (see the module docstring)
        self._frame = np.zeros((size, size, 3), np.uint8)
        # Why `step` would need a reset first; dm_env would otherwise start a new episode silently.
        self._needs_reset: str | None = "before the first reset()"

        spec = self._dmc.action_spec()
        # Unbounded dimensions (lqr) pass through unscaled.
        bounded = np.maximum(np.abs(spec.minimum), np.abs(spec.maximum)) < _NO_BOUND
        self._action_center = np.where(bounded, (spec.maximum + spec.minimum) / 2.0, 0.0)
        self._action_scale = np.where(bounded, (spec.maximum - spec.minimum) / 2.0, 1.0)
        self.action_space = gym.spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        state_dim = sum(int(np.prod(s.shape)) for s in self._dmc.observation_spec().values())
        self.state_space = gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float64)
        self.metadata = {
            **self.metadata,
            "render_fps": 1.0 / (self._dmc.control_timestep() * action_repeat),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; the same seed gives the same initial state and frames."""
        self._check_open("reset()")
        super().reset(seed=seed)
        state, _ = self._dmc.reset(seed=seed)
        self._needs_reset = None
        return self._observe(), self._info(state)

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply `action` (float (A,) in [-1, 1]) for `action_repeat` dm_control steps."""
        self._check_open("step()")
        if self._needs_reset is not None:
            raise gym.error.ResetNeeded(f"{self.task}: step() called {self._needs_reset}; call reset() first")
        control = self.dmc_action(action)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            state, r, terminated, truncated, _ = self._dmc.step(control)
            reward += float(r)
            if terminated or truncated:
                self._needs_reset = f"after the episode was {'terminated' if terminated else 'truncated'}"
                break
        return self._observe(), reward, terminated, truncated, self._info(state)

    def dmc_action(self, action: np.ndarray) -> np.ndarray:
        """The dm_control action, `float64 (A,)`, for an env action clipped to [-1, 1].

        [-1, 1] maps linearly onto the task's action bounds (e.g. [-0.8, 0.8] for some
        quadruped joints; most suite tasks already use [-1, 1]); lqr's unbounded
        actions pass through unscaled.
        """
        try:
            array = np.asarray(action)
            valid = array.dtype.kind in "iuf" and array.shape == self.action_space.shape and bool(np.all(np.isfinite(array)))
        except ValueError:  # a ragged nested list
            valid = False
        if not valid:
            raise ValueError(
                f"action {action!r} for {self.task}: expected finite floats of shape "
                f"{self.action_space.shape} in [-1, 1]"
            )
        return self._action_center + np.clip(array.astype(np.float64), -1.0, 1.0) * self._action_scale

    def render(self) -> np.ndarray | None:
        """The current frame, `uint8 (size, size, 3)` (a copy), or None if render_mode is None."""
        return None if self.render_mode is None else self._frame.copy()

    def close(self) -> None:
        """Free the GL context and the simulation; the env cannot be used afterwards."""
        if self._dmc is None:
            return
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._dmc.close()
        self._dmc = None

    def _check_open(self, call: str) -> None:
        if self._dmc is None:
            raise gym.error.ClosedEnvironmentError(f"{call} on a closed {self.task} env: make a new one")

    def _observe(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = fast_renderer(self._physics.model.ptr, self.size)
        self._renderer.update_scene(self._physics.data.ptr, camera=self.camera_id)
        self._frame = self._renderer.render()
        return self._frame.copy()

    def _info(self, state: dict[str, np.ndarray]) -> dict[str, Any]:
        if not self.include_state:
            return {}
        return {"state": np.concatenate([np.ravel(v).astype(np.float64) for v in state.values()])}


ENV_BYTES = 75 * 2**20  # measured per cartpole env (64x64 frames) in one process
WORKER_BYTES = 370 * 2**20  # measured per spawned worker process (Python, MuJoCo, dm_control, one env)


def check_num_envs(num_envs: Any, per_env: int, what: str) -> int:
    """``num_envs`` as an int, if it is one >= 1 and that many envs fit in memory, else a ValueError saying why."""
    num_envs = check_count("num_envs", num_envs)
    check_fits(num_envs, per_env, what=what)
    return num_envs


def make_vector_env(num_envs: int = 1, **kwargs: Any) -> gym.vector.AsyncVectorEnv:
    """`num_envs` envs `gym.make("imaginegym/DMC-v0", **kwargs)`, each stepped in its own worker process.

    The vector entry point of imaginegym/DMC-v0, used by `gym.make_vec` without a
    `vectorization_mode`. Workers start with spawn (`worker_context`), which is safe
    whatever GL state this process holds, but re-imports the main script in each worker:
    a script needs the usual `if __name__ == "__main__":` guard.
    """
    num_envs = check_num_envs(num_envs, WORKER_BYTES, "its worker process")
    # The spec, not the id: a spawned worker has not imported imaginegym, which registers the id.
    make_env = partial(gym.make, gym.spec("imaginegym/DMC-v0"), **kwargs)
    return gym.vector.AsyncVectorEnv([make_env] * num_envs, context="spawn")
