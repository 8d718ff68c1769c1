"""Source RL algorithms whose learning histories Algorithm Distillation learns from.

Each source learns one task from scratch, episode after episode, through a small interface:
``act(obs, rng) -> action`` and ``update(obs, action, reward, next_obs, done)``, with
``begin_episode(index)`` before each episode. Sources see what the agent sees (observations,
actions and rewards), never the hidden task.

- `OptimisticExplorer` (``optimistic``, for grid worlds with ``MultiDiscrete`` positions): a
  model-based learner with optimism in the face of uncertainty (R-max style). It learns what
  each action does to the position (one displacement per action, clipped at the walls, and
  corrected by every transition it sees), and the reward of every (cell, rewards-so-far) it has
  entered; a state it has not entered is assumed to pay ``optimism``: at every step for
  DarkRoom, whose goal pays at every step, and once, ending the plan, where rewards come once
  (``unseen``), where once the episode's rewards reach ``reward_memory`` nothing more is
  sought and the first best action (staying) is taken. It plans
  ``horizon`` steps ahead by value iteration at every step, so it sweeps the room for the
  goal and then goes to it by the shortest path. Decaying epsilon-greedy noise
  (``epsilon * epsilon_decay**episode``) makes its early episodes diverse, so the history
  shows steady improvement, as a learner's does. Its state counts rewards received so far
  in the episode (capped at ``reward_memory``), so that entering a state always pays the same
  (DarkKeyToDoor's key held, DarkRoomHard's goal collected).
- `QLearning` (``q-learning``): tabular Q-learning on the same state with optimistic
  initial values and epsilon-greedy exploration: slower, the classic baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import gymnasium as gym
import numpy as np

SOURCE_NAMES = ("optimistic", "q-learning")


@dataclass(frozen=True)
class SourceConfig:
    """A source algorithm's settings (one `imaginegym ad histories` flag each)."""

    name: str = "optimistic"  # optimistic | q-learning
    epsilon: float = 0.3  # probability of a random action in episode 0
    epsilon_decay: float = 0.85  # per episode
    optimism: float = 0.9  # optimistic: reward assumed for entering a state never entered
    unseen: str = "auto"  # optimistic: "per-step" (every unseen state on a path pays `optimism`) or "once" (the first ends the plan); auto: by env
    discount: float = 0.9  # q-learning: discount; optimistic with unseen="once": discount of the plan (nearer rewards first)
    reward_memory: int = -1  # rewards-so-far counted into the state, capped (-1: the env's default, see `default_reward_memory`)
    learning_rate: float = 0.5  # q-learning: step size
    initial_value: float = 1.0  # q-learning: optimistic initial Q

    def __post_init__(self):
        if self.name not in SOURCE_NAMES:
            raise ValueError(f"source={self.name!r}: use one of {', '.join(SOURCE_NAMES)}")
        if self.unseen not in ("auto", "per-step", "once"):
            raise ValueError(f"unseen={self.unseen!r}: use auto, per-step or once")
        if not 0 <= self.epsilon <= 1 or not 0 <= self.epsilon_decay <= 1:
            raise ValueError(f"epsilon={self.epsilon} and epsilon_decay={self.epsilon_decay} must be in [0, 1]")


def default_reward_memory(env: gym.Env) -> int:
    """How many rewards in an episode the state counts, so that entering a state always pays the same: 0 for DarkRoom
    (every step at the goal pays), 1 for DarkRoomHard (goal collected), 2 for DarkKeyToDoor (key held, door opened)."""
    name = type(env.unwrapped).__name__
    return {"DarkRoom": 0, "DarkRoomHard": 1, "DarkKeyToDoor": 2}.get(name, 1)


def default_unseen(env: gym.Env) -> str:
    """How an unseen state counts in the optimistic plan: "per-step" where the reward repeats at every step (DarkRoom's
    goal), so a found goal outweighs any unseen cell; "once" where rewards come once (DarkRoomHard, DarkKeyToDoor), so
    that a plan through many unseen states does not outweigh the rewards it knows."""
    return "per-step" if type(env.unwrapped).__name__ == "DarkRoom" else "once"


def make_source(config: SourceConfig, env: gym.Env) -> "OptimisticExplorer | QLearning":
    space, actions = env.observation_space, env.action_space
    if not isinstance(space, gym.spaces.MultiDiscrete) or space.nvec.ndim != 1 or not isinstance(actions, gym.spaces.Discrete):
        raise ValueError(f"source {config.name!r} learns envs with MultiDiscrete observations and Discrete actions (grid worlds such as "
                         f"imaginegym/DarkRoom-v0); this env has {space} and {actions}")
    memory = default_reward_memory(env) if config.reward_memory < 0 else config.reward_memory
    horizon = getattr(env.unwrapped, "horizon", None) or env.spec.max_episode_steps
    if config.unseen == "auto":
        config = replace(config, unseen=default_unseen(env))
    cls = OptimisticExplorer if config.name == "optimistic" else QLearning
    return cls(config, space.nvec.astype(np.int64), int(actions.n), memory, int(horizon))


