"""Diffusion forcing + shortcut forcing: the dynamics model's training loss.

Every frame of a window gets its own noise level (diffusion forcing). Most windows train
the finest step d_min = 1/k_max with the clean frames as target (flow matching in
x-prediction form). A fraction of windows instead trains one coarser step size d, with tau
on the grid {d, ..., 1} and a target built from two half steps of the model itself
(``noise.bootstrap_target``). In those windows the noisy frames attend to a fixed copy of
the window that is conditioned on d_min — exactly what they see at inference, where
context frames always carry d_min — so the half steps move one frame while the others
stay fixed. All losses are weighted by ``w(tau) = 1 - (1 - loss_weight_floor) tau``:
DreamerV4's ramp (floor 0.1) favours nearly clean frames, which cost a big model little;
a small model trained briefly learns the dynamics itself (the step from clean context to a
frame at high noise) several times faster with a flat weight (floor 1).

Diffusion forcing draws each frame's tau independently, so the case every imagined step
meets, a frame at high noise after several nearly clean frames, is rare in plain windows
(with 60% low-noise frames, 7 clean predecessors come up 3% of the time). A share
``matched_fraction`` of the d_min windows uses the same two-copy layout as the bootstrap
windows instead: a copy at low noise (tau <= low_noise_max, like tau_ctx) and a copy at
any noise whose frames attend to the low-noise copy of earlier frames and to themselves.
Every frame of such a window is then predicted exactly as in imagination, at twice the
tokens. A share ``pure_noise_prob`` of those frames starts from pure noise (tau = 1): the
first step of every imagined frame, and the one case that holds the dynamics alone (a
frame at tau = 1 carries nothing of itself). With tau uniform, one frame in 64 is there.

All of the above feeds the model real context, while an imagined rollout feeds it its own
frames, which drift (exposure bias). ``rollout_forcing_loss`` closes that gap: the model
imagines the end of a window from its real start, exactly as at inference, and then learns
to predict the real frames from that imagined context, so it learns to correct its drift.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imaginegym.models import noise
from imaginegym.models.dynamics import Dynamics, sliding_causal_mask


@dataclass(frozen=True)
class ShortcutConfig:
    bootstrap_fraction: float = 0.25  # windows per batch with bootstrap targets (paper: 1/8)
    matched_fraction: float = 0.0  # d_min windows whose frames are predicted from low-noise context copies
    pure_noise_prob: float = 0.0  # share of the predicted frames of matched windows at tau = 1
    low_noise_prob: float = 0.3  # frames drawn near tau_ctx, so clean-ish contexts are common
    low_noise_max: float | None = None  # default: twice the model's context_noise (tau_ctx)
    loss_weight_floor: float = 0.1  # the weight of pure-noise frames (1 = flat)
    reward_weight: float = 1.0  # loss weight of the reward head
    continue_weight: float = 0.1  # loss weight of the continue head
    rollout_denoise_steps: int = 4  # shortcut steps per frame when rollout windows imagine their context

    def __post_init__(self):
        if not 0 < self.loss_weight_floor <= 1:
            raise ValueError(f"loss_weight_floor={self.loss_weight_floor} must lie in (0, 1]; 0.1 is DreamerV4's ramp, 1 a flat weight")
        if not 0 <= self.pure_noise_prob <= 1:
            raise ValueError(f"pure_noise_prob={self.pure_noise_prob} must lie in [0, 1]")
        if self.rollout_denoise_steps < 1 or self.rollout_denoise_steps & (self.rollout_denoise_steps - 1):
            raise ValueError(f"rollout_denoise_steps={self.rollout_denoise_steps} must be a power of two (e.g. 4, as at inference)")
        if self.low_noise_max is not None and not 0 < self.low_noise_max <= 1:
            raise ValueError(f"low_noise_max={self.low_noise_max} must lie in (0, 1] (or None: twice the model's context_noise)")


def sample_low_tau(shape: tuple[int, int], k_max: int, config: ShortcutConfig, device) -> torch.Tensor:
    """tau on the d_min grid in (0, low_noise_max]: context frames as imagination sees them."""
    low_points = max(1, round(config.low_noise_max * k_max))  # resolved by shortcut_forcing_loss
    return (torch.floor(torch.rand(shape, device=device) * low_points) + 1) / k_max


def sample_frame_tau(shape: tuple[int, int], k_max: int, config: ShortcutConfig, device) -> torch.Tensor:
    """Per-frame tau on the d_min grid; a share ``low_noise_prob`` near tau_ctx (<= low_noise_max).

    Uniform tau rarely leaves several consecutive frames nearly clean, which is the context
    every imagined step sees (tau_ctx); the mixture keeps that case common.
    """
    d_min = torch.full(shape[:1], 1.0 / k_max, device=device)
    tau = noise.sample_tau_on_grid(shape, d_min)
    low = sample_low_tau(shape, k_max, config, device)
    return torch.where(torch.rand(shape, device=device) < config.low_noise_prob, low, tau)


def twice(x: torch.Tensor) -> torch.Tensor:
    """Per-frame values (B, T, ...) for both copies of a two-copy window -> (B, 2T, ...)."""
    return torch.cat([x, x], 1)


def two_copy_frame_mask(t: int, window: int, device) -> torch.Tensor:
    """(2T, 2T) frame mask of [context copy | frames being predicted].

    Context frames see earlier context frames (causal, sliding window); a predicted frame sees
    the context copies of the frames before it and itself.
    """
    causal = sliding_causal_mask(t, window, device)
    eye = torch.eye(t, dtype=torch.bool, device=device)
    strict = causal & ~eye
    return torch.cat([torch.cat([causal, torch.zeros_like(causal)], 1), torch.cat([strict, eye], 1)], 0)


def sample_predicted_tau(shape: tuple[int, int], k_max: int, config: ShortcutConfig, device) -> torch.Tensor:
    """tau of the predicted copy of a two-copy window: the d_min grid, ``pure_noise_prob`` of it at 1."""
    tau = noise.sample_tau_on_grid(shape, torch.full(shape[:1], 1.0 / k_max, device=device))
    if config.pure_noise_prob:  # (no draw otherwise: earlier runs stay reproducible)
        tau = torch.where(torch.rand(shape, device=device) < config.pure_noise_prob, 1.0, tau)
    return tau


def two_copy_forward(model: Dynamics, z_ctx, tau_ctx, z_pred, tau_pred, actions, action_mask, imagined=None, task=None):
    """The model over [context copy | predicted copy] of windows, at the finest step size.

    Each predicted frame attends to the context copies of the frames before it and to itself
    (``two_copy_frame_mask``) and leans on the context copy of the frame before it (its
    prior), exactly as an imagined frame does on the cache. ``imagined`` (B, 2T) flags
    context frames the model generated itself; ``task`` (B, task_dim) the windows' tasks (a
    task-conditioned model). Returns the model's (z0_hat, reward, continue)
    for both copies, (B, 2T, ...).
    """
    b, t = tau_ctx.shape
    device = tau_ctx.device
    return model(
        torch.cat([z_ctx, z_pred], 1), torch.cat([tau_ctx, tau_pred], 1), torch.zeros(b, 2 * t, dtype=torch.long, device=device),
        twice(actions), twice(action_mask), times=torch.arange(t, device=device).repeat(2),
        frame_mask=two_copy_frame_mask(t, model.config.context_length, device),
        prior=twice(noise.previous_frame_prior(z_ctx, tau_ctx)), imagined=imagined, task=task,
    )


def _frame_losses(model: Dynamics, z0, z0_hat, reward, cont_logit, tau, rewards, terminated, action_mask, config):
    """Per-frame weighted losses of a window's predictions -> dict of (B, T) tensors."""
    w = noise.loss_weight(tau, config.loss_weight_floor)
    latent = w * (z0_hat - z0).pow(2).mean(dim=(-2, -1))
    has_reward = action_mask.float()
    reward_loss = w * has_reward * (reward - rewards).pow(2)
    cont_loss = w * F.binary_cross_entropy_with_logits(cont_logit, (~terminated).float(), reduction="none")
    return {"flow": latent, "reward": reward_loss, "continue": cont_loss}


