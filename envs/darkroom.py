"""The DarkRoom family of Algorithm Distillation (Laskin et al. 2022): grid rooms where the agent sees only its position.

    env = gym.make("imaginegym/DarkRoom-v0", task=(2, 7))          # the goal (x, y)
    env = gym.make("imaginegym/DarkKeyToDoor-v0", task=((1, 1), (7, 3)))  # (key, door)
    obs, info = env.reset(options={"task": 12})  # an index into env.unwrapped.tasks

| env | grid | horizon | reward |
| --- | --- | --- | --- |
| `DarkRoom` | 9x9 | 20 | 1 on every step that ends at the goal |
| `DarkRoomHard` | 17x17 | 20 | 1 on the first step that ends at the goal |
| `DarkKeyToDoor` | 9x9 | 50 | 1 on the first step that ends at the key, then 1 on the first later step that ends at the door |

Positions are (x, y) cells, x the column from the left and y the row from the top (as in
`render()`), both in 0..size-1. Every episode starts at the centre ((4, 4) on 9x9, (8, 8) on
17x17) and lasts exactly `horizon` steps: `truncated=True` at the last one, never
`terminated`. The env enforces the horizon itself, so no TimeLimit wrapper is registered.

Observation: `MultiDiscrete([size, size])`, the position as `int64 (2,)`, nothing else. The
goal, the key and whether the key is held are hidden (as in AD): an agent infers them from
rewards, in context. Two small integers embed directly (one embedding per coordinate, or a
cell index y * size + x) and one-hot encode for SB3.

Actions: `Discrete(5)`, `ACTIONS`: 0 stay, 1 up (y - 1), 2 down (y + 1), 3 left (x - 1),
4 right (x + 1). A move into a wall leaves the agent where it is. Dynamics are deterministic;
`reset(seed=...)` seeds `np_random`, which nothing draws from.

Rewards are for the cell the agent is in after a step, never for the start cell before the
first step. So `optimal_return()`, the most a policy can collect, follows from the Manhattan
distance d between cells: the first rewarded step is step max(d, 1), since a goal at the
start is collected by staying.
- DarkRoom: horizon - max(d, 1) + 1 (20 for a goal at or next to the centre, 13 for a corner).
- DarkRoomHard: 1 (every goal is at most 16 steps from the centre).
- DarkKeyToDoor: 2 (key by step max(d_start_key, 1), door max(d_key_door, 1) steps later,
  at most 8 + 16 = 24 <= 50). A door on the key's cell is opened by staying one step.

Tasks: `Env.tasks` lists every task in a fixed order: goals (x, y) row by row,
`index = y * size + x`; key-door pairs by key, then door: `index = key_index * 81 + door_index`.
A task is given as that tuple (any integer sequence of that shape) or as its index; it is
kept for later episodes until `reset(options={"task": ...})` changes it. The default is the
env's first train task: (0, 0) for DarkRoom and DarkRoomHard, ((0, 0), (0, 0)) for DarkKeyToDoor.

Splits (`train_tasks(name)`, `test_tasks(name)`): NumPy's frozen `RandomState(SPLIT_SEED)`
with SPLIT_SEED = 0 permutes the task indices; the first `test_count` are the test tasks,
the rest the train tasks, each listed in task order. DarkRoom: 73 train / 8 test, the test
goals (4, 1), (4, 2), (0, 3), (3, 3), (1, 6), (7, 6), (8, 7), (2, 8). DarkRoomHard:
260 / 29 (the same tenth). DarkKeyToDoor: 6233 / 328 (5%).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import gymnasium as gym
import numpy as np

ACTIONS: tuple[str, ...] = ("stay", "up", "down", "left", "right")
"""Action names by index; each moves (dx, dy) by `_MOVES[action]`."""
_MOVES = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))
SPLIT_SEED = 0
"""Seed of `np.random.RandomState` (whose stream NumPy keeps frozen) that splits each env's tasks."""

Cell = tuple[int, int]

_CELL_PIXELS = 8
_FLOOR, _GOAL, _KEY, _DOOR, _AGENT = (40, 40, 40), (0, 200, 0), (230, 200, 0), (0, 120, 255), (220, 40, 40)


def _cells(size: int) -> tuple[Cell, ...]:
    return tuple((x, y) for y in range(size) for x in range(size))


def _distance(a: Cell, b: Cell) -> int:
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


