"""In-context agents: learning histories, Algorithm Distillation and Compressed AD, and `InContextAgent`."""

from imaginegym.agents.ad.histories import HistoriesConfig, collect_histories
from imaginegym.agents.ad.sources import SourceConfig, make_source

__all__ = ["HistoriesConfig", "SourceConfig", "collect_histories", "make_source"]