def shortcut_forcing_loss(model: Dynamics, batch: dict, config: ShortcutConfig = ShortcutConfig()):
    """Loss on latent windows.

    batch: ``latents`` (B, T, K, D) clean raw tokenizer latents, ``actions`` (B, T, A) or (B, T), ``action_mask``
    (B, T) bool, ``rewards`` (B, T) float, ``terminated`` (B, T) bool (conventions of
    ``imaginegym.data``: per frame, the action that led into it and its reward), and for a
    task-conditioned model ``task`` (B, task_dim), each window's task.
    Returns (loss, metrics).
    """
    if config.low_noise_max is None:
        config = dataclasses.replace(config, low_noise_max=2 * model.config.context_noise)
    z0 = model.normalize(batch["latents"])  # diffusion runs on standardized latents
    b, t = z0.shape[:2]
    device = z0.device
    k_max = model.config.k_max
    levels = noise.step_levels(k_max)
    n_boot = int(round(b * config.bootstrap_fraction)) if levels > 1 else 0
    n_match = int(round((b - n_boot) * config.matched_fraction))
    n_flow = b - n_boot - n_match

    tau = sample_frame_tau((b, t), k_max, config, device)
    z_tau = noise.add_noise(z0, tau, torch.randn_like(z0))
    fine = torch.zeros(b, t, dtype=torch.long, device=device)
    actions, action_mask = batch["actions"], batch["action_mask"]
    task = batch.get("task")

    def task_of(rows: slice):
        return None if task is None else task[rows]

    metrics, totals = {}, []

    # flow-matching windows: every frame at d_min, target z0
    parts = {"flow": [], "reward": [], "continue": []}  # per-frame losses of every kind of window

    def add(frame_losses: dict) -> None:
        for key, value in frame_losses.items():
            parts[key].append(value.flatten())

    if n_flow:
        f = slice(0, n_flow)
        out = model(z_tau[f], tau[f], fine[f], actions[f], action_mask[f], task=task_of(f))
        add(_frame_losses(model, z0[f], *out, tau[f], batch["rewards"][f], batch["terminated"][f], action_mask[f], config))

    if n_match:  # every frame predicted from low-noise copies of the frames before it
        m = slice(n_flow, n_flow + n_match)
        tau_ctx = sample_low_tau((n_match, t), k_max, config, device)
        z_ctx = noise.add_noise(z0[m], tau_ctx, torch.randn_like(z0[m]))
        tau_m = sample_predicted_tau((n_match, t), k_max, config, device)
        z_m = noise.add_noise(z0[m], tau_m, torch.randn_like(z0[m]))
        out = two_copy_forward(model, z_ctx, tau_ctx, z_m, tau_m, actions[m], action_mask[m], task=task_of(m))
        add(_frame_losses(model, twice(z0[m]), *out, torch.cat([tau_ctx, tau_m], 1), twice(batch["rewards"][m]),
                          twice(batch["terminated"][m]), twice(action_mask[m]), config))

    if n_boot:
        s = slice(n_flow + n_match, b)
        level = torch.randint(1, levels, (n_boot, 1), device=device)
        d = noise.step_size(level, k_max)  # (Bb, 1)
        tau_t = noise.sample_tau_on_grid((n_boot, t), d[:, 0])
        z_t = noise.add_noise(z0[s], tau_t, torch.randn_like(z0[s]))
        # [fixed context copy at d_min | frames taking the step]: a frame sees earlier context and itself
        frame_mask = two_copy_frame_mask(t, model.config.context_length, device)
        times = torch.arange(t, device=device).repeat(2)
        prior = twice(noise.previous_frame_prior(z_tau[s], tau[s]))  # both copies of frame t lean on context frame t-1
        acts, amask = twice(actions[s]), twice(action_mask[s])

        def run(z_step, tau_step, d_step):
            lvl = torch.round(torch.log2(d_step * k_max)).long().expand(n_boot, t)
            return model(
                torch.cat([z_tau[s], z_step], 1), torch.cat([tau[s], tau_step], 1),
                torch.cat([fine[s], lvl], 1), acts, amask, times=times, frame_mask=frame_mask, prior=prior, task=task_of(s),
            )

        target = noise.bootstrap_target(lambda z, tt, dd: run(z, tt, dd)[0][:, t:], z_t, tau_t, d)
        z0_hat, reward, cont = run(z_t, tau_t, d)
        add(_frame_losses(model, z0[s], z0_hat[:, :t], reward[:, :t], cont[:, :t], tau[s], batch["rewards"][s], batch["terminated"][s], action_mask[s], config))
        boot = noise.loss_weight(tau_t, config.loss_weight_floor) * (z0_hat[:, t:] - target).pow(2).mean(dim=(-2, -1))
        metrics["bootstrap"] = boot.mean().detach()
        totals.append(boot.flatten())

    losses = {key: torch.cat(values) for key, values in parts.items()}
    totals.append(losses["flow"])
    latent_loss = torch.cat(totals).mean()
    loss = latent_loss + config.reward_weight * losses["reward"].mean() + config.continue_weight * losses["continue"].mean()
    metrics.update({"flow": losses["flow"].mean().detach(), "reward": losses["reward"].mean().detach(), "continue": losses["continue"].mean().detach(), "loss": loss.detach()})
    return loss, metrics


