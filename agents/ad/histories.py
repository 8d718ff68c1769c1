"""Learning histories: a source RL algorithm learns each task from scratch; every transition is stored, in order.

    imaginegym ad histories --env imaginegym/DarkRoom-v0 --tasks train --out data/darkroom-histories

    from imaginegym.agents.ad import HistoriesConfig, collect_histories
    collect_histories(HistoriesConfig(env="imaginegym/DarkRoom-v0", episodes=100), "data/darkroom-histories")

Run ``r`` learns task ``r // runs_per_task`` of the selection for ``episodes`` episodes; its episode ``k`` is
shard ``r * episodes + k`` of the episode store, written with ``run=r, run_episode=k,
run_task=task`` (see docs/data_format.md, "Runs"). Runs go to worker processes in parallel.
A run is a deterministic function of its seed (``seed * 1_000_003 + r``), so a killed
collection resumes by replaying each unfinished run from its start and writing only the
episodes that are missing; ``histories.json`` ties the directory to its settings.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from imaginegym.agents.ad.sources import SourceConfig, make_source
from imaginegym.data.atomic import write_json_atomic
from imaginegym.data.collect import _init_worker
from imaginegym.data.format import WorkerDiedError, shard_name
from imaginegym.data.meta import DatasetMeta
from imaginegym.data.shard import Episode
from imaginegym.data.store import write_episode
from imaginegym.validation import check_count

SETTINGS_FILE = "histories.json"
TASK_SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class HistoriesConfig:
    """One learning-histories collection; each field is one `imaginegym ad histories` flag (the source's as --source-*)."""

    env: str = "imaginegym/DarkRoom-v0"  # a registered env with tasks (imaginegym/DarkRoom-v0, DarkRoomHard-v0, DarkKeyToDoor-v0)
    tasks: str = "train"  # train | test | all: the split the runs learn
    num_tasks: int = 0  # 0: every task of the split; N: the first N of the split in a fixed shuffled order (seed 0)
    episodes: int = 100  # episodes per run, from scratch
    runs_per_task: int = 1  # runs learning each task, each with its own random stream
    seed: int = 0  # run r's random stream: seed * 1_000_003 + r
    workers: int = 1  # processes learning runs in parallel
    source: SourceConfig = field(default_factory=SourceConfig)

    def __post_init__(self):
        if self.tasks not in TASK_SPLITS:
            raise ValueError(f"tasks={self.tasks!r}: use one of {', '.join(TASK_SPLITS)}")
        check_count("episodes", self.episodes)
        check_count("workers", self.workers)
        check_count("runs_per_task", self.runs_per_task)
        check_count("num_tasks", self.num_tasks, 0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "workers": None}  # workers do not change the data

    def task_list(self) -> list[Any]:
        """The tasks of the runs, run r learning ``task_list()[r]``."""
        from imaginegym.envs import darkroom

        env = gym.make(self.env)
        try:
            if not hasattr(env.unwrapped, "tasks"):
                raise ValueError(f"env={self.env!r} has no tasks (no `tasks` attribute): learning histories need an env whose task "
                                 "is chosen at reset, e.g. imaginegym/DarkRoom-v0")
            name = type(env.unwrapped).__name__
            if self.tasks == "all":
                tasks = list(env.unwrapped.tasks)
            else:
                tasks = list((darkroom.train_tasks if self.tasks == "train" else darkroom.test_tasks)(name))
        finally:
            env.close()
        if self.num_tasks:
            if self.num_tasks > len(tasks):
                raise ValueError(f"num_tasks={self.num_tasks}: the {self.tasks} split of {self.env} has only {len(tasks)} tasks")
            order = np.random.RandomState(0).permutation(len(tasks))[: self.num_tasks]
            tasks = [tasks[i] for i in order]
        return tasks


def run_source(config: HistoriesConfig, run: int, task: Any, skip: set[int] = frozenset()):
    """Yield (k, Episode) for the run's episodes 0..episodes-1, the source learning as it goes (all are played; those in
    ``skip`` are not yielded)."""
    env = gym.make(config.env, task=task)
    try:
        source = make_source(config.source, env)
        rng = np.random.default_rng(config.seed * 1_000_003 + run)
        for k in range(config.episodes):
            source.begin_episode(k)
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            frames, actions, rewards, terminated, truncated = [obs], [], [], [], []
            done = False
            while not done:
                action = source.act(obs, rng)
                next_obs, reward, term, trunc, _ = env.step(action)
                source.update(obs, action, reward, next_obs, term or trunc)
                frames.append(next_obs), actions.append(action), rewards.append(reward)
                terminated.append(term), truncated.append(trunc)
                obs, done = next_obs, term or trunc
            if k not in skip:
                yield k, Episode(np.asarray(frames), np.asarray(actions, dtype=np.int64), np.asarray(rewards, dtype=np.float32),
                                 np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool))
    finally:
        env.close()


