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
