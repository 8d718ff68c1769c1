"""Image metrics (PSNR, SSIM, LPIPS) and the per-horizon evaluation of imagined rollouts."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet weights
_warned_lpips = False


def lpips_backbone_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILE


def load_lpips(required: bool = False, device: str | torch.device = "cpu") -> nn.Module | None:
    """LPIPS (AlexNet) from the torch hub cache, or None (with one clear warning) when absent.

    LPIPS needs ImageNet backbone weights that are fetched from the internet at first use;
    this never downloads. ``required=True`` turns their absence into an error.
    """
    global _warned_lpips
    path = lpips_backbone_path()
    message = (
        f"LPIPS backbone weights not found at {path}; training and evaluation use MSE/PSNR/SSIM only. "
        f"To enable LPIPS, copy {LPIPS_BACKBONE_FILE} (https://download.pytorch.org/models/{LPIPS_BACKBONE_FILE}) there "
        "or set TORCH_HOME to a cache that has it."
    )
    if not path.is_file():
        if required:
            raise FileNotFoundError(message)
        if not _warned_lpips:
            warnings.warn(message, stacklevel=2)
            _warned_lpips = True
        return None
    import lpips

    os.environ.setdefault("TORCH_HOME", str(Path(torch.hub.get_dir()).parent))
    model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per frame of uint8 (..., H, W, 3) images -> (...,).

    With ``mask`` bool (..., H, W), only the masked pixels count (frames without any
    masked pixel give NaN, to be skipped by the caller)."""
    lead = pred.shape[:-3]
    err = (pred.float() - target.float()).div(255.0).pow(2).mean(-1)  # (..., H, W)
    if mask is None:
        mse = err.flatten(-2).mean(-1)
    else:
        m = mask.float().flatten(-2)
        mse = (err.flatten(-2) * m).sum(-1) / m.sum(-1)
    return (-10 * torch.log10(mse.clamp_min(1e-10))).reshape(lead)


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM per frame (uniform window, constants of Wang et al. 2004) -> (...,)."""
    lead = pred.shape[:-3]
    x, y = _as_float(pred), _as_float(target)
    pool = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx * mx, pool(y * y) - my * my, pool(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).reshape(lead)


@torch.no_grad()
def lpips_distance(model: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    lead = pred.shape[:-3]
    device = next(model.parameters()).device
    d = model(_as_float(pred).to(device) * 2 - 1, _as_float(target).to(device) * 2 - 1)
    return d.flatten().cpu().reshape(lead)


# ---------------------------------------------------------------------- rollout evaluation
MOVING_THRESHOLD = 25  # a pixel moves when its target differs from the median background by more (in 0..255)


def moving_mask(frames: torch.Tensor, background: torch.Tensor, threshold: int = MOVING_THRESHOLD) -> torch.Tensor:
    """uint8 (..., H, W, 3) against a uint8 background (H, W, 3) -> bool (..., H, W): the
    pixels that differ from it by more than ``threshold`` in some channel."""
    return ((frames.int() - background.int()).abs() > threshold).any(-1)


def frame_statistics(dataset, every: int = 1, median_every: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean frame (float, over every ``every``-th frame) and median background (uint8)."""
    total, count, samples = None, 0, []
    for i in range(len(dataset)):
        frames = torch.from_numpy(dataset.read(i, "frames"))
        chunk = frames[::every].double()
        total = chunk.sum(0) if total is None else total + chunk.sum(0)
        count += len(chunk)
        samples.append(frames[::median_every])
    median = torch.cat(samples).median(dim=0).values
    return (total / count).float(), median


def rollout_starts(lengths, context: int, horizon: int, per_episode: int) -> list[tuple[int, int]]:
    """(episode, first imagined frame) pairs spread evenly over each episode."""
    starts = []
    for episode, steps in enumerate(lengths):
        last = int(steps) + 1 - horizon  # first imagined frame index must leave `horizon` frames
        if last < context:
            continue
        for s in torch.linspace(context, last, per_episode).round().long().unique().tolist():
            starts.append((episode, int(s)))
    return starts


def read_rollouts(dataset, starts: list[tuple[int, int]], context: int, horizon: int):
    """The real data of rollouts from ``rollout_starts``: frames uint8 (B, context + horizon, H, W, 3),
    the actions between them (B, context + horizon - 1, A) and the rewards of the imagined steps (B, horizon)."""
    frames, actions, rewards = [], [], []
    for episode, s in starts:
        frames.append(torch.from_numpy(dataset.read(episode, "frames", s - context, s + horizon)))
        actions.append(torch.from_numpy(dataset.read(episode, "actions", s - context, s + horizon - 1)))
        rewards.append(torch.from_numpy(dataset.read(episode, "rewards", s - 1, s + horizon - 1)))
    return torch.stack(frames), torch.stack(actions), torch.stack(rewards)


