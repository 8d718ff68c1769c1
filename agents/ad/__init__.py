"""In-context agents: learning histories, Algorithm Distillation and Compressed AD, and `InContextAgent`.

    from imaginegym.agents.ad import InContextAgent
    agent = InContextAgent.load("darkroom-compressed-ad")
"""

from imaginegym.agents.ad.agent import InContextAgent
from imaginegym.agents.ad.evaluate import evaluate_in_context
from imaginegym.agents.ad.histories import HistoriesConfig, collect_histories
from imaginegym.agents.ad.model import ModelConfig
from imaginegym.agents.ad.sources import SourceConfig, make_source
from imaginegym.agents.ad.train import TrainConfig, train_in_context

__all__ = ["HistoriesConfig", "InContextAgent", "ModelConfig", "SourceConfig", "TrainConfig", "collect_histories", "evaluate_in_context",
           "make_source", "train_in_context"]
