"""Training checkpoints: one file, written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds plain state dicts (model, EMA, optimizer, scheduler), the step, the
torch RNG state and the configuration as a JSON string: nothing that needs unpickling of
arbitrary objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from imaginegym.data.atomic import atomic_write


def save_checkpoint(path: str | Path, state: dict[str, Any], config: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        torch.save({**state, "config_json": json.dumps(config)}, tmp)
    return path


def save_initial_checkpoint(path: str | Path, module: torch.nn.Module, config: dict[str, Any]) -> Path:
    """A checkpoint that holds only ``module``'s weights at step 0: a training run resumed from it starts from those weights.

    This is how a run continues from a trained model (``--init-from``): `TrainingLoop` takes the weights, and
    builds its optimizer, schedule and EMA afresh. Its config says ``use_ema: False`` so that `load_weights`
    reads these weights, not an EMA, until the run has trained.
    """
    state = {"model": module.state_dict(), "step": 0, "initial": True}
    return save_checkpoint(path, state, {**config, "optim": {"use_ema": False}})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (state, config). Raises a ValueError that says what the file is when it is not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not an imaginegym training checkpoint ({type(error).__name__}: {error}): it is damaged or another "
                         f"program's file. Delete it to train that stage again from its start, or start the run over (--restart)") from error
    if not isinstance(state, dict) or "config_json" not in state:
        raise ValueError(f"{path} is not an imaginegym training checkpoint (no configuration inside): delete it to train that stage "
                         "again from its start, or start the run over (--restart)")
    return state, json.loads(state.pop("config_json"))
