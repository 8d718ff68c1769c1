"""Collection: determinism across workers, resume, refusals, the CLI, and SIGKILL safety.

Most tests use a tiny pixel env defined here (spawned workers import this module to find
it); the kill-and-resume test runs the real `imaginegym collect` on DMC cartpole.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from imaginegym.cli import main
from imaginegym.data import CollectConfig, DatasetError, EpisodeDataset, collect


class FakePixelEnv(gym.Env):
    """8x8 frames showing a 2-D point that actions push; noise from the reset seed."""

    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(0, 8, 2)
        return self._frame(), {}

    def step(self, action):
        self.position = self.position + action + self.np_random.normal(0, 0.1, 2)
        terminated = bool(np.any(self.position < 0) or np.any(self.position >= 8))
        self.position = np.clip(self.position, 0, 7.99)
        return self._frame(), float(-np.abs(self.position - 4).sum()), terminated, False, {}

    def _frame(self) -> np.ndarray:
        frame = np.zeros((8, 8, 3), np.uint8)
        x, y = self.position.astype(int)
        frame[y, x] = 255
        return frame


if "FakePixel-v0" not in gym.registry:
    gym.register("FakePixel-v0", entry_point=f"{__name__}:FakePixelEnv", max_episode_steps=12)

FAKE = f"{__name__}:FakePixel-v0"  # the module prefix makes spawned workers import this file
HAS_DMC = importlib.util.find_spec("imaginegym.envs.dmc") is not None
needs_dmc = pytest.mark.skipif(not HAS_DMC, reason="envs/dmc.py (imaginegym/DMC-v0) has not landed yet")


def fake_config(**kwargs) -> CollectConfig:
    return CollectConfig(env_id=FAKE, **kwargs)


def assert_same_datasets(a: EpisodeDataset, b: EpisodeDataset) -> None:
    assert a.episode_ids == b.episode_ids
    for x, y in zip(a, b):
        for key in ("frames", "actions", "rewards", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(x, key), getattr(y, key), err_msg=key)


def listing(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in path.iterdir()}


def test_same_dataset_for_any_number_of_workers(tmp_path):
    config = fake_config(policy="ou", seed=7)
    one = collect(tmp_path / "one", config, 5, progress=False)
    three = collect(tmp_path / "three", config, 5, workers=3, progress=False)
    assert_same_datasets(one, three)
    assert [s.seed for s in one.shards] == [7, 8, 9, 10, 11]
    assert {s.policy for s in one.shards} == {"ou"}
    assert one.env_id == FAKE and one.meta.size == 8 and one.meta.action_repeat == 1
    assert len({one[i].frames.tobytes() for i in range(5)}) == 5  # seeds differ per episode


def test_resume_collects_only_missing_episodes(tmp_path):
    config = fake_config(seed=3)
    collect(tmp_path / "a", config, 4, progress=False)
    (tmp_path / "a" / "episode_000001.h5").unlink()  # a gap, as left by a killed worker
    kept = listing(tmp_path / "a")
    resumed = collect(tmp_path / "a", config, 6, workers=2, resume=True, progress=False)
    assert resumed.episode_ids == list(range(6))
    after = listing(tmp_path / "a")
    assert all(after[name] == mtime for name, mtime in kept.items() if name.startswith("episode_"))
    assert_same_datasets(resumed, collect(tmp_path / "b", config, 6, progress=False))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 1}, "--seed 0 .asked 1."),
        ({"policy": "ou"}, "--policy 'random' .asked 'ou'."),
        ({"max_episode_steps": 5}, "--max-episode-steps None .asked 5."),
        ({"task": "walker-walk"}, "--task '' .asked 'walker-walk'."),
    ],
)
def test_resume_refuses_other_settings(tmp_path, change, message):
    collect(tmp_path, fake_config(), 2, progress=False)
    before = listing(tmp_path)
    with pytest.raises(DatasetError, match=f"cannot resume .*{message}.*dataset's settings"):
        collect(tmp_path, fake_config(**change), 4, resume=True, progress=False)
    assert listing(tmp_path) == before


def test_existing_dataset_needs_resume(tmp_path):
    collect(tmp_path, fake_config(), 2, progress=False)
    before = listing(tmp_path)
    with pytest.raises(DatasetError, match="already exists and is not empty: pass --resume.*another --out"):
        collect(tmp_path, fake_config(), 4, progress=False)
    assert listing(tmp_path) == before


def test_out_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(DatasetError, match="notes.txt is a file, not a dataset directory"):
        collect(path, fake_config(), 2, resume=True, progress=False)
    assert path.read_text() == "keep me"


def test_resume_into_a_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"png")
    with pytest.raises(DatasetError, match="not an imaginegym dataset.*nothing to resume"):
        collect(tmp_path, fake_config(), 2, resume=True, progress=False)
    assert listing(tmp_path).keys() == {"photo.png"}


def test_env_with_unsupported_spaces_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="Blackjack-v1 observes Tuple.*Box, Discrete or MultiDiscrete observations.*wrap"):
        collect(tmp_path / "out", CollectConfig(env_id="Blackjack-v1"), 1, progress=False)
    assert not (tmp_path / "out").exists()


def test_vector_observations_and_discrete_actions(tmp_path):
    ds = collect(tmp_path / "out", CollectConfig(env_id="CartPole-v1", max_episode_steps=10), 2, progress=False)
    assert ds.meta.size is None and ds.task == ""
    for episode in ds:
        assert episode.frames.dtype == np.float32 and episode.frames.shape == (episode.length + 1, 4)
        assert episode.actions.dtype == np.int64 and set(episode.actions.tolist()) <= {0, 1}


def test_max_episode_steps_truncates(tmp_path):
    ds = collect(tmp_path, fake_config(max_episode_steps=4), 3, progress=False)
    for episode in ds:
        assert episode.length <= 4
        if not episode.terminated.any():
            assert episode.truncated.tolist() == [False, False, False, True]
    assert {s.max_episode_steps for s in ds.shards} == {4}


def test_cli_collects_and_reports(tmp_path, capsys):
    assert main(["collect", "--env", FAKE, "--episodes", "3", "--seed", "5", "--out", str(tmp_path / "d")]) == 0
    assert "3 episodes" in capsys.readouterr().out
    assert [s.seed for s in EpisodeDataset(tmp_path / "d").shards] == [5, 6, 7]


def exit_code(argv: list[str]) -> int:
    """`main`'s exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tier", "1", "--out", "{tmp}/notes.txt"], "notes.txt is a file, not a dataset directory"),
        (["--env", FAKE, "--out", "{tmp}/d"], "already exists and is not empty: pass --resume"),
        (["--env", FAKE, "--seed", "9", "--resume", "--out", "{tmp}/d"], "--seed 0 (asked 9) in episode_000000.h5"),
        (["--out", "{tmp}/new"], "choose a task: --task cartpole-swingup, or a preset such as --tier 1"),
        (["--task", "a", "--tier", "1", "--out", "{tmp}/new"], "not allowed with argument"),
    ],
)
def test_cli_errors_exit_2_with_the_fix(tmp_path, capsys, args, message):
    (tmp_path / "notes.txt").write_text("keep me")
    collect(tmp_path / "d", fake_config(), 1, progress=False)
    assert exit_code(["collect", "--episodes", "2", *[a.format(tmp=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err
    assert "imaginegym collect: error:" in err
    assert message in err


def test_cli_help_lists_commands_and_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "collect" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["collect", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo line wrapping
    for flag in ("--out", "--tier", "--policy", "--workers", "--resume", "--max-episode-steps", "examples:"):
        assert flag in text
    assert "1 = cartpole-swingup, 2 = reacher-easy, 3 = humanoid-walk" in text


def test_ctrl_c_stops_workers_and_keeps_finished_episodes(tmp_path):
    out = tmp_path / "d"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imaginegym.cli", "collect", "--env", FAKE, "--episodes", "100000",
         "--workers", "2", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while len(shards_in(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to parent and workers
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "add --resume" in err
    left = subprocess.run(["pgrep", "-a", "-g", str(proc.pid)], capture_output=True, text=True).stdout
    assert "spawn_main" not in left  # no orphaned worker
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert 3 <= len(EpisodeDataset(out)) < 100000


def shards_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("episode_*.h5")) if path.exists() else []


@needs_dmc
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Kill `imaginegym collect --workers 2` mid-run, resume it, compare to a run with one."""
    episodes = 24
    command = [sys.executable, "-m", "imaginegym.cli", "collect", "--tier", "1", "--seed", "11",
               "--episodes", str(episodes), "--max-episode-steps", "20"]
    killed = tmp_path / "killed"
    # Its own session, so SIGKILL reaches the workers too, as when a machine dies.
    proc = subprocess.Popen([*command, "--workers", "2", "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(shards_in(killed)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    interrupted = EpisodeDataset(killed)
    assert 3 <= len(interrupted) < episodes, "the collection was not interrupted mid-run"
    for episode in interrupted:
        assert episode.frames.shape == (21, 64, 64, 3) and episode.truncated[-1]

    subprocess.run([*command, "--workers", "1", "--resume", "--out", str(killed)],
                   check=True, capture_output=True)
    reference = tmp_path / "reference"
    subprocess.run([*command, "--workers", "1", "--out", str(reference)], check=True, capture_output=True)
    resumed = EpisodeDataset(killed)
    assert resumed.episode_ids == list(range(episodes))
    assert resumed.task == "cartpole-swingup"
    assert_same_datasets(resumed, EpisodeDataset(reference))
