"""The DarkRoom family: contracts, task splits, rewards, optimal returns, horizons, tasks and errors."""

from __future__ import annotations

import hashlib
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import imaginegym  # noqa: F401  (registers the ids)
from imaginegym.envs import darkroom  # the module, not its `test_tasks`, which pytest would collect

NAMES = ("DarkRoom", "DarkRoomHard", "DarkKeyToDoor")
STAY, UP, DOWN, LEFT, RIGHT = range(5)


def make(name: str, **kwargs) -> gym.Env:
    return gym.make(f"imaginegym/{name}-v0", **kwargs)


def toward(pos: np.ndarray, target: tuple[int, int]) -> int:
    """A shortest-path action from `pos` to `target` (x first), staying once there."""
    (x, y), (tx, ty) = pos, target
    if x != tx:
        return RIGHT if tx > x else LEFT
    if y != ty:
        return DOWN if ty > y else UP
    return STAY


def scripted_return(env: gym.Env, task) -> float:
    """Run to the goal (or to the key, then after its reward to the door) by shortest paths; the episode's return."""
    obs, _ = env.reset(options={"task": task})
    targets = list(task) if isinstance(task[0], tuple) else [task]
    total, truncated = 0.0, False
    while not truncated:
        obs, reward, terminated, truncated, _ = env.step(toward(obs, targets[0]))
        assert not terminated
        total += reward
        if reward and len(targets) > 1:
            targets.pop(0)
    return total


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
def test_gymnasium_check_env(name, render_mode):
    check_env(make(name, render_mode=render_mode).unwrapped)


