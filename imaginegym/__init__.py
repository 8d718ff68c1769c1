"""imaginegym: a trained world model as a Gymnasium environment.

Importing the package registers every environment id (real and imagined) and, without a
display, sets `MUJOCO_GL=egl` (`imaginegym.envs.use_egl_if_headless`); torch and the
world-model code load only when an imagined environment or a `WorldModel` is used.

    import gymnasium as gym
    import imaginegym
    real = gym.make("imaginegym/DMC-v0", task="cartpole-swingup")
    imag = gym.make("imaginegym/Imagined-v0", world_model="cartpole-swingup")
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

from imaginegym.envs.headless import use_egl_if_headless

__version__ = "0.1.0"

__all__ = ["WorldModel", "LatentObservation", "ModelStateObservation", "make_vec", "__version__"]


# Here, not only where the real env is made: so that shimmy and dm_control imported next render headless
# too, and Triton's LLVM is loaded before Mesa's (or, when the user imported those first, blocked before a
# torch optimizer imports it and crashes the process).
use_egl_if_headless()


def _register(id: str, **kwargs: Any) -> None:
    if id not in registry:
        register(id=id, **kwargs)


# DMC time limits are enforced inside the env (dm_control's own limit, divided by the
# action repeat), so no TimeLimit wrapper is registered here.
_register("imaginegym/DMC-v0", entry_point="imaginegym.envs.dmc:DMCEnv", vector_entry_point="imaginegym.envs.dmc:make_vector_env")
# The DarkRoom envs truncate at their own horizons too (20, 20 and 50 steps).
_register("imaginegym/DarkRoom-v0", entry_point="imaginegym.envs.darkroom:DarkRoom")
_register("imaginegym/DarkRoomHard-v0", entry_point="imaginegym.envs.darkroom:DarkRoomHard")
_register("imaginegym/DarkKeyToDoor-v0", entry_point="imaginegym.envs.darkroom:DarkKeyToDoor")
_register(
    "imaginegym/Imagined-v0",
    entry_point="imaginegym.imagination:ImaginationEnv",
    vector_entry_point="imaginegym.imagination:ImaginationVectorEnv",
)


def make_vec(id: str, num_envs: int = 1, **kwargs: Any):
    """Make a vector env; for imagined envs every denoising pass runs all envs at once.

    For `imaginegym/Imagined-v0` this returns a natively batched
    `ImaginationVectorEnv`; other ids go through `gymnasium.make_vec` (for
    `imaginegym/DMC-v0`, an `AsyncVectorEnv` of spawned workers).
    """
    import gymnasium as gym

    if id == "imaginegym/Imagined-v0":
        from imaginegym.imagination import ImaginationVectorEnv

        return ImaginationVectorEnv(num_envs=num_envs, **kwargs)
    mode = kwargs.get("vectorization_mode")
    if id == "imaginegym/DMC-v0" and mode is not None:  # without a mode, the vector entry point checks its workers itself
        from imaginegym.envs.dmc import ENV_BYTES, WORKER_BYTES, check_num_envs

        in_process = gym.VectorizeMode(mode) == gym.VectorizeMode.SYNC
        check_num_envs(num_envs, ENV_BYTES if in_process else WORKER_BYTES, "its simulation and renderer" if in_process else "its worker process")
    return gym.make_vec(id, num_envs=num_envs, **kwargs)


def __getattr__(name: str):
    # Lazy so that `import imaginegym` (and thus registration) never imports torch.
    if name == "WorldModel":
        from imaginegym.world_model import WorldModel

        return WorldModel
    if name == "LatentObservation":
        from imaginegym.imagination import LatentObservation

        return LatentObservation
    if name == "ModelStateObservation":
        from imaginegym.imagination import ModelStateObservation

        return ModelStateObservation
    raise AttributeError(f"module 'imaginegym' has no attribute {name!r}")
