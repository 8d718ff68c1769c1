"""Policies for collecting data: uniform random (Box or Discrete actions), Ornstein-Uhlenbeck
(Box), and a scripted cartpole swing-up expert that reads the simulator's state.

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


class CartpoleSwingupExpert:
    """A scripted swing-up for DMC cartpole: pump energy into the pole, then balance it with a PD law.

    It reads the simulator's state (``needs_state``: collection makes the env with
    ``include_state=True`` and passes ``info["state"]`` = [cart x, cos, sin, x velocity, angular
    velocity]), so its episodes show a world model the upright states that a random policy never
    reaches. Noiseless it scores ~770 on cartpole-swingup at action repeat 2 (500 steps); each
    episode adds Gaussian noise of a std drawn from [``noise_low``, ``noise_high``], so a dataset
    holds clean swing-ups, sloppy ones and falls.
    """

    needs_state = True

    def __init__(self, action_space: spaces.Space, seed: int, noise_low: float = 0.0, noise_high: float = 0.6) -> None:
        self.space = _check_box(action_space, "the cartpole swing-up expert ('swingup-expert')")
        if self.space.shape != (1,):
            raise ValueError(f"the swing-up expert pushes a cart (one action), got the action space {action_space}: use it on DMC cartpole")
        self.rng = np.random.default_rng(seed)
        self.noise = float(self.rng.uniform(noise_low, noise_high))

    def __call__(self, observation: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
        if state is None or np.shape(state) != (5,):
            raise ValueError(
                f"the swing-up expert needs DMC cartpole's state [x, cos, sin, x_dot, theta_dot], got {None if state is None else np.shape(state)}: "
                "collect with imaginegym/DMC-v0 on a cartpole task (collection then passes the state)"
            )
        x, cos, sin, x_dot, theta_dot = state
        if cos > 0.8:  # near upright: push the cart under the pole, keep it centred
            u = 3.0 * sin + 0.5 * theta_dot + 0.3 * (x + 0.5 * x_dot)
        else:  # swing: push along the pole's motion until it has the energy to rise
            energy = 0.5 * theta_dot**2 - 9.81 * (1.0 - cos)
            u = -np.sign(theta_dot * cos) if energy < 0 else 0.0
        u += self.noise * self.rng.standard_normal()
        return np.clip(np.array([u]), self.space.low, self.space.high).astype(self.space.dtype)


POLICIES = {"random": RandomPolicy, "ou": OrnsteinUhlenbeckPolicy, "swingup-expert": CartpoleSwingupExpert}


def needs_state(policy: "str | PolicySource") -> bool:
    """Whether a policy acts on the simulator's state (collection then makes the env with ``include_state=True``)."""
    return bool(getattr(POLICIES[policy] if isinstance(policy, str) else policy, "needs_state", False))


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