@pytest.mark.parametrize("name", NAMES)
def test_sb3_check_env_without_warnings(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(make(name).unwrapped)


@pytest.mark.parametrize("name, size, horizon", [("DarkRoom", 9, 20), ("DarkRoomHard", 17, 20), ("DarkKeyToDoor", 9, 50)])
def test_spaces_start_and_registration(name, size, horizon):
    env = make(name)
    assert env.spec.max_episode_steps is None  # the env truncates itself, no TimeLimit wrapper
    assert env.observation_space == gym.spaces.MultiDiscrete([size, size])
    assert env.action_space == gym.spaces.Discrete(5)
    assert darkroom.ACTIONS == ("stay", "up", "down", "left", "right")
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.int64 and obs.tolist() == [size // 2, size // 2] and info == {}
    assert env.unwrapped.horizon == horizon


@pytest.mark.parametrize("name, train, test", [("DarkRoom", 73, 8), ("DarkRoomHard", 260, 29), ("DarkKeyToDoor", 6233, 328)])
def test_splits_partition_the_tasks(name, train, test):
    train_tasks, test_tasks = darkroom.train_tasks(name), darkroom.test_tasks(name)
    assert (len(train_tasks), len(test_tasks)) == (train, test)
    assert not set(train_tasks) & set(test_tasks)
    assert sorted(train_tasks + test_tasks) == sorted(make(name).unwrapped.tasks)
    assert darkroom.train_tasks(f"imaginegym/{name}-v0") == train_tasks
    assert make(name).unwrapped.task == train_tasks[0]  # the documented default


def test_splits_are_pinned():
    assert darkroom.test_tasks("DarkRoom") == ((4, 1), (4, 2), (0, 3), (3, 3), (1, 6), (7, 6), (8, 7), (2, 8))
    assert darkroom.test_tasks("DarkRoomHard")[:4] == ((12, 0), (15, 0), (5, 1), (11, 2))
    assert darkroom.test_tasks("DarkKeyToDoor")[:3] == (((0, 0), (5, 1)), ((0, 0), (6, 3)), ((0, 0), (6, 4)))
    digests = {name: hashlib.sha256(repr(darkroom.test_tasks(name)).encode()).hexdigest()[:12] for name in NAMES}
    assert digests == {"DarkRoom": "a13b8058928b", "DarkRoomHard": "b672419598c2", "DarkKeyToDoor": "5287b6d55b6d"}


def test_unknown_split_name():
    with pytest.raises(ValueError, match=r"unknown DarkRoom env 'DarkRoom-v0'.*'imaginegym/DarkRoom-v0'"):
        darkroom.train_tasks("DarkRoom-v0")


def test_darkroom_optimal_return_is_reached_for_every_goal():
    env = make("DarkRoom")
    for goal in env.unwrapped.tasks:
        env.reset(options={"task": goal})
        assert scripted_return(env, goal) == env.unwrapped.optimal_return(), goal
    returns = {goal: make("DarkRoom", task=goal).unwrapped.optimal_return() for goal in [(4, 4), (4, 5), (0, 0), (8, 8), (2, 4)]}
    assert returns == {(4, 4): 20.0, (4, 5): 20.0, (0, 0): 13.0, (8, 8): 13.0, (2, 4): 19.0}


def test_random_play_never_beats_the_optimum():
    rng = np.random.default_rng(0)
    for name, task in [("DarkRoom", (5, 4)), ("DarkRoomHard", (8, 9)), ("DarkKeyToDoor", ((4, 5), (4, 4)))]:
        env = make(name, task=task)
        for _ in range(30):
            env.reset()
            total = sum(env.step(int(a))[1] for a in rng.integers(0, 5, env.unwrapped.horizon))
            assert total <= env.unwrapped.optimal_return()


def test_darkroomhard_and_keytodoor_optimal_returns_on_samples():
    hard = make("DarkRoomHard")
    for goal in hard.unwrapped.tasks[::7] + ((0, 0), (16, 16), (8, 8), (16, 0)):
        hard.reset(options={"task": goal})
        assert hard.unwrapped.optimal_return() == 1.0 == scripted_return(hard, goal), goal
    env = make("DarkKeyToDoor")
    cells = [(4, 4), (0, 0), (8, 8), (4, 5), (0, 8), (3, 1)]
    for task in [(key, door) for key in cells for door in cells]:  # includes key == door and key or door at the start
        env.reset(options={"task": task})
        assert env.unwrapped.optimal_return() == 2.0 == scripted_return(env, task), task


def test_darkroom_pays_every_step_at_the_goal():
    env = make("DarkRoom", task=(4, 3))
    env.reset()
    assert [env.step(a)[1] for a in (UP, STAY, DOWN, UP, LEFT)] == [1.0, 1.0, 0.0, 1.0, 0.0]


def test_darkroomhard_pays_once():
    env = make("DarkRoomHard", task=(8, 6))
    env.reset()
    rewards = [env.step(a)[1] for a in (UP, UP, STAY, DOWN, UP, STAY)]
    assert rewards == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    env.reset()  # a new episode pays again
    assert [env.step(UP)[1] for _ in range(2)] == [0.0, 1.0]


def test_keytodoor_pays_key_then_door_once_each():
    env = make("DarkKeyToDoor", task=((4, 2), (4, 3)))  # the door lies between the start and the key
    env.reset()
    rewards = [env.step(a)[1] for a in (UP, UP, STAY, DOWN, STAY, UP, DOWN)]
    assert rewards == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # door first: nothing; key; door; never again


def test_keytodoor_door_on_the_key_opens_on_the_next_step():
    env = make("DarkKeyToDoor", task=((4, 3), (4, 3)))
    env.reset()
    assert [env.step(a)[1] for a in (UP, STAY, STAY)] == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("name, horizon", [("DarkRoom", 20), ("DarkRoomHard", 20), ("DarkKeyToDoor", 50)])
def test_truncation_at_the_horizon_then_reset_needed(name, horizon):
    env = make(name).unwrapped
    with pytest.raises(gym.error.ResetNeeded, match="before the first reset"):
        env.step(STAY)
    env.reset()
    ends = [env.step(RIGHT)[2:4] for _ in range(horizon)]
    assert ends == [(False, False)] * (horizon - 1) + [(False, True)]
    with pytest.raises(gym.error.ResetNeeded, match=f"truncated at its horizon of {horizon} steps"):
        env.step(STAY)
    env.reset()
    assert env.step(STAY)[3] is False


def test_walls_stop_the_agent():
    env = make("DarkRoom")
    env.reset()
    for _ in range(6):
        obs = env.step(LEFT)[0]
    assert obs.tolist() == [0, 4]
    for _ in range(6):
        obs = env.step(UP)[0]
    assert obs.tolist() == [0, 0]


def test_task_by_construction_and_by_reset_options():
    assert make("DarkRoom", task=(2, 7)).unwrapped.task == (2, 7)
    assert make("DarkRoom", task=[2, 7]).unwrapped.task == (2, 7)  # e.g. read back from JSON
    assert make("DarkRoom", task=np.array([2, 7])).unwrapped.task == (2, 7)
    assert make("DarkRoom", task=7 * 9 + 2).unwrapped.task == (2, 7)
    assert make("DarkRoomHard", task=np.int64(7 * 17 + 2)).unwrapped.task == (2, 7)
    assert make("DarkKeyToDoor", task=[[1, 2], [3, 4]]).unwrapped.task == ((1, 2), (3, 4))
    assert make("DarkKeyToDoor", task=(2 * 9 + 1) * 81 + 4 * 9 + 3).unwrapped.task == ((1, 2), (3, 4))

    env = make("DarkRoom", task=(4, 3))
    env.reset(options={"task": (4, 5)})
    assert env.unwrapped.task == (4, 5) and env.step(DOWN)[1] == 1.0
    env.reset()  # the task stays until changed
    assert env.unwrapped.task == (4, 5) and env.step(DOWN)[1] == 1.0


@pytest.mark.parametrize(
    "name, task, message",
    [
        ("DarkRoom", 81, r"task index 81 is out of range: DarkRoom has tasks 0\.\.80"),
        ("DarkRoom", -1, r"task index -1 is out of range"),
        ("DarkRoom", (9, 0), r"task \(9, 0\) for DarkRoom: give a goal \(x, y\) with x, y in 0\.\.8, or an index in 0\.\.80"),
        ("DarkRoom", (1.0, 2.0), r"task \(1\.0, 2\.0\) for DarkRoom"),
        ("DarkRoom", (1, 2, 3), r"task \(1, 2, 3\) for DarkRoom"),
        ("DarkRoom", True, r"task True for DarkRoom"),
        ("DarkRoomHard", (17, 3), r"x, y in 0\.\.16, or an index in 0\.\.288"),
        ("DarkKeyToDoor", (1, 2), r"give \(key, door\) as \(\(x, y\), \(x, y\)\) with x, y in 0\.\.8, or an index in 0\.\.6560"),
        ("DarkKeyToDoor", [[1, 2], [3]], r"task \[\[1, 2\], \[3\]\] for DarkKeyToDoor"),
    ],
)
def test_bad_tasks_name_the_value_and_the_range(name, task, message):
    with pytest.raises(ValueError, match=message):
        make(name, task=task)
    env = make(name)
    with pytest.raises(ValueError, match=message):
        env.reset(options={"task": task})


def test_bad_actions_options_and_render_mode():
    env = make("DarkRoom").unwrapped
    env.reset()
    for action in (5, -1, 1.0, True, np.array([1]), "up"):
        with pytest.raises(ValueError, match=r"action .*: expected an integer in 0\.\.4 \(0 stay, 1 up, 2 down, 3 left, 4 right\)"):
            env.step(action)
    assert env.step(np.int64(1))[0].tolist() == [4, 3] and env.step(np.array(2))[0].tolist() == [4, 4]
    with pytest.raises(ValueError, match=r"unknown reset options \['goal'\]: DarkRoom takes only 'task'"):
        env.reset(options={"goal": (1, 1)})
    with pytest.raises(ValueError, match=r"render_mode='ansi': use 'rgb_array' or None"):
        darkroom.DarkRoom(render_mode="ansi")


def test_same_seed_same_episode():
    rollouts = []
    for _ in range(2):
        env = make("DarkKeyToDoor", task=((2, 2), (6, 6)))
        obs, _ = env.reset(seed=3)
        rollouts.append([obs.tolist()] + [env.step(a)[:2] for a in (UP, LEFT, LEFT, UP, DOWN)])
    assert rollouts[0][0] == [4, 4] and str(rollouts[0]) == str(rollouts[1])


def pixel(image: np.ndarray, x: int, y: int, inner: bool = False) -> tuple[int, ...]:
    """The colour of cell (x, y) of an 8-pixel-per-cell render: its corner, or its centre (where the agent is drawn)."""
    offset = 4 if inner else 0
    return tuple(int(c) for c in image[y * 8 + offset, x * 8 + offset])


def test_render_draws_agent_goal_key_and_door():
    assert make("DarkRoom").unwrapped.render() is None
    env = make("DarkKeyToDoor", task=((4, 3), (0, 8)), render_mode="rgb_array")
    env.reset()
    image = env.render()
    assert image.shape == (72, 72, 3) and image.dtype == np.uint8
    assert pixel(image, 4, 4, inner=True) == (220, 40, 40) and pixel(image, 4, 4) == (40, 40, 40)  # agent on the floor
    assert pixel(image, 4, 3) == (230, 200, 0) and pixel(image, 0, 8) == (0, 120, 255) and pixel(image, 1, 1) == (40, 40, 40)
    env.step(UP)
    image = env.render()
    assert pixel(image, 4, 3, inner=True) == (220, 40, 40) and pixel(image, 4, 3) == (40, 40, 40)  # the key is taken
    assert make("DarkRoomHard", render_mode="rgb_array").unwrapped.render().shape == (136, 136, 3)
