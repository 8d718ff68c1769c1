"""Faults: a killed parent, a full disk, dying workers, foreign and damaged shards, bad input.

Process faults run in real subprocesses, always under a timeout. Spawned collection workers
import this module (by the env ids' module prefix) to find its envs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from imaginegym.data import CollectConfig, DatasetError, DatasetMeta, Episode, EpisodeDataset, collect, write_episode
from imaginegym.data import atomic
from imaginegym.data.atomic import atomic_write
from imaginegym.data.format import INDEX_FILE, METADATA_FILE

TESTS = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
needs_dmc = pytest.mark.skipif(
    importlib.util.find_spec("imaginegym.envs.dmc") is None, reason="envs/dmc.py has not landed"
)


class NoisePixelEnv(gym.Env):
    """32x32 frames of noise (incompressible, so shards fill a disk); episode `seed` lasts
    4 * (seed + 1) steps, so its shard grows with the seed."""

    observation_space = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps_left = 4 * (seed + 1)
        return self._frame(), {}

    def step(self, action):
        self.steps_left -= 1
        return self._frame(), 0.0, self.steps_left == 0, False, {}

    def _frame(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (32, 32, 3), dtype=np.uint8)


class EnvCreationError(Exception):
    """What making an env raises in a worker, e.g. a missing GL library."""


class UnmakeableEnv(NoisePixelEnv):
    def __init__(self):
        raise EnvCreationError("cannot create an EGL context: install libegl1")


class SelfKillingEnv(NoisePixelEnv):
    """Dies by SIGKILL, as if the OOM killer struck, when reset for episode 3."""

    def reset(self, *, seed=None, options=None):
        if seed == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().reset(seed=seed, options=options)


for _name, _cls in [("NoisePixel", NoisePixelEnv), ("Unmakeable", UnmakeableEnv),
                    ("SelfKilling", SelfKillingEnv)]:
    if f"{_name}-v0" not in gym.registry:
        gym.register(f"{_name}-v0", entry_point=f"{__name__}:{_cls.__name__}")
NOISE = CollectConfig(env_id=f"{__name__}:NoisePixel-v0")


def temp_files(path: Path) -> list[str]:
    return [p.name for p in path.iterdir() if p.name.endswith(".tmp")]


# --- 1. workers exit when their parent dies ---------------------------------------------

def proc_file(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace")
    except OSError:  # the process is gone
        return ""


def proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, ... ([] if gone)."""
    return proc_file(pid, "stat").rpartition(")")[2].split()