def changed_frames(context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Which target frames (B, H) differ from the frame before them (the last context frame first).

    Frames identical to their predecessor (on cartpole: the cart out of the picture) give
    copy-last the 100 dB cap, which dominates an average of PSNRs; PSNR over the changed
    frames alone compares models where something happens."""
    previous = torch.cat([context[:, -1:], target[:, :-1]], dim=1)
    return (target != previous).flatten(2).any(-1)


def _summaries(pred: torch.Tensor, target: torch.Tensor, moving: torch.Tensor, changed: torch.Tensor, horizons, lpips_model) -> dict:
    """pred/target uint8 (B, H, h, w, 3), moving bool (B, H, h, w), changed bool (B, H) -> metrics per horizon."""
    out = {}
    for h in horizons:
        p, t, m = pred[:, h - 1], target[:, h - 1], moving[:, h - 1]
        per_frame = psnr(p, t)
        row = {"psnr": per_frame.mean().item(), "ssim": ssim(p, t).mean().item(),
               "psnr_moving": torch.nanmean(psnr(p, t, m)).item(),
               "psnr_changed": per_frame[changed[:, h - 1]].mean().item()}  # NaN when no frame changed
        if lpips_model is not None:
            row["lpips"] = lpips_distance(lpips_model, p, t).mean().item()
        out[h] = row
    return out


@torch.no_grad()
def evaluate_world_model(model, heldout, mean_frame: torch.Tensor, median_frame: torch.Tensor, horizons=(1, 4, 16, 50),
                         context: int = 16, denoise_steps=(4, 64), per_episode: int = 5, seed: int = 0, batch_size: int = 64) -> dict:
    """Open-loop imagined rollouts from real contexts of ``heldout`` against the real frames.

    Returns per-horizon PSNR / SSIM / PSNR over moving pixels (and LPIPS when its weights
    exist) for the model at each number of denoising steps and for the copy-last-frame and
    mean-frame baselines, the reward MAE per step, and the wall time per imagined frame.
    """
    import time

    horizon = max(horizons)
    starts = rollout_starts(heldout.lengths, context, horizon, per_episode)
    if not starts:
        raise ValueError(f"no held-out episode has {context} + {horizon} frames; collect longer episodes")
    frames, actions, rewards = read_rollouts(heldout, starts, context, horizon)
    ctx_frames, target = frames[:, :context], frames[:, context:]
    moving = moving_mask(target, median_frame)
    changed = changed_frames(ctx_frames, target)
    lpips_model = load_lpips()
    results = {"rollouts": len(starts), "context": context, "horizons": list(horizons), "models": {},
               "changed_share": {h: changed[:, h - 1].float().mean().item() for h in horizons}}
    generator = torch.Generator().manual_seed(seed)
    samples = {}
    for steps in denoise_steps:
        preds, pred_rewards, elapsed = [], [], 0.0
        for b in range(0, len(starts), batch_size):
            sl = slice(b, b + batch_size)
            t0 = time.perf_counter()
            out = model.imagine(ctx_frames[sl], actions[sl, : context - 1], actions[sl, context - 1 :], steps, generator)
            elapsed += time.perf_counter() - t0
            preds.append(out["frames"].cpu()), pred_rewards.append(out["rewards"].cpu())
        pred, pred_reward = torch.cat(preds), torch.cat(pred_rewards)
        samples[steps] = pred
        per_horizon = _summaries(pred, target, moving, changed, horizons, lpips_model)
        for h in horizons:  # the reward error at that step alone: it grows as the rollout drifts
            per_horizon[h]["reward_error"] = (pred_reward[:, h - 1] - rewards[:, h - 1]).abs().mean().item()
        results["models"][f"imagined_{steps}_steps"] = {
            "per_horizon": per_horizon,
            "reward_mae": (pred_reward - rewards).abs().mean().item(),
            "seconds_per_frame": elapsed / pred_reward.numel(),
        }
    copy_last = ctx_frames[:, -1:].expand_as(target)
    mean = mean_frame.round().clamp(0, 255).to(torch.uint8).expand_as(target)
    results["models"]["copy_last_frame"] = {"per_horizon": _summaries(copy_last, target, moving, changed, horizons, lpips_model)}
    results["models"]["mean_frame"] = {"per_horizon": _summaries(mean, target, moving, changed, horizons, lpips_model)}
    return results, {"target": target, "context": ctx_frames, **{f"imagined_{k}": v for k, v in samples.items()}}


def format_results(results: dict) -> str:
    """A plain-text table: one row per model and metric, one column per horizon."""
    horizons = results["horizons"]
    lines = [f"{'model':<24}{'metric':<14}" + "".join(f"h={h:<8}" for h in horizons)]
    for name, entry in results["models"].items():
        metrics = list(next(iter(entry["per_horizon"].values())))
        for metric in metrics:
            values = "".join(f"{entry['per_horizon'][h][metric]:<10.3f}" for h in horizons)
            lines.append(f"{name:<24}{metric:<14}{values}")
        if "reward_mae" in entry:
            lines.append(f"{name:<24}{'reward MAE':<14}{entry['reward_mae']:.4f}   "
                         f"({entry['seconds_per_frame'] * 1000:.2f} ms per imagined frame, batched)")
    return "\n".join(lines)