class _TabularSource:
    def __init__(self, config: SourceConfig, nvec: np.ndarray, num_actions: int, reward_memory: int, horizon: int):
        self.config, self.nvec, self.num_actions = config, nvec, num_actions
        self.memory_cap, self.horizon = reward_memory, horizon
        self.num_cells = int(np.prod(nvec))
        self.num_states = self.num_cells * (reward_memory + 1)
        self.epsilon = config.epsilon
        self._memory, self._t = 0, 0

    def begin_episode(self, index: int) -> None:
        self.epsilon = self.config.epsilon * self.config.epsilon_decay ** index
        self._memory, self._t = 0, 0

    def cell(self, obs: np.ndarray) -> int:
        return int(np.ravel_multi_index(tuple(int(v) for v in obs), tuple(self.nvec)))

    def state(self, obs: np.ndarray, memory: int | None = None) -> int:
        return (self._memory if memory is None else memory) * self.num_cells + self.cell(obs)

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> int:
        if rng.random() < self.epsilon:
            return int(rng.integers(self.num_actions))
        q = self.action_values(obs)
        best = np.flatnonzero(q >= q.max() - 1e-9)
        if self.done_learning():
            return int(best[0])  # nothing left to gain this episode: the first best action (DarkRoom's "stay")
        return int(rng.choice(best))

    def done_learning(self) -> bool:
        """The episode can pay nothing more (its rewards so far reached the cap of a once-paying env)."""
        return False

    def update(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, done: bool) -> None:
        memory = min(self._memory + (reward > 0), self.memory_cap)
        self._learn(self.state(obs), action, reward, self.state(next_obs, memory), next_obs, memory, done)
        self._memory, self._t = memory, self._t + 1


class OptimisticExplorer(_TabularSource):
    """R-max-style model-based explorer; see the module docstring."""

    def done_learning(self) -> bool:
        return self.config.unseen == "once" and 0 < self.memory_cap == self._memory

    def __init__(self, *args):
        super().__init__(*args)
        n = len(self.nvec)
        self.displacement = np.zeros((self.num_actions, n), dtype=np.int64)  # learned effect of each action
        self.tried = np.zeros(self.num_actions, dtype=bool)
        self.known_next = -np.ones((self.num_states, self.num_actions), dtype=np.int64)  # observed transitions
        self.reward = np.full(self.num_states, np.nan)  # reward for entering a state; nan: never entered
        coords = np.stack(np.unravel_index(np.arange(self.num_cells), tuple(self.nvec)), axis=1)
        self._coords = coords

    def _predicted_next(self) -> np.ndarray:
        """(S, A) next states: observed ones, else the cell moved by the action's learned displacement (unknown action: stay)."""
        cells = np.clip(self._coords[:, None, :] + self.displacement[None], 0, self.nvec - 1)  # (C, A, n)
        flat = np.ravel_multi_index(tuple(np.moveaxis(cells, -1, 0)), tuple(self.nvec))  # (C, A)
        layers = [flat + m * self.num_cells for m in range(self.memory_cap + 1)]
        predicted = np.concatenate(layers, axis=0)
        return np.where(self.known_next >= 0, self.known_next, predicted)

    def action_values(self, obs: np.ndarray) -> np.ndarray:
        nxt = self._predicted_next()
        # entering a state pays its reward; an unseen state pays `optimism`. Rewards raise the memory layer.
        reward = np.where(np.isnan(self.reward), self.config.optimism, self.reward)
        target = nxt.copy()
        if self.memory_cap > 0:
            raised = np.minimum(nxt // self.num_cells + 1, self.memory_cap) * self.num_cells + nxt % self.num_cells
            target = np.where(reward[nxt] > 0, raised, nxt)
        value = np.zeros(self.num_states)
        q = np.zeros((self.num_states, self.num_actions))
        if self.config.unseen == "once":  # entering an unseen state ends the plan with `optimism`
            unseen = np.isnan(self.reward)[nxt]
            if self.memory_cap > 0:  # after the last reward the env can pay (the top layer) nothing is left to find
                unseen &= nxt < self.memory_cap * self.num_cells
                reward = np.where(np.isnan(self.reward), 0.0, self.reward)
            for _ in range(max(self.horizon - self._t, 1)):
                q = np.where(unseen, self.config.optimism, reward[nxt] + self.config.discount * value[target])
                value = q.max(axis=1)
        else:
            for _ in range(max(self.horizon - self._t, 1)):
                q = reward[nxt] + value[target]
                value = q.max(axis=1)
        q = q[self.state(obs)]
        return np.where(self.tried, q, np.inf)  # an action never tried is tried first

    def _learn(self, s, action, reward, s_next, next_obs, memory, done) -> None:
        layer = (s // self.num_cells) * self.num_cells  # transitions and rewards are kept in the layer of the state acted in
        self.known_next[s, action] = layer + s_next % self.num_cells
        self.reward[layer + s_next % self.num_cells] = reward
        move = np.asarray(next_obs, dtype=np.int64) - self._coords[s % self.num_cells]
        if np.any(move != 0):  # a move against a wall shows nothing about the action
            self.displacement[action] = move
        self.tried[action] = True


class QLearning(_TabularSource):
    """Tabular Q-learning with optimistic initial values."""

    def __init__(self, *args):
        super().__init__(*args)
        self.q = np.full((self.num_states, self.num_actions), self.config.initial_value)

    def action_values(self, obs: np.ndarray) -> np.ndarray:
        return self.q[self.state(obs)]

    def _learn(self, s, action, reward, s_next, next_obs, memory, done) -> None:
        target = reward + (0.0 if done else self.config.discount * self.q[s_next].max())
        self.q[s, action] += self.config.learning_rate * (target - self.q[s, action])
