"""Collect episodes from a real env into a dataset, in parallel worker processes.

Episode i is collected with seed `config.seed + i` for both the env reset and the
policy RNG, so a dataset depends only on the `CollectConfig` and the episode count:
never on the number of workers, on scheduling, or on being interrupted and resumed.

    from imaginegym.data import CollectConfig, collect
    ds = collect("data/cartpole", CollectConfig(task="cartpole-swingup"), episodes=50, workers=2)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from tqdm import tqdm

from imaginegym.data.atomic import is_temp
from imaginegym.data.format import METADATA_FILE, DatasetError, WorkerDiedError, shard_episode
from imaginegym.data.meta import DatasetMeta, ensure_meta, read_meta, task_text
from imaginegym.data.policies import Policy, PolicySource, check_policy_name, make_policy, needs_state, policy_name
from imaginegym.data.shard import Episode, ShardInfo, read_shard_meta
from imaginegym.validation import check_count
from imaginegym.data.store import EpisodeDataset, check_dataset_dir, load_index, write_episode
from imaginegym.envs.headless import use_egl_if_headless, worker_context

DMC_ENV_ID = "imaginegym/DMC-v0"
TIERS = {1: "cartpole-swingup", 2: "reacher-easy", 3: "humanoid-walk"}
"""Task presets by difficulty tier, for `imaginegym collect --tier N`."""


@dataclass(frozen=True)
class CollectConfig:
    """What to collect; each field is one `imaginegym collect` flag.

    Attributes:
        env_id: Gymnasium id of an env whose observation space is Box (pixel frames,
            vectors), Discrete or MultiDiscrete, and whose action space is Box or Discrete.
        task: the env's task, e.g. DMC's "cartpole-swingup" or a DarkRoom goal (2, 7)
            (None: the env's default).
        policy: "random", "ou" (Ornstein-Uhlenbeck, Box actions only), "swingup-expert" (a scripted
            cartpole swing-up that reads the state: competent episodes), or a
            `PolicySource` that makes each episode's policy (e.g. a trained agent's).
        seed: episode i uses seed `seed + i` for the env reset and the policy.
        size: frame size in pixels (None: the env's default, 64 for DMC).
        action_repeat: simulator steps per action (None: the env's default, 2 for DMC).
        max_episode_steps: cut episodes after this many steps, recorded as truncated
            (None: the env's own limit, 500 steps for DMC cartpole at action repeat 2).
    """

    env_id: str = DMC_ENV_ID
    task: Any = None
    policy: str | PolicySource = "random"
    seed: int = 0
    size: int | None = None
    action_repeat: int | None = None
    max_episode_steps: int | None = None

    def __post_init__(self) -> None:
        # Before any worker starts, so a bad value fails here rather than in each worker.
        check_policy_name(self.policy)
        check_count("seed", self.seed, minimum=0)
        for name in ("size", "action_repeat", "max_episode_steps"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name))

    def make_env(self) -> gym.Env:
        """Make the env, choosing headless rendering first when there is no display."""
        use_egl_if_headless()
        options = {"task": self.task, "size": self.size, "action_repeat": self.action_repeat,
                   "include_state": True if needs_state(self.policy) else None}  # a scripted expert reads the state
        kwargs = {key: value for key, value in options.items() if value is not None}
        try:
            return gym.make(self.env_id, max_episode_steps=self.max_episode_steps, **kwargs)
        except gym.error.Error as error:  # an unknown id, a missing dependency: Gymnasium's own message, then ours
            raise ValueError(
                f"cannot make env {self.env_id!r}: {error} Give a registered Gymnasium id, "
                "e.g. imaginegym/DMC-v0 (the default) with --task, or imaginegym/DarkRoom-v0"
            ) from error


def env_meta(env: gym.Env, config: CollectConfig) -> DatasetMeta:
    """Dataset metadata of `env`; raises if a dataset cannot hold its spaces."""
    space, action_space = env.observation_space, env.action_space
    if not isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete)) or not isinstance(
        action_space, (spaces.Box, spaces.Discrete)
    ):
        raise DatasetError(
            f"{config.env_id} observes {space} and acts in {action_space}, but datasets store "
            "Box, Discrete or MultiDiscrete observations and Box or Discrete actions: wrap "
            "the env (e.g. gymnasium.wrappers.FlattenObservation) or use a pixel env such as "
            "imaginegym/DMC-v0"
        )
    unwrapped = env.unwrapped
    is_image = isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
    return DatasetMeta(
        env_id=config.env_id,
        task=task_text(getattr(unwrapped, "task", config.task or "")),
        observation_space=space,
        action_space=action_space,
        action_repeat=getattr(unwrapped, "action_repeat", 1),
        size=getattr(unwrapped, "size", space.shape[0]) if is_image else None,
    )


def run_episode(env: gym.Env, policy: Policy, seed: int) -> Episode:
    """Play one episode from `env.reset(seed=seed)` until terminated or truncated.

    A policy with ``needs_state`` also gets the simulator's state, ``info["state"]``."""
    observation, info = env.reset(seed=seed)
    frames, actions, rewards, terminated, truncated = [observation], [], [], [], []
    done, with_state = False, needs_state_of(policy)
    while not done:
        action = policy(observation, state=info.get("state")) if with_state else policy(observation)
        observation, reward, term, trunc, info = env.step(action)
        frames.append(observation)
        actions.append(action)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        done = term or trunc
    if isinstance(env.action_space, spaces.Discrete):
        actions = np.asarray(actions, np.int64).reshape(len(actions))  # (T,)
    else:
        actions = np.stack(actions).reshape(len(actions), -1)  # (T, A)
    return Episode(
        frames=np.asarray(np.stack(frames), dtype=env.observation_space.dtype),
        actions=actions,
        rewards=np.asarray(rewards),
        terminated=np.asarray(terminated),
        truncated=np.asarray(truncated),
    )


def needs_state_of(policy: Policy) -> bool:
    return bool(getattr(policy, "needs_state", False))


def record_episode(root: Path, env: gym.Env, config: CollectConfig, index: int) -> int:
    """Collect episode `index` and write its shard; returns its number of steps.

    An episode some other writer finished first is left as it is (it is identical).
    """
    meta = env_meta(env, config)
    seed = config.seed + index
    episode = run_episode(env, make_policy(config.policy, env.action_space, seed), seed)
    try:
        write_episode(
            root, index, episode, meta,
            seed=seed, policy=policy_name(config.policy), max_episode_steps=config.max_episode_steps,
        )
    except FileExistsError:
        pass
    return episode.length


_worker_env: gym.Env | None = None  # one env per worker process, reused across episodes
_PARENT_POLL_S = 0.2


def _init_worker(parent: int) -> None:
    # Ctrl-C reaches the whole process group; only the parent acts on it, letting the
    # workers finish their episode and exit cleanly when it shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed outright (SIGKILL, OOM) cannot shut the pool down; without this the
    # workers (about 350 MB each with DMC) would go on collecting its queued episodes.
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """Exit this worker once `parent` is gone: an orphan is re-parented, so `getppid`
    changes (also when the parent died before this worker started)."""
    # Not Linux's PR_SET_PDEATHSIG: that fires when the parent *thread* that started the
    # worker ends, which need not be the parent process.
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)  # an episode in flight leaves only a temporary file behind


def _record_in_worker(root: Path, config: CollectConfig, index: int) -> int:
    global _worker_env
    if _worker_env is None:
        # Made here rather than in the pool initializer, where an error would break the
        # pool and reach `collect` as a bare BrokenProcessPool instead of itself.
        _worker_env = config.make_env()
    return record_episode(root, _worker_env, config, index)


def pending_episodes(
    root: Path, config: CollectConfig, episodes: int, resume: bool, first: int = 0
) -> list[int]:
    """Indices in `range(first, first + episodes)` still to collect into `root`.

    Only the shards of that range must match `config` (seed, policy, time limit): a
    dataset may hold runs of other policies beside it, e.g. a model-based loop's.

    With `resume`, a missing `dataset.json` is written again from a shard's attributes.

    Raises:
        DatasetError: `root` is a file; or it is non-empty without `resume`; or, with
            `resume`, it is not a dataset, holds a shard of another dataset, or was
            collected with other settings.
    """
    check_dataset_dir(root)
    entries = [p.name for p in root.iterdir() if not is_temp(p.name)] if root.exists() else []
    wanted = range(first, first + episodes)
    if not entries:
        return list(wanted)
    if not resume:
        raise DatasetError(
            f"{root} already exists and is not empty: pass --resume (resume=True) to "
            "continue collecting into it, or choose another --out"
        )
    if METADATA_FILE not in entries:
        shards = sorted(name for name in entries if shard_episode(name) is not None)
        if not shards:
            raise DatasetError(
                f"{root} is not an imaginegym dataset (it has no {METADATA_FILE}), so there "
                "is nothing to resume: choose another --out"
            )
        # dataset.json was lost or deleted (see read_meta): every shard repeats its fields.
        ensure_meta(root, read_shard_meta(root / shards[0]))
    meta = read_meta(root)
    shards = load_index(root, meta)
    _check_resumable(root, config, meta, [shard for shard in shards if shard.episode in wanted])
    done = {shard.episode for shard in shards}
    return [i for i in wanted if i not in done]


def _check_resumable(
    root: Path, config: CollectConfig, meta: DatasetMeta, shards: list[ShardInfo]
) -> None:
    problems = [
        f"--{flag} {have!r} (asked {asked!r})"
        for flag, have, asked in [
            ("env", meta.env_id, config.env_id),
            ("task", meta.task, None if config.task is None else task_text(config.task)),
            ("size", meta.size, config.size),
            ("action-repeat", meta.action_repeat, config.action_repeat),
        ]
        if asked is not None and have != asked
    ]
    for shard in shards:
        problems += [
            f"--{flag} {have!r} (asked {asked!r}) in {shard.file}"
            for flag, have, asked in [
                ("seed", shard.seed - shard.episode, config.seed),
                ("policy", shard.policy, policy_name(config.policy)),
                ("max-episode-steps", shard.max_episode_steps, config.max_episode_steps),
            ]
            if have != asked
        ]
        if problems:
            break  # one shard's mismatch says it all
    if problems:
        raise DatasetError(
            f"cannot resume {root}: it was collected with " + "; ".join(problems)
            + ". Resume with the dataset's settings, or choose another --out"
        )


def collect(
    out: str | os.PathLike,
    config: CollectConfig,
    episodes: int,
    *,
    workers: int = 1,
    resume: bool = False,
    progress: bool = True,
    first: int = 0,
) -> EpisodeDataset:
    """Collect episodes `first .. first+episodes-1` of `config` into the dataset directory `out`.

    With `workers > 1` episodes run in that many spawned processes (never forked: a
    child forked after EGL is up cannot render), each reusing one env. With `resume`
    only missing episodes are collected, after checking the dataset's settings match.
    Episode i uses seed `config.seed + i` whatever `first` is, so ranges collected with
    other policies (`first` > 0) never repeat another range's seeds.

    Returns:
        The dataset, opened for reading.

    Raises:
        ValueError: `episodes` or `workers` is not an integer >= 1.
        DatasetError: `out` is unusable (see `pending_episodes`) or an episode does not
            match the dataset (other frame size or spaces); nothing on disk is damaged.
        OSError: the disk filled up (the message names the file, the free space and the
            fix); every finished episode is kept.
        WorkerDiedError: a worker process died (killed, or crashed in native code); the
            finished episodes are kept and `resume=True` continues.
        Exception: whatever a worker raised (e.g. making the env), as itself.
    """
    check_count("episodes", episodes)
    check_count("workers", workers)
    check_count("first", first, minimum=0)
    root = Path(out)
    todo = pending_episodes(root, config, episodes, resume, first)
    with tqdm(total=episodes, initial=episodes - len(todo), unit="episode",
              desc=f"collect {config.task or config.env_id}", disable=not progress) as bar:
        if workers > 1 and len(todo) > 1:
            _collect_parallel(root, config, todo, workers, bar)
        elif todo:
            _collect_serial(root, config, todo, bar)
    return EpisodeDataset(root)


def _collect_serial(root: Path, config: CollectConfig, todo: list[int], bar: tqdm) -> None:
    with config.make_env() as env:
        for index in todo:
            steps = record_episode(root, env, config, index)
            bar.update()
            bar.set_postfix(steps=steps)


def _collect_parallel(
    root: Path, config: CollectConfig, todo: list[int], workers: int, bar: tqdm
) -> None:
    use_egl_if_headless()  # in the environment the workers inherit, before they import anything
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)), mp_context=worker_context(),
        initializer=_init_worker, initargs=(os.getpid(),),
    )
    processes = pool._processes  # by pid; the pool drops it at shutdown, we need exit codes
    try:
        pending = {pool.submit(_record_in_worker, root, config, index) for index in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                steps = future.result()  # re-raises a worker's exception here
                bar.update()
                bar.set_postfix(steps=steps)
    except BrokenProcessPool as err:
        pool.shutdown()  # joins the workers, so every exit code is known
        raise WorkerDiedError(
            f"a collection worker process died ({_how_it_died(processes.values())}) while "
            f"collecting into {root}; the finished episodes are kept: collect again with "
            "--resume (resume=True) to continue"
        ) from err
    finally:
        # After an error or Ctrl-C, drop the queued episodes; those running are finished.
        pool.shutdown(cancel_futures=True)


def _how_it_died(processes: Iterable[BaseProcess]) -> str:
    """The exit of the worker that broke the pool (the others were sent SIGTERM after it)."""
    codes = [p.exitcode for p in processes if p.exitcode is not None]
    code = next((c for c in codes if c != -signal.SIGTERM), codes[0] if codes else None)
    if code is None:
        return "exit code unknown"
    if code >= 0:
        return f"exit code {code}"
    name = signal.Signals(-code).name
    if -code == signal.SIGKILL:
        return f"killed by {name}, often the kernel's out-of-memory killer"
    return f"killed by {name}"