def spawned_children(pid: int) -> list[int]:
    """Pids of `pid`'s multiprocessing children started with spawn (the pool's workers)."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [c for c in pids
            if proc_stat(c)[1:2] == [str(pid)] and "spawn_main" in proc_file(c, "cmdline")]


def is_running(pid: int) -> bool:
    return proc_stat(pid)[:1] not in ([], ["Z"], ["X"])  # a zombie has exited already


@needs_dmc
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    out = tmp_path / "d"
    script = (
        "import sys\nfrom imaginegym.data import CollectConfig, collect\n"
        "config = CollectConfig(task='cartpole-swingup', size=16, max_episode_steps=5)\n"
        "collect(sys.argv[1], config, 100000, workers=2, progress=False)\n"
    )
    log = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=log)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            workers = spawned_children(proc.pid)
            if len(workers) == 2 and len(list(out.glob("episode_*.h5"))) >= 2:
                break  # both workers are collecting
            time.sleep(0.05)
        assert len(workers) == 2, (tmp_path / "stderr.txt").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(map(is_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(is_running, workers)), "workers outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:  # by pid, checking it is still a worker and not a reused pid
            if is_running(pid) and "spawn_main" in proc_file(pid, "cmdline"):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()
    assert len(EpisodeDataset(out)) >= 2  # what they finished is intact


# --- 2. a full disk ----------------------------------------------------------------------

NO_ROOM = r"(no space left on device|file too large) \(\d+ bytes free in [^)]+\); (free some space|raise)"


def run_python(code: str, *args: str, preexec_fn=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=ENV, preexec_fn=preexec_fn, timeout=timeout)


def test_atomic_write_on_a_full_disk_names_file_space_and_fix(small_disk):
    disk, preexec_fn = small_disk
    code = (
        "import sys\nfrom pathlib import Path\nfrom imaginegym.data.atomic import atomic_write\n"
        "disk = Path(sys.argv[1])\n(disk / 'old.bin').write_bytes(b'old')\n"
        "for name in ('old.bin', 'new.bin'):\n"
        "    try:\n"
        "        with atomic_write(disk / name) as tmp:\n"
        "            tmp.write_bytes(bytes(1 << 20))\n"
        "    except OSError as err:\n"
        "        print(err.errno, err)\n"
    )
    result = run_python(code, str(disk), preexec_fn=preexec_fn)
    assert result.returncode == 0, result.stderr
    old, new = result.stdout.splitlines()
    assert re.search(rf"could not write {re.escape(str(disk / 'old.bin'))}: {NO_ROOM}.*; the previous old.bin is intact$", old)
    assert re.search(rf"could not write {re.escape(str(disk / 'new.bin'))}: {NO_ROOM}", new) and "intact" not in new
    assert (disk / "old.bin").read_bytes() == b"old"
    assert sorted(p.name for p in disk.iterdir()) == ["old.bin"]  # no temporary file left


@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_during_collect_is_a_clear_error_and_keeps_finished_episodes(small_disk, workers):
    """It crashed with a segmentation fault: h5py cannot close a file after a failed write."""
    disk, preexec_fn = small_disk
    command = [sys.executable, "-m", "imaginegym.cli", "collect", "--env", NOISE.env_id,
               "--episodes", "40", "--workers", str(workers), "--out", str(disk / "d")]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV,
                            preexec_fn=preexec_fn, timeout=120)
    assert result.returncode == 1, result.stderr  # not -11 (SIGSEGV)
    assert re.search(rf"could not write {re.escape(str(disk / 'd'))}/episode_\d+\.h5: {NO_ROOM}", result.stderr)
    dataset = EpisodeDataset(disk / "d")
    assert 1 <= len(dataset) < 40
    for i, episode in enumerate(dataset):
        assert episode.length == 4 * (dataset.episode_ids[i] + 1)
    assert temp_files(disk / "d") == []


def test_a_writers_own_error_on_a_full_disk_becomes_a_disk_full_error(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError('... unexpected pos ...'), no errno."""
    free = {"bytes": 4096}
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _: SimpleNamespace(free=free["bytes"]))
    (tmp_path / "model.pt").write_bytes(b"old")
    unexpected_pos = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    with pytest.raises(OSError, match=r"model.pt: no space left on device \(4096 bytes free.*previous model.pt is intact") as err:
        with atomic_write(tmp_path / "model.pt") as tmp:
            tmp.write_bytes(b"part of a checkpoint")
            raise unexpected_pos
    assert err.value.__cause__ is unexpected_pos
    with pytest.raises(FileExistsError):  # another writer won: not a full disk
        with atomic_write(tmp_path / "model.pt", overwrite=False) as tmp:
            tmp.write_bytes(b"new")
    free["bytes"] = 10 << 30
    with pytest.raises(RuntimeError, match="unexpected pos"):  # plenty of room: as it was
        with atomic_write(tmp_path / "model.pt") as tmp:
            raise unexpected_pos
    assert (tmp_path / "model.pt").read_bytes() == b"old" and temp_files(tmp_path) == []


# --- 3. worker errors --------------------------------------------------------------------

def test_a_workers_error_is_raised_as_itself(tmp_path):
    config = CollectConfig(env_id=f"{__name__}:Unmakeable-v0")
    with pytest.raises(EnvCreationError, match="install libegl1") as err:
        collect(tmp_path / "d", config, 3, workers=2, progress=False)
    assert not isinstance(err.value, BrokenProcessPool)


def test_a_dead_worker_is_reported_with_its_signal_and_resume(tmp_path):
    config = CollectConfig(env_id=f"{__name__}:SelfKilling-v0")
    message = r"collection worker process died \(killed by SIGKILL.*\).*--resume"
    with pytest.raises(RuntimeError, match=message) as err:
        collect(tmp_path / "d", config, 6, workers=2, progress=False)
    assert isinstance(err.value.__cause__, BrokenProcessPool)
    assert 3 not in EpisodeDataset(tmp_path / "d").episode_ids


