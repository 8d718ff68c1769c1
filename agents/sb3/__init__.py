"""Stable-Baselines3 agents in real or imagined envs: train, evaluate, save as plain files.

    from imaginegym.agents.sb3 import AgentConfig, AgentPolicy, evaluate_policy, train_agent
    policy = train_agent(AgentConfig(env="imagined:cartpole-swingup", steps=200_000), "runs/ppo")
    print(evaluate_policy(policy, episodes=10).summary())     # real and imagined returns, their gap
"""

from imaginegym.agents.sb3.evaluate import Evaluation, evaluate_policy, save_evaluation
from imaginegym.agents.sb3.policy import AgentPolicy, PolicyFile, export_policy
from imaginegym.agents.sb3.config import AgentConfig
from imaginegym.agents.sb3.train import train_agent

__all__ = ["AgentConfig", "AgentPolicy", "Evaluation", "PolicyFile", "evaluate_policy", "export_policy", "save_evaluation", "train_agent"]
