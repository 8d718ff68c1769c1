"""Exploration policies: in bounds, reproducible from the seed, OU noise correlated."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from imaginegym.data import OrnsteinUhlenbeckPolicy, RandomPolicy, make_policy

SPACE = spaces.Box(np.array([-1, 0], np.float32), np.array([1, 4], np.float32), dtype=np.float32)
OBS = np.zeros((8, 8, 3), np.uint8)


def rollout(policy, steps: int = 2000) -> np.ndarray:
    return np.stack([policy(OBS) for _ in range(steps)])  # (steps, A)


@pytest.mark.parametrize("name", ["random", "ou"])
def test_actions_in_bounds_and_reproducible(name):
    actions = rollout(make_policy(name, SPACE, seed=3))
    assert actions.dtype == np.float32 and actions.shape == (2000, 2)
    assert np.all(actions >= SPACE.low) and np.all(actions <= SPACE.high)
    np.testing.assert_array_equal(actions, rollout(make_policy(name, SPACE, seed=3)))
    assert not np.array_equal(actions, rollout(make_policy(name, SPACE, seed=4)))


def lag1_correlation(actions: np.ndarray) -> float:
    return float(np.corrcoef(actions[:-1, 0], actions[1:, 0])[0, 1])


def test_ou_noise_is_correlated_in_time_and_random_is_not():
    assert lag1_correlation(rollout(OrnsteinUhlenbeckPolicy(SPACE, seed=0))) > 0.7
    assert abs(lag1_correlation(rollout(RandomPolicy(SPACE, seed=0)))) < 0.1


def test_ou_noise_explores_the_whole_box():
    actions = rollout(OrnsteinUhlenbeckPolicy(SPACE, seed=0), steps=5000)
    assert actions[:, 1].min() < 1.0 and actions[:, 1].max() > 3.0


def test_bad_policy_or_space_is_named():
    with pytest.raises(ValueError, match="unknown policy 'greedy'.*random, ou"):
        make_policy("greedy", SPACE, seed=0)
    with pytest.raises(ValueError, match=r"Ornstein-Uhlenbeck.*bounded Box action space.*Discrete.*'random'"):
        make_policy("ou", spaces.Discrete(3), seed=0)
    with pytest.raises(ValueError, match="bounded Box action space"):
        make_policy("random", spaces.Box(-np.inf, np.inf, (2,), np.float32), seed=0)


def test_random_discrete_actions_are_uniform_and_reproducible():
    space = spaces.Discrete(5, start=1)
    actions = rollout(make_policy("random", space, seed=3), steps=5000)
    assert actions.dtype == np.int64 and actions.shape == (5000,)
    counts = np.bincount(actions, minlength=6)
    assert counts[0] == 0 and counts[1:].min() > 900  # 1000 each expected
    np.testing.assert_array_equal(actions, rollout(make_policy("random", space, seed=3), steps=5000))


def test_the_swingup_expert_reads_the_state_and_swings_the_pole_up(tmp_path):
    """Collected with the scripted expert, a cartpole episode ends balancing (reward near 1 per step); without a state it refuses."""
    from imaginegym.cli import main
    from imaginegym.data.policies import CartpoleSwingupExpert
    from imaginegym.data.store import EpisodeDataset

    assert main(["collect", "--task", "cartpole-swingup", "--size", "16", "--episodes", "1", "--policy", "ou",
                 "--max-episode-steps", "160", "--out", str(tmp_path / "d")]) == 0
    assert main(["collect", "--task", "cartpole-swingup", "--size", "16", "--episodes", "1", "--first", "1", "--resume",
                 "--policy", "swingup-expert", "--max-episode-steps", "160", "--out", str(tmp_path / "d")]) == 0
    dataset = EpisodeDataset(tmp_path / "d")
    assert [s.policy for s in dataset.shards] == ["ou", "swingup-expert"]
    expert, ou = dataset.read(1, "rewards"), dataset.read(0, "rewards")
    assert expert[-40:].mean() > 0.7 > ou[-40:].mean()
    policy = CartpoleSwingupExpert(spaces.Box(-1, 1, (1,), np.float32), seed=0)
    with pytest.raises(ValueError, match="needs DMC cartpole's state"):
        policy(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="one action"):
        CartpoleSwingupExpert(spaces.Box(-1, 1, (2,), np.float32), seed=0)
