"""Agents that only ever see Gymnasium envs (real or imagined): SB3 and in-context learners."""