# --- 4. foreign shards -------------------------------------------------------------------

def other_dataset(root: Path, **changes) -> Path:
    """Three episodes of a dataset like conftest's tiny one, with some metadata changed."""
    fields = {"env_id": "imaginegym/DMC-v0", "task": "cartpole-swingup", "action_repeat": 2,
              "size": 16, "action_space": gym.spaces.Box(-1, 1, (1,), np.float32), **changes}
    size = fields["size"]
    meta = DatasetMeta(observation_space=gym.spaces.Box(0, 255, (size, size, 3), np.uint8), **fields)
    for i in range(3):
        episode = Episode(np.full((6, size, size, 3), i, np.uint8), np.zeros((5, 1), np.float32),
                          np.zeros(5, np.float32), np.zeros(5, bool), np.zeros(5, bool))
        write_episode(root, i, episode, meta, seed=i, policy="random")
    return root


@pytest.mark.parametrize(
    ("changes", "difference"),
    [({"size": 8}, r"size: 16 vs 8"), ({"task": "walker-walk"}, r"task: cartpole-swingup vs walker-walk")],
)
def test_a_shard_from_another_dataset_is_refused(tiny_dataset, tmp_path, changes, difference):
    root = Path(tiny_dataset)
    assert len(EpisodeDataset(root)) == 3  # the index now describes the three shards
    other = other_dataset(tmp_path / "other", **changes)
    shutil.copy(other / "episode_000002.h5", root / "episode_000002.h5")
    message = rf"episode_000002.h5 does not belong to the dataset in .*{difference}.*move it out of .* or delete it"
    with pytest.raises(DatasetError, match=message):
        EpisodeDataset(root)
    with pytest.raises(DatasetError, match=message):  # a resumed collection refuses it too
        collect(root, CollectConfig(task="cartpole-swingup"), 5, resume=True, progress=False)


def test_a_replaced_dataset_json_is_checked_against_every_shard(tiny_dataset, tmp_path):
    root = Path(tiny_dataset)
    EpisodeDataset(root)  # a fresh index
    other = other_dataset(tmp_path / "other", size=8)
    shutil.copy(other / METADATA_FILE, root / METADATA_FILE)
    with pytest.raises(DatasetError, match="does not belong.*size: 8 vs 16"):
        EpisodeDataset(root)


# --- 5. damaged chunks -------------------------------------------------------------------

def test_a_damaged_chunk_names_shard_episode_key_rows_and_fix(tiny_dataset):
    root = Path(tiny_dataset)
    path = root / "episode_000001.h5"
    with h5py.File(path) as f:
        chunk = f["frames"].id.get_chunk_info(5)  # frame 5's compressed bytes
    data = bytearray(path.read_bytes())
    middle = chunk.byte_offset + chunk.size // 2
    data[middle - 4 : middle + 4] = bytes(b ^ 0xFF for b in data[middle - 4 : middle + 4])
    path.write_bytes(bytes(data))

    ds = EpisodeDataset(root)
    assert ds.read(1, "frames", 0, 5).shape == (5, 16, 16, 3)  # the rest of the shard reads
    fix = r"Delete it and run `imaginegym collect --resume` with the same settings"
    with pytest.raises(DatasetError, match=rf"episode_000001.h5 \(episode 1\) is damaged: reading frames rows 5:6 .*{fix}"):
        ds.read(1, "frames", 5, 6)
    with pytest.raises(DatasetError, match=r"episode_000001.h5 .*frames rows 0:31"):
        ds[1]


# --- 6. other bad input ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"episodes": 0}, "episodes=0 must be an integer >= 1"),
        ({"episodes": 2.5}, "episodes=2.5 must be an integer >= 1"),
        ({"workers": 2.5}, "workers=2.5 must be an integer >= 1"),
        ({"workers": 0}, "workers=0 must be an integer >= 1"),
    ],
)
def test_collect_refuses_bad_counts(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        collect(tmp_path / "d", NOISE, **{"episodes": 2, **kwargs}, progress=False)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("seed", -1, "seed=-1 must be an integer >= 0"), ("size", 0, "size=0 must be an integer >= 1"),
     ("max_episode_steps", 2.5, "max_episode_steps=2.5 must be an integer >= 1")],
)
def test_collect_config_refuses_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        CollectConfig(task="cartpole-swingup", **{field: value})