def dataset_meta(config: HistoriesConfig) -> DatasetMeta:
    env = gym.make(config.env)
    try:
        return DatasetMeta(env_id=config.env, task="", observation_space=env.observation_space, action_space=env.action_space,
                           action_repeat=1, size=None)
    finally:
        env.close()


def record_run(root: Path, config: HistoriesConfig, run: int, task: Any, done: set[int]) -> int:
    """Learn run ``run`` and write its missing episodes; returns how many were written."""
    meta = dataset_meta(config)
    written = 0
    policy = f"source:{config.source.name}"
    for k, episode in run_source(config, run, task, skip=done):
        write_episode(root, run * config.episodes + k, episode, meta, seed=config.seed * 1_000_003 + run, policy=policy,
                      run=run, run_episode=k, run_task=task)
        written += 1
    return written


def _finished(root: Path, config: HistoriesConfig, runs: int) -> list[set[int]]:
    """For each run, the episodes whose shards exist."""
    present = {p.name for p in root.glob("episode_*.h5")} if root.is_dir() else set()
    return [{k for k in range(config.episodes) if shard_name(r * config.episodes + k) in present} for r in range(runs)]


def _check_settings(root: Path, config: HistoriesConfig) -> None:
    """Refuse a directory of other histories; record these settings (``histories.json``)."""
    settings, wanted = root / SETTINGS_FILE, json.loads(json.dumps(config.to_json()))  # as JSON reads it back
    if settings.is_file():
        old = json.loads(settings.read_text())
        changed = sorted(k for k in set(old) | set(wanted) if old.get(k) != wanted.get(k))
        if changed:
            raise ValueError(f"{root} holds learning histories made with other settings ({', '.join(changed)} differ): use another "
                             "--out, the same settings to resume, or delete the directory to start over")
    elif any(root.glob("episode_*.h5")):
        raise ValueError(f"{root} holds episodes that are not learning histories of this command (no {SETTINGS_FILE}): use another --out")
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(settings, wanted)


def collect_histories(config: HistoriesConfig, out: str | os.PathLike, progress: bool = True) -> Path:
    """Learn every task of the selection, storing each run's transitions in order; resumes an interrupted collection."""
    root = Path(out)
    tasks = [task for task in config.task_list() for _ in range(config.runs_per_task)]  # run r's task
    _check_settings(root, config)
    finished = _finished(root, config, len(tasks))
    todo = [r for r in range(len(tasks)) if len(finished[r]) < config.episodes]
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), unit="run", desc="learning histories", disable=not progress,
               dynamic_ncols=True)
    try:
        if config.workers == 1 or len(todo) <= 1:
            for r in todo:
                record_run(root, config, r, tasks[r], finished[r])
                bar.update()
        else:
            _record_parallel(root, config, tasks, todo, finished, bar)
    finally:
        bar.close()
    return root


def _record_parallel(root: Path, config: HistoriesConfig, tasks: list, todo: list[int], finished: list[set[int]], bar) -> None:
    from imaginegym.envs.headless import worker_context

    pool = ProcessPoolExecutor(max_workers=min(config.workers, len(todo)), mp_context=worker_context(), initializer=_init_worker,
                               initargs=(os.getpid(),))
    try:
        pending = {pool.submit(record_run, root, config, r, tasks[r], finished[r]) for r in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
                bar.update()
    except BrokenProcessPool as err:
        pool.shutdown()
        raise WorkerDiedError(f"a learning-histories worker died while writing into {root}; the finished episodes are kept: run "
                              "the same command again to resume") from err
    finally:
        pool.shutdown(cancel_futures=True)