@torch.no_grad()
def imagine_continuation(model: Dynamics, batch: dict, start: int, num_steps: int) -> torch.Tensor:
    """The model's own imagination of frames ``start:`` of windows given their real frames before.

    Runs exactly as imagination does (KV cache, context at tau_ctx, ``num_steps`` shortcut
    steps, the real actions). Returns standardized latents (B, T, K, D): the real frames
    before ``start``, the imagined ones from there.
    """
    raw, actions, action_mask = batch["latents"], batch["actions"], batch["action_mask"]
    b, t = raw.shape[:2]
    if not 0 < start < t:
        raise ValueError(f"imagine_from={start} must lie in (0, {t}): rollout windows need real context and frames to imagine")
    if not bool(action_mask[:, start:].all()):
        raise ValueError("rollout windows must not cross an episode start (action_mask False after imagine_from)")
    rows = torch.arange(b, device=raw.device)
    cache = model.new_cache(b, raw.device, raw.dtype)
    model.prefill(cache, rows, raw[:, :start], actions[:, :start], action_mask[:, :start], torch.randn_like(raw[:, :start]),
                  task=batch.get("task"))
    frames = [raw[:, :start]]
    for i in range(start, t):
        noise_steps = torch.randn(b, num_steps + 1, *raw.shape[2:], device=raw.device, dtype=raw.dtype)
        frames.append(model.imagine_step(cache, rows, actions[:, i], noise_steps)[0][:, None])
    return model.normalize(torch.cat(frames, 1))


