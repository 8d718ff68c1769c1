"""Faults that only whole processes show: forked workers and GL, LLVM twice in one process, orphans.

Each case runs in a fresh interpreter, in a session of its own and without a display: a hang
fails the test (the session is killed at the timeout), a segfault shows as the return code,
and a process of the session still running after the interpreter exits is an orphan.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

TIMEOUT = 240  # seconds; the slowest case (spawned workers, SB3) takes about 30 on 2 busy cores
BLOCKED_TRITON = "blocks `import triton`"


def run_python(code: str, mujoco_gl: str | None = "egl") -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter and session, without a display; fails on a hang or on orphans."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")}
    if mujoco_gl is not None:
        env["MUJOCO_GL"] = mujoco_gl
    env["OMP_NUM_THREADS"] = "1"  # torch in the child shares 2 cores with other tests
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    ) as child:
        try:
            stdout, stderr = child.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the workers too, so a hang leaves no orphans
            stdout, stderr = child.communicate()
            pytest.fail(f"hung for {TIMEOUT} s; stdout:\n{stdout}\nstderr:\n{stderr[-3000:]}")
    orphans = running_in_session(child.pid)
    assert not orphans, f"still running after the interpreter exited: {orphans}"
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def process_state(stat: str) -> tuple[str, int]:
    """(state, session id) from a /proc/PID/stat line; the name before them may hold spaces."""
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[4])


def running_in_session(session: int, grace: float = 10.0) -> list[str]:
    """Command lines of live (not zombie) processes of `session`, after up to `grace` s for them to exit."""
    deadline = time.monotonic() + grace
    while True:
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                state, sid = process_state((proc / "stat").read_text())
                if sid == session and state != "Z":
                    found.append((proc / "cmdline").read_text().replace("\0", " "))
            except (OSError, IndexError):  # the process ended meanwhile
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (dead, not yet reaped by whoever adopted it) does not."""
    try:
        return process_state(Path(f"/proc/{pid}/stat").read_text())[0] != "Z"
    except FileNotFoundError:
        return False


def last_json(result: subprocess.CompletedProcess) -> Any:
    assert result.returncode == 0, f"rc {result.returncode}:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_async_make_vec_as_written_renders_and_leaves_no_workers_behind():
    """Workers forked (Python 3.11's default) after the parent built an env to read the spaces used to hang."""
    result = run_python("""
        import json, gymnasium as gym, imaginegym
        envs = gym.make_vec("imaginegym/DMC-v0", num_envs=2, vectorization_mode="async", task="cartpole-swingup", size=16)
        obs, _ = envs.reset(seed=0)
        obs, *_ = envs.step(envs.action_space.sample())
        print(json.dumps({"context": envs.context, "workers": [p.pid for p in envs.processes], "std": float(obs.std())}))
    """)  # no close(): exiting must end the workers too
    out = last_json(result)
    assert out["context"] is None and len(out["workers"]) == 2 and out["std"] > 10.0
    assert not any(alive(pid) for pid in out["workers"])


def test_make_vec_without_a_mode_spawns_workers_even_after_the_parent_rendered():
    result = run_python("""
        import json, gymnasium as gym, imaginegym
        gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16).reset(seed=0)  # GL is up in the parent
        envs = gym.make_vec("imaginegym/DMC-v0", num_envs=2, task="cartpole-swingup", size=16)
        obs, _ = envs.reset(seed=0)
        for _ in range(3):
            obs, *_ = envs.step(envs.action_space.sample())
        workers = [p.pid for p in envs.processes]
        envs.close()
        print(json.dumps({"type": type(envs).__name__, "context": envs.context, "workers": workers, "shape": obs.shape,
                          "std": float(obs.std())}))
    """)
    out = last_json(result)
    assert (out["type"], out["context"], out["shape"]) == ("AsyncVectorEnv", "spawn", [2, 16, 16, 3])
    assert out["std"] > 10.0 and not any(alive(pid) for pid in out["workers"])


@pytest.mark.parametrize(
    "parent_renders",
    [
        'gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16).reset(seed=0)',
        'suite.load("cartpole", "swingup").physics.render(16, 16)',  # a context imaginegym did not make
    ],
    ids=["imaginegym", "dm_control"],
)
def test_rendering_in_a_child_forked_after_the_parent_rendered_is_an_error_not_a_hang(parent_renders):
    result = run_python(f"""
        import os, sys, gymnasium as gym, imaginegym
        from dm_control import suite
        {parent_renders}
        pid = os.fork()
        if pid == 0:
            try:
                gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16).reset(seed=0)
                print("child rendered")
            except RuntimeError as error:
                print("child error:", error)
            sys.stdout.flush()
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent done")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "child error: this process" in result.stdout and "forked from pid" in result.stdout, result.stdout
    assert "context='spawn'" in result.stdout and "worker_context()" in result.stdout
    assert result.stdout.strip().endswith("parent done")


SB3_TWO_STEPS = """
    import stable_baselines3, torch
    from stable_baselines3.common.logger import Logger
    torch.set_num_threads(1)
    env = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=36)  # NatureCNN's smallest input
    model = stable_baselines3.PPO("CnnPolicy", env, n_steps=4, batch_size=4, n_epochs=1, device="cpu")
    model.set_logger(Logger(None, []))  # SB3's default logger makes an empty /tmp/SB3-<time> folder on every learn()
    model.learn(4)
    print("ok")
"""


@pytest.mark.parametrize(
    ("imports", "mesa_first"),
    [
        ("import gymnasium as gym, shimmy; gym.register_envs(shimmy); import imaginegym", True),
        ("from dm_control import suite; import gymnasium as gym, imaginegym", True),
        ("import gymnasium as gym, imaginegym, shimmy; gym.register_envs(shimmy)", False),
    ],
    ids=["shimmy-first", "dm_control-first", "imaginegym-first"],
)
def test_sb3_after_shimmy_or_dm_control_in_any_order_does_not_crash(imports, mesa_first):
    """Mesa's LLVM, loaded at their import with MUJOCO_GL=egl, followed by Triton's used to segfault (rc 139)."""
    result = run_python(imports + "\n" + textwrap.dedent(SB3_TWO_STEPS))
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), f"rc {result.returncode}:\n{result.stderr[-3000:]}"
    assert result.stderr.count(BLOCKED_TRITON) == (1 if mesa_first else 0), result.stderr[-3000:]


def test_following_the_headless_warning_does_not_crash():
    """Without MUJOCO_GL, mujoco imported first gets a warning to set MUJOCO_GL=egl; doing so then imports shimmy first."""
    warned = run_python("import mujoco, imaginegym", mujoco_gl=None)
    assert warned.returncode == 0 and "set MUJOCO_GL=egl in the environment" in warned.stderr, warned.stderr
    result = run_python("""
        import mujoco, shimmy, imaginegym, gymnasium as gym, torch
        env = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=16)
        env.reset(seed=0)
        torch.optim.Adam([torch.nn.Parameter(torch.ones(1))])
        print("ok")
    """)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), f"rc {result.returncode}:\n{result.stderr[-3000:]}"


def test_import_imaginegym_sets_egl_without_importing_torch_or_mujoco():
    result = run_python(
        "import json, os, sys, imaginegym; print(json.dumps([os.environ['MUJOCO_GL'], 'torch' in sys.modules, 'mujoco' in sys.modules]))",
        mujoco_gl=None,
    )
    assert last_json(result) == ["egl", False, False]
