"""Real environments: DeepMind Control suite tasks with fast pixel rendering.

`import imaginegym.envs` stays light; `DMCEnv` and `TASKS` load MuJoCo and dm_control
on first use (after `use_egl_if_headless`, which `imaginegym.envs.dmc` calls first).
Processes that render start with `worker_context()` (spawn): see `imaginegym.envs.headless`.
"""

from .headless import use_egl_if_headless, worker_context

__all__ = ["DMCEnv", "TASKS", "use_egl_if_headless", "worker_context"]


def __getattr__(name: str):
    if name in ("DMCEnv", "TASKS"):
        from . import dmc

        return getattr(dmc, name)
    raise AttributeError(f"module 'imaginegym.envs' has no attribute {name!r}")