def rollout_forcing_loss(model: Dynamics, batch: dict, config: ShortcutConfig = ShortcutConfig()):
    """Loss on windows whose frames from ``batch["imagine_from"]`` on are seen as the model imagined them.

    The two-copy layout of the matched windows: a context copy at tau_ctx holding the real
    frames before ``imagine_from`` and the model's imagination after (without gradient), and
    a copy of the real frames at any noise (``pure_noise_prob`` of them at tau = 1) whose
    frames attend to the context copy of the frames before them. The predicted real frames
    from ``imagine_from`` on carry the latent, reward and continue losses; the imagined
    context frames carry the reward and continue losses against the real ones, since
    imagination reads rewards from exactly those passes. With ``mark_imagined`` the imagined
    context frames carry the model's flag, as in imagination. Returns (loss, metrics).
    """
    start = int(batch["imagine_from"])
    z0 = model.normalize(batch["latents"])
    b, t = z0.shape[:2]
    device = z0.device
    seen = imagine_continuation(model, batch, start, config.rollout_denoise_steps)
    tau_ctx = torch.full((b, t), model.config.context_noise, device=device)
    z_ctx = noise.add_noise(seen, tau_ctx, torch.randn_like(seen))
    tau = sample_predicted_tau((b, t), model.config.k_max, config, device)
    z_tau = noise.add_noise(z0, tau, torch.randn_like(z0))
    imagined = torch.zeros(2 * t, dtype=torch.bool, device=device)
    imagined[start:t] = True  # context copies of imagined frames (flagged with mark_imagined): reward and continue only
    predicted = torch.zeros_like(imagined)
    predicted[t + start:] = True  # real frames predicted from imagined context: every loss
    z0_hat, reward, cont = two_copy_forward(model, z_ctx, tau_ctx, z_tau, tau, batch["actions"], batch["action_mask"],
                                            imagined=imagined.expand(b, -1), task=batch.get("task"))
    losses = _frame_losses(model, twice(z0), z0_hat, reward, cont, torch.cat([tau_ctx, tau], 1), twice(batch["rewards"]),
                           twice(batch["terminated"]), twice(batch["action_mask"]), config)
    both = imagined | predicted
    flow = losses["flow"][:, predicted].mean()
    reward_loss = losses["reward"][:, both].mean()
    cont_loss = losses["continue"][:, both].mean()
    loss = flow + config.reward_weight * reward_loss + config.continue_weight * cont_loss
    drift = (seen[:, start:] - z0[:, start:]).pow(2).mean()
    return loss, {"rollout_flow": flow.detach(), "rollout_reward": reward_loss.detach(), "rollout_continue": cont_loss.detach(),
                  "rollout_drift": drift.detach(), "loss": loss.detach()}
