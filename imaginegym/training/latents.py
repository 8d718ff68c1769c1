"""Encode a dataset once with a trained tokenizer, so dynamics training never touches pixels.

The latents file (``out/latents.safetensors``) holds, per episode i, ``i.latents`` (T+1, K, D)
float16 beside the episode's actions, rewards and terminated flags, and offers the same
``read(episode, key, start, stop)`` as ``EpisodeDataset`` so ``WindowDataset`` windows it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from imaginegym.data.atomic import atomic_write
from imaginegym.data.store import EpisodeDataset

KEYS = ("latents", "actions", "rewards", "terminated")


@torch.no_grad()
def encode_dataset(tokenizer: torch.nn.Module, data: str | Path, out: str | Path, device: torch.device, chunk: int = 256) -> Path:
    """Write the latents of every episode of ``data`` to ``out`` (atomically); returns ``out``."""
    dataset = EpisodeDataset(data)
    tensors = {}
    tokenizer.eval()
    for i in tqdm(range(len(dataset)), desc="encode dataset"):
        frames = dataset.read(i, "frames")
        z = torch.cat([tokenizer.encode(torch.from_numpy(frames[s : s + chunk]).to(device)).cpu() for s in range(0, len(frames), chunk)])
        tensors[f"{i}.latents"] = z.half()
        for key in KEYS[1:]:
            tensors[f"{i}.{key}"] = torch.from_numpy(np.ascontiguousarray(dataset.read(i, key)))
    out = Path(out)
    with atomic_write(out) as tmp:
        save_file(tensors, str(tmp), metadata={"data": str(data), "episodes": str(len(dataset)), "lengths": json.dumps(dataset.lengths.tolist())})
    return out


class LatentEpisodes:
    """Episodes of latents in memory (small: K*D float16 per frame), read like an ``EpisodeDataset``."""

    def __init__(self, path: str | Path):
        self.root = Path(path)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            self.arrays = {key: f.get_tensor(key) for key in f.keys()}
        self._lengths = np.array(json.loads(meta["lengths"]), dtype=np.int64)

    @property
    def lengths(self) -> np.ndarray:
        return self._lengths

    @property
    def episode_ids(self) -> list[int]:
        return list(range(len(self._lengths)))

    def __len__(self) -> int:
        return len(self._lengths)

    def read(self, i: int, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        array = self.arrays[f"{i}.{key}"][start:stop]
        return (array.float() if key == "latents" else array).numpy()
