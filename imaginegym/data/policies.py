"""Exploration policies for collecting data: uniform random (Box or Discrete actions) and
Ornstein-Uhlenbeck (Box).

Each policy owns a NumPy RNG seeded per episode, so an episode's actions depend only on
its seed, never on which worker ran it or what it ran before.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from gymnasium import spaces


class Policy(Protocol):
    """Maps an observation to an action in the env's action space."""

    def __call__(self, observation: np.ndarray) -> np.ndarray: ...


def _check_box(action_space: spaces.Space, policy: str = "exploration policies") -> spaces.Box:
    if not isinstance(action_space, spaces.Box) or not np.all(
        np.isfinite(action_space.low) & np.isfinite(action_space.high)
    ):
        raise ValueError(
            f"{policy} need a bounded Box action space, got {action_space}: use a "
            "continuous-control env (e.g. imaginegym/DMC-v0)"
            + (", or the policy 'random', which also samples Discrete actions"
               if isinstance(action_space, spaces.Discrete) else "")
        )
    return action_space


class RandomPolicy:
    """Actions drawn uniformly, independently at each step: from the Box action space, or
    one of the n actions of a Discrete space (an int64)."""

    def __init__(self, action_space: spaces.Space, seed: int) -> None:
        discrete = isinstance(action_space, spaces.Discrete)
        self.space = action_space if discrete else _check_box(action_space)
        self.rng = np.random.default_rng(seed)

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        if isinstance(self.space, spaces.Discrete):
            return np.int64(self.space.start + self.rng.integers(self.space.n))
        action = self.rng.uniform(self.space.low, self.space.high)
        return action.astype(self.space.dtype)


class OrnsteinUhlenbeckPolicy:
    """Temporally correlated noise, x <- x + theta (0 - x) + sigma N(0, 1), mapped to the box.

    x lives in [-1, 1] per action dimension (clipped) and starts at 0, the box's
    centre; it is scaled linearly onto [low, high]. Correlated actions explore further
    than independent ones (a cart keeps pushing one way long enough to swing the pole).
    """

    def __init__(
        self, action_space: spaces.Space, seed: int, theta: float = 0.15, sigma: float = 0.3
    ) -> None:
        self.space = _check_box(action_space, "Ornstein-Uhlenbeck actions ('ou')")
        self.rng = np.random.default_rng(seed)
        self.theta, self.sigma = theta, sigma
        self.x = np.zeros(self.space.shape)

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        noise = self.rng.standard_normal(self.space.shape)
        self.x = np.clip(self.x - self.theta * self.x + self.sigma * noise, -1.0, 1.0)
        low, high = self.space.low, self.space.high
        return (low + (self.x + 1.0) * 0.5 * (high - low)).astype(self.space.dtype)


POLICIES = {"random": RandomPolicy, "ou": OrnsteinUhlenbeckPolicy}


class PolicySource(Protocol):
    """What collection takes besides a policy name: it makes each episode's policy.

    Collection workers are spawned processes, so a source must pickle (keep a path, not a
    loaded network) and build what it needs in `make`. E.g. a trained agent:
    `imaginegym.agents.sb3.AgentPolicy.source(...)`.
    """

    name: str  # recorded in every shard; resuming a collection needs the same name

    def make(self, action_space: spaces.Space, seed: int) -> Policy:
        """The policy of one episode, its randomness seeded with `seed`."""
        ...


def policy_name(policy: str | PolicySource) -> str:
    """The name a policy (a name of `POLICIES` or a `PolicySource`) is recorded under."""
    return policy if isinstance(policy, str) else policy.name


def check_policy_name(policy: str | PolicySource) -> None:
    """Raise ValueError unless `policy` is a key of `POLICIES` or a `PolicySource`."""
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}: choose one of {', '.join(POLICIES)}")
    elif not (callable(getattr(policy, "make", None)) and isinstance(getattr(policy, "name", None), str)):
        raise ValueError(
            f"policy {policy!r} is neither a policy name ({', '.join(POLICIES)}) nor a "
            "PolicySource (an object with a `name` and a `make(action_space, seed)` method)"
        )


def make_policy(policy: str | PolicySource, action_space: spaces.Space, seed: int) -> Policy:
    """The policy of one episode: the exploration policy called `policy` ("random" or
    "ou"), or the one a `PolicySource` makes, seeded with `seed`."""
    check_policy_name(policy)
    if isinstance(policy, str):
        return POLICIES[policy](action_space, seed)
    return policy.make(action_space, seed)
