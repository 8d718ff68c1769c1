"""The noise convention, in one place. Every formula here is pinned by a test.

tau = 0 is clean, tau = 1 is pure noise: ``z_tau = (1 - tau) * z0 + tau * eps``.
The network predicts the clean latent (x-prediction); denoising lowers tau.
Step sizes d are powers of two between ``d_min = 1 / k_max`` and 1; a step of size d from
tau follows ``b = (z0_hat - z_tau) / tau``, ``z_{tau-d} = z_tau + d * b``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

TAU_CTX = 0.1
"""Noise level of context frames at inference (and of generated frames once they become context)."""

Tensor = torch.Tensor
Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``f(z_tau, tau, d) -> z0_hat``, the model with everything but the noisy frames held fixed."""


def _expand(t: Tensor, like: Tensor) -> Tensor:
    """Broadcast per-frame values (B, T) over trailing latent dims of ``like`` (B, T, ...)."""
    return t.reshape(t.shape + (1,) * (like.dim() - t.dim()))


def add_noise(z0: Tensor, tau: Tensor, eps: Tensor) -> Tensor:
    """``z_tau = (1 - tau) * z0 + tau * eps``; tau has the leading dims of z0."""
    tau = _expand(tau, z0)
    return (1 - tau) * z0 + tau * eps


def loss_weight(tau: Tensor, floor: float = 0.1) -> Tensor:
    """Ramp toward clean frames: ``w(tau) = 1 - (1 - floor) * tau`` (DreamerV4: floor 0.1; 1 is flat)."""
    return 1 - (1 - floor) * tau


def preconditioning(tau: Tensor) -> tuple[Tensor, Tensor]:
    """``(c_skip, c_out)`` with ``z0_hat = c_skip * z_tau + c_out * F``, for unit-variance latents.

    The network F is the residual the skip leaves (EDM's preconditioning, sigma_data = 1, in
    this convention): ``c_skip = (1 - tau) / ((1 - tau)^2 + tau^2)``,
    ``c_out = tau / sqrt((1 - tau)^2 + tau^2)``. At tau = 0 the prediction is the input
    itself; at tau = 1 it is F alone. Without the skip a network must first learn the
    identity through its whole depth before it can denoise nearly clean context frames.
    """
    denom = (1 - tau) ** 2 + tau**2
    return (1 - tau) / denom, tau / denom.sqrt()


def previous_frame_prior(z_tau: Tensor, tau: Tensor) -> Tensor:
    """Per frame, the linear estimate ``c_skip * z_tau`` of the clean previous frame (zeros for the first).

    z_tau (B, T, ...), tau (B, T). Consecutive frames differ little, so this is the prior mean
    around which ``precondition`` predicts each frame.
    """
    estimate = clean_estimate(z_tau, tau)
    return torch.cat([torch.zeros_like(estimate[:, :1]), estimate[:, :-1]], dim=1)


def clean_estimate(z_tau: Tensor, tau: Tensor) -> Tensor:
    """``c_skip(tau) * z_tau``: the linear least-squares estimate of a unit-variance z0."""
    return _expand(preconditioning(tau)[0], z_tau) * z_tau


def precondition(z_tau: Tensor, tau: Tensor, residual: Tensor, prior: Tensor) -> Tensor:
    """``z0_hat = prior + c_skip * (z_tau - (1 - tau) * prior) + c_out * residual``.

    The EDM preconditioning around a prior mean: at tau = 0 the prediction is z_tau itself,
    at tau = 1 it is the prior plus the network's residual (with a zero prior, plain EDM).
    """
    c_skip, c_out = (_expand(c, z_tau) for c in preconditioning(tau))
    return prior + c_skip * (z_tau - (1 - _expand(tau, z_tau)) * prior) + c_out * residual


def euler_step(z_tau: Tensor, z0_hat: Tensor, tau: Tensor, d: Tensor | float) -> Tensor:
    """One denoising step of size d: ``z_tau + d * (z0_hat - z_tau) / tau`` (tau > 0)."""
    tau = _expand(tau, z_tau)
    if isinstance(d, Tensor):
        d = _expand(d, z_tau)
    return z_tau + d * (z0_hat - z_tau) / tau


def bootstrap_target(f: Denoiser, z_tau: Tensor, tau: Tensor, d: Tensor) -> Tensor:
    """x-space target of a shortcut step of size d, from two half steps of the model.

    ``b1 = (f(z_tau, tau, d/2) - z_tau) / tau``, ``z_mid = z_tau + d/2 * b1``,
    ``b2 = (f(z_mid, tau - d/2, d/2) - z_mid) / (tau - d/2)``, target ``z_tau + tau * (b1 + b2)/2``.
    The student's velocity loss ``tau^2 |(f(z_tau,tau,d) - z_tau)/tau - b_bar|^2`` equals the
    x-space MSE against this target, so no division by tau reaches the loss.
    tau lies on the grid {d, 2d, ..., 1}, hence ``tau - d/2 >= d/2 > 0``.
    """
    half = d / 2
    with torch.no_grad():
        z0_first = f(z_tau, tau, half)
        b1 = (z0_first - z_tau) / _expand(tau, z_tau)
        z_mid = z_tau + _expand(half, z_tau) * b1
        tau_mid = tau - half
        z0_second = f(z_mid, tau_mid, half)
        b2 = (z0_second - z_mid) / _expand(tau_mid, z_tau)
        return z_tau + _expand(tau, z_tau) * (b1 + b2) / 2


def step_levels(k_max: int) -> int:
    """Number of step sizes: d = 2**j / k_max for j = 0 .. log2(k_max)."""
    levels = math.log2(k_max)
    if k_max < 1 or levels != int(levels):
        raise ValueError(f"k_max={k_max} must be a power of two (e.g. 64)")
    return int(levels) + 1


def step_size(level: Tensor | int, k_max: int) -> Tensor | float:
    """The step size of a level index: ``d = 2**level / k_max``."""
    if isinstance(level, Tensor):
        return torch.pow(2.0, level.to(torch.float32)) / k_max
    return 2.0**level / k_max


def step_level(num_steps: int, k_max: int) -> int:
    """The level index of d = 1 / num_steps (num_steps a power of two <= k_max)."""
    if num_steps < 1 or num_steps > k_max or k_max % num_steps or (num_steps & (num_steps - 1)):
        raise ValueError(
            f"num_denoise_steps={num_steps} must be a power of two between 1 and k_max={k_max} "
            "(the model was trained on step sizes 1/k_max .. 1); try 4"
        )
    return int(math.log2(k_max // num_steps))


def sample_tau_on_grid(shape: tuple[int, ...], d: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """tau uniform on the grid {d, 2d, ..., 1} of this convention; d broadcasts to shape[:1]."""
    d = _expand(d, torch.empty(shape))
    n = torch.round(1.0 / d)  # grid points per window
    u = torch.rand(shape, generator=generator, device=d.device)
    return (torch.floor(u * n) + 1) * d


def denoise_schedule(num_steps: int) -> list[tuple[float, float]]:
    """(tau, d) pairs of a K-step sampler from pure noise: tau = 1, 1 - 1/K, ..., 1/K."""
    d = 1.0 / num_steps
    return [(1.0 - i * d, d) for i in range(num_steps)]
