"""Encode a dataset once with a trained tokenizer, so dynamics training never touches pixels.

The latents file (``out/latents.safetensors``) holds, per episode i, ``i.latents`` (T+1, K, D)
float16 beside the episode's actions, rewards and terminated flags (and ``tasks`` (N, task_dim),
each episode's task, for a dataset of runs with tasks), and offers the same
``read(episode, key, start, stop)`` as ``EpisodeDataset`` so ``WindowDataset`` windows it.
"""

from __future__ import annotations

import hashlib
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


def latents_key(dataset: EpisodeDataset, tokenizer: torch.nn.Module) -> dict[str, str]:
    """What latents are derived from: digests of the dataset's episodes and of the tokenizer's weights.

    Cached latents are reused only while both match; a grown dataset or a tokenizer that trained on changes them.
    """
    data = hashlib.sha256(json.dumps([dataset.meta.to_json(), episode_identities(dataset)], sort_keys=True).encode())
    return {"dataset": data.hexdigest(), "tokenizer": tokenizer_digest(tokenizer)}


def tokenizer_digest(tokenizer: torch.nn.Module) -> str:
    """A SHA-256 of a tokenizer's weights: equal digests, equal latents."""
    weights = hashlib.sha256()
    for name, tensor in sorted(tokenizer.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return weights.hexdigest()


def read_latents_key(path: str | Path) -> dict[str, str] | None:
    """The `latents_key` a latents file was encoded with (None for files from before keys, or unreadable ones)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            key = (f.metadata() or {}).get("key")
    except Exception:  # safetensors raises its own error types for damaged files: encode again
        return None
    return json.loads(key) if key else None


def episode_identities(dataset: EpisodeDataset) -> list:
    """What tells one episode from another: its file, index, length, seed and policy (as in `latents_key`)."""
    return [[shard.file, shard.episode, shard.length, shard.seed, shard.policy] for shard in dataset.shards]


def _reusable_episodes(path: str | Path, key: dict[str, str], identities: list) -> dict[int, dict[str, torch.Tensor]]:
    """Episodes of an earlier latents file at ``path`` that the same tokenizer encoded from the same episodes, by index.

    A dataset that grew keeps its earlier episodes, so with a tokenizer that has not trained since (a frozen one,
    `--freeze-tokenizer`) only the new episodes need encoding.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            old_key, old_identities = json.loads(meta.get("key", "null")), json.loads(meta.get("identities", "null"))
            if not old_key or old_key.get("tokenizer") != key["tokenizer"] or not old_identities:
                return {}
            same = [i for i, identity in enumerate(old_identities) if i < len(identities) and identity == identities[i]]
            return {i: {name: f.get_tensor(f"{i}.{name}") for name in KEYS} for i in same}
    except Exception:  # a damaged file: encode everything again
        return {}


@torch.no_grad()
def encode_dataset(tokenizer: torch.nn.Module, dataset: EpisodeDataset, out: str | Path, device: torch.device,
                   key: dict[str, str], chunk: int = 256) -> Path:
    """Write the latents of every episode of ``dataset`` to ``out`` (atomically), with ``key`` (see `latents_key`); returns ``out``."""
    tensors = {}
    tokenizer.eval()
    identities = episode_identities(dataset)
    reused = _reusable_episodes(out, key, identities)
    for i in tqdm(range(len(dataset)), desc="encode dataset"):
        if i in reused:  # the same episode, encoded by the same tokenizer weights: copied, not encoded again
            tensors.update({f"{i}.{name}": reused[i][name] for name in KEYS})
            continue
        frames = dataset.read(i, "frames")
        z = torch.cat([tokenizer.encode(torch.from_numpy(frames[s : s + chunk]).to(device)).cpu() for s in range(0, len(frames), chunk)])
        tensors[f"{i}.latents"] = z.half()
        for name in KEYS[1:]:
            tensors[f"{i}.{name}"] = torch.from_numpy(np.ascontiguousarray(dataset.read(i, name)))
    tasks = dataset.task_vectors()
    if tasks is not None:
        tensors["tasks"] = torch.from_numpy(tasks)
    out = Path(out)
    metadata = {"data": str(dataset.root), "episodes": str(len(dataset)), "lengths": json.dumps(dataset.lengths.tolist()), "key": json.dumps(key),
                "identities": json.dumps(identities)}
    with atomic_write(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return out


class LatentEpisodes:
    """Episodes of latents in memory (small: K*D float16 per frame), read like an ``EpisodeDataset``."""

    def __init__(self, path: str | Path):
        self.root = Path(path)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            self.arrays = {key: f.get_tensor(key) for key in f.keys()}
        tasks = self.arrays.pop("tasks", None)
        self.tasks: np.ndarray | None = None if tasks is None else tasks.numpy()  # (N, task_dim): each episode's task
        self._lengths = np.array(json.loads(meta["lengths"]), dtype=np.int64)
        self.key: dict[str, str] | None = json.loads(meta["key"]) if "key" in meta else None

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