def test_out_path_inside_a_file_is_refused_before_collecting(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match=r"cannot create the dataset directory .*notes.txt is a file"):
        collect(tmp_path / "notes.txt" / "d", NOISE, 2, workers=2, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{ garbage", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"schema_version": "1"}', "integer schema_version"),
        ('{"schema_version": 1, "env_id": "x"}', "lacks the field 'task'"),
        ("corrupt", "unknown space type 'Tuple'"),
    ],
)
def test_a_damaged_dataset_json_is_named_and_rebuilt_on_resume(tmp_path, content, problem):
    root = tmp_path / "d"
    collect(root, NOISE, 2, progress=False)
    original = json.loads((root / METADATA_FILE).read_text())
    if content == "corrupt":
        content = json.dumps({**original, "action_space": {"type": "Tuple"}})
    (root / METADATA_FILE).write_text(content)
    fix = "Delete it and run `imaginegym collect --resume` with the dataset's settings"
    with pytest.raises(DatasetError, match=rf"dataset.json is damaged \(.*{problem}.*\). {fix}"):
        EpisodeDataset(root)
    (root / METADATA_FILE).unlink()
    resumed = collect(root, NOISE, 3, resume=True, progress=False)
    assert resumed.episode_ids == [0, 1, 2]
    assert json.loads((root / METADATA_FILE).read_text()) == original


def test_malformed_index_records_are_ignored(tiny_dataset):
    root = Path(tiny_dataset)
    lengths = EpisodeDataset(root).lengths.tolist()
    index = json.loads((root / INDEX_FILE).read_text())
    del index["shards"][0]["bytes"]
    index["shards"][1]["length"] = "30"
    index["shards"][2]["episode"] = 9  # a record about another episode than its file holds
    (root / INDEX_FILE).write_text(json.dumps(index))
    ds = EpisodeDataset(root)
    assert ds.episode_ids == [0, 1, 2] and ds.lengths.tolist() == lengths


def test_shard_lacking_attributes_is_named(tiny_dataset):
    with h5py.File(Path(tiny_dataset) / "episode_000001.h5", "a") as f:
        del f.attrs["seed"]
    with pytest.raises(DatasetError, match=r"episode_000001.h5 lacks the attribute\(s\) seed.*delete it"):
        EpisodeDataset(tiny_dataset)


def test_non_canonical_shard_names_are_not_second_copies(tiny_dataset):
    root = Path(tiny_dataset)
    shutil.copy(root / "episode_000001.h5", root / "episode_0000001.h5")
    assert EpisodeDataset(root).episode_ids == [0, 1, 2]


def test_a_shard_removed_after_opening_is_named(tiny_dataset):
    ds = EpisodeDataset(tiny_dataset)
    (Path(tiny_dataset) / "episode_000002.h5").unlink()
    with pytest.raises(DatasetError, match="episode_000002.h5 is gone.*open the dataset again"):
        ds.read(2, "frames")


def test_other_bad_arguments(tiny_dataset):
    with pytest.raises(ValueError, match="max_open_files=0 must be an integer >= 1"):
        EpisodeDataset(tiny_dataset, max_open_files=0)
    ds = EpisodeDataset(tiny_dataset)
    with pytest.raises(ValueError, match="episode=2.5 must be an integer >= 0"):
        write_episode(tiny_dataset, 2.5, ds[0], ds.meta, seed=0, policy="random")


def test_an_unknown_env_id_is_a_one_line_cli_error(tmp_path, capsys):
    from imaginegym.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["collect", "--env", "NoSuchEnv-v0", "--episodes", "1", "--out", str(tmp_path / "d")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "imaginegym collect: error: cannot make env 'NoSuchEnv-v0'" in err and "imaginegym/DMC-v0" in err and "Traceback" not in err