class _DarkGrid(gym.Env[np.ndarray, np.int64]):
    """A size x size room with hidden targets: movement, horizon, tasks and rendering shared by the family."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    size: int
    horizon: int
    test_count: int
    tasks: tuple[Any, ...]
    task_format: str  # how a task is written, for error messages

    def __init__(self, task: Any = None, render_mode: str | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: use 'rgb_array' or None")
        self.render_mode = render_mode
        self.start: Cell = (self.size // 2, self.size // 2)
        self.observation_space = gym.spaces.MultiDiscrete([self.size, self.size])
        self.action_space = gym.spaces.Discrete(len(ACTIONS))
        self.task = _split(type(self))[0][0] if task is None else self._check_task(task)
        self._pos, self._t = self.start, 0
        self._begin_episode()
        self._needs_reset: str | None = "before the first reset()"  # why `step` needs a reset first

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode at the centre; `options={"task": ...}` sets the task for this and later episodes."""
        super().reset(seed=seed)
        options = options or {}
        if set(options) - {"task"}:
            raise ValueError(f"unknown reset options {sorted(set(options) - {'task'})}: {type(self).__name__} takes only 'task'")
        if "task" in options:
            self.task = self._check_task(options["task"])
        self._pos, self._t, self._needs_reset = self.start, 0, None
        self._begin_episode()
        return self._observe(), {}

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move by `action` (see `ACTIONS`); the reward is for the cell reached. Truncates at `horizon` steps."""
        if self._needs_reset is not None:
            raise gym.error.ResetNeeded(f"{type(self).__name__}: step() called {self._needs_reset}; call reset() first")
        if isinstance(action, (bool, np.bool_)) or not self.action_space.contains(action):
            raise ValueError(f"action {action!r}: expected an integer in 0..{len(ACTIONS) - 1} (" + ", ".join(f"{i} {a}" for i, a in enumerate(ACTIONS)) + ")")
        dx, dy = _MOVES[int(action)]
        self._pos = (min(max(self._pos[0] + dx, 0), self.size - 1), min(max(self._pos[1] + dy, 0), self.size - 1))
        self._t += 1
        reward = self._reward()
        truncated = self._t >= self.horizon
        if truncated:
            self._needs_reset = f"after the episode was truncated at its horizon of {self.horizon} steps"
        return self._observe(), reward, False, truncated, {}

    def optimal_return(self) -> float:
        """The most any policy collects in an episode of the current task (see the module docstring)."""
        raise NotImplementedError

    def render(self) -> np.ndarray | None:
        """The room as `uint8 (8 * size, 8 * size, 3)`: agent red (over the cell's colour), goal green,
        key yellow until taken, door blue, floor dark grey; None if render_mode is None."""
        if self.render_mode is None:
            return None
        cells = np.empty((self.size, self.size, 3), np.uint8)  # (y, x, rgb)
        cells[:] = _FLOOR
        for (x, y), colour in self._marks():
            cells[y, x] = colour
        image = cells.repeat(_CELL_PIXELS, axis=0).repeat(_CELL_PIXELS, axis=1)
        x, y = self._pos
        image[y * _CELL_PIXELS + 2 : (y + 1) * _CELL_PIXELS - 2, x * _CELL_PIXELS + 2 : (x + 1) * _CELL_PIXELS - 2] = _AGENT
        return image

    def _check_task(self, task: Any) -> Any:
        name, count = type(self).__name__, len(self.tasks)
        if isinstance(task, numbers.Integral) and not isinstance(task, (bool, np.bool_)):
            if not 0 <= task < count:
                raise ValueError(f"task index {task} is out of range: {name} has tasks 0..{count - 1} (see {name}.tasks)")
            return self.tasks[int(task)]
        try:
            array = np.asarray(task)
            valid = array.dtype.kind in "iu" and array.shape == np.shape(self.tasks[0]) and bool(((array >= 0) & (array < self.size)).all())
        except ValueError:  # a ragged nested list
            valid = False
        if not valid:
            raise ValueError(f"task {task!r} for {name}: give {self.task_format} with x, y in 0..{self.size - 1}, or an index in 0..{count - 1} into {name}.tasks")
        return self.tasks[self._index(array)]

    def _index(self, task: np.ndarray) -> int:
        return int(task[1] * self.size + task[0])

    def _observe(self) -> np.ndarray:
        return np.array(self._pos, dtype=np.int64)

    def _begin_episode(self) -> None:
        """Clear the per-episode flags of the subclass."""

    def _reward(self) -> float:
        raise NotImplementedError

    def _marks(self) -> list[tuple[Cell, tuple[int, int, int]]]:
        raise NotImplementedError


class DarkRoom(_DarkGrid):
    """9x9, horizon 20: reward 1 on every step that ends at the hidden goal. A task is the goal (x, y).

    Args:
        task: the goal (x, y), or its index `y * 9 + x` into `DarkRoom.tasks`; None: (0, 0),
            the first train task.
        render_mode: "rgb_array" (`render()` draws the room) or None.
    """

    size, horizon, test_count = 9, 20, 8
    tasks: tuple[Cell, ...] = _cells(9)
    task_format = "a goal (x, y)"

    def optimal_return(self) -> float:
        return float(max(self.horizon - max(_distance(self.start, self.task), 1) + 1, 0))

    def _reward(self) -> float:
        return float(self._pos == self.task)

    def _marks(self) -> list[tuple[Cell, tuple[int, int, int]]]:
        return [(self.task, _GOAL)]


class DarkRoomHard(DarkRoom):
    """17x17, horizon 20 (AD's Dark Room episode length): reward 1 only on the first step that ends at the goal.

    Every goal is at most 16 steps from the centre (8, 8), so each is reachable.

    Args:
        task: the goal (x, y), or its index `y * 17 + x` into `DarkRoomHard.tasks`; None:
            (0, 0), the first train task.
        render_mode: "rgb_array" (`render()` draws the room) or None.
    """

    size, horizon, test_count = 17, 20, 29
    tasks: tuple[Cell, ...] = _cells(17)

    def optimal_return(self) -> float:
        return float(max(_distance(self.start, self.task), 1) <= self.horizon)

    def _begin_episode(self) -> None:
        self._reached = False

    def _reward(self) -> float:
        if self._reached or self._pos != self.task:
            return 0.0
        self._reached = True
        return 1.0


class DarkKeyToDoor(_DarkGrid):
    """9x9, horizon 50: reward 1 on the first step that ends at the key, then 1 on the first later step at the door.

    Reaching the door without the key gives nothing and opens nothing. Whether the key is
    held is not observed. A task is (key, door), each an (x, y); key and door may share a cell.

    Args:
        task: ((key x, key y), (door x, door y)), or its index `key_index * 81 +
            door_index` into `DarkKeyToDoor.tasks`; None: ((0, 0), (0, 0)), the first train task.
        render_mode: "rgb_array" (`render()` draws the room) or None.
    """

    size, horizon, test_count = 9, 50, 328
    tasks: tuple[tuple[Cell, Cell], ...] = tuple((key, door) for key in _cells(9) for door in _cells(9))
    task_format = "(key, door) as ((x, y), (x, y))"

    def optimal_return(self) -> float:
        key, door = self.task
        at_key = max(_distance(self.start, key), 1)
        at_door = at_key + max(_distance(key, door), 1)
        return float((at_key <= self.horizon) + (at_door <= self.horizon))

    def _index(self, task: np.ndarray) -> int:
        cells = self.size * self.size
        return super()._index(task[0]) * cells + super()._index(task[1])

    def _begin_episode(self) -> None:
        self._has_key, self._opened = False, False

    def _reward(self) -> float:
        key, door = self.task
        if not self._has_key:
            self._has_key = self._pos == key
            return float(self._has_key)
        if not self._opened and self._pos == door:
            self._opened = True
            return 1.0
        return 0.0

    def _marks(self) -> list[tuple[Cell, tuple[int, int, int]]]:
        key, door = self.task
        return [(door, _DOOR)] + ([] if self._has_key else [(key, _KEY)])


_ENVS: dict[str, type[_DarkGrid]] = {name: cls for cls in (DarkRoom, DarkRoomHard, DarkKeyToDoor) for name in (cls.__name__, f"imaginegym/{cls.__name__}-v0")}


@functools.cache
def _split(cls: type[_DarkGrid]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    order = np.random.RandomState(SPLIT_SEED).permutation(len(cls.tasks))
    test = set(order[: cls.test_count].tolist())
    return tuple(t for i, t in enumerate(cls.tasks) if i not in test), tuple(t for i, t in enumerate(cls.tasks) if i in test)


def _env_class(name: str) -> type[_DarkGrid]:
    if name not in _ENVS:
        raise ValueError(f"unknown DarkRoom env {name!r}: use one of " + ", ".join(map(repr, _ENVS)))
    return _ENVS[name]


def train_tasks(name: str) -> tuple[Any, ...]:
    """The train tasks of env `name` ("DarkRoom", "DarkRoomHard", "DarkKeyToDoor" or its id "imaginegym/DarkRoom-v0"...), in task order."""
    return _split(_env_class(name))[0]


def test_tasks(name: str) -> tuple[Any, ...]:
    """The held-out test tasks of env `name` (as in `train_tasks`), in task order; disjoint from the train tasks."""
    return _split(_env_class(name))[1]
