"""The noise convention: each formula pinned on small tensors."""

import pytest
import torch

from imaginegym.models import noise


def test_add_noise_interpolates_clean_to_noise():
    z0, eps = torch.ones(2, 3, 4), torch.full((2, 3, 4), -1.0)
    tau = torch.tensor([[0.0, 0.25, 1.0], [0.5, 0.5, 0.5]])
    z = noise.add_noise(z0, tau, eps)
    assert torch.allclose(z[0, 0], z0[0, 0])  # tau = 0 is clean
    assert torch.allclose(z[0, 2], eps[0, 2])  # tau = 1 is pure noise
    assert torch.allclose(z[0, 1], torch.full((4,), 0.75 - 0.25))


def test_loss_weight_ramps_toward_clean_frames():
    assert noise.loss_weight(torch.tensor(0.0)) == pytest.approx(1.0)
    assert noise.loss_weight(torch.tensor(1.0)) == pytest.approx(0.1)
    assert noise.loss_weight(torch.tensor(0.2)) > noise.loss_weight(torch.tensor(0.8))
    assert noise.loss_weight(torch.tensor(1.0), floor=0.5) == pytest.approx(0.5)
    assert noise.loss_weight(torch.tensor([0.0, 0.7, 1.0]), floor=1.0).tolist() == [1.0, 1.0, 1.0]  # flat


def test_perfect_predictor_euler_step_lands_on_the_path():
    torch.manual_seed(0)
    z0, eps = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    tau, d = torch.full((3, 2), 0.75), 0.25
    z_tau = noise.add_noise(z0, tau, eps)
    stepped = noise.euler_step(z_tau, z0, tau, d)
    assert torch.allclose(stepped, noise.add_noise(z0, tau - d, eps), atol=1e-6)


def test_one_full_step_from_pure_noise_returns_the_prediction():
    z_tau, z0_hat = torch.randn(2, 4), torch.randn(2, 4)
    out = noise.euler_step(z_tau, z0_hat, torch.ones(2), 1.0)
    assert torch.allclose(out, z0_hat, atol=1e-6)


def test_bootstrap_target_of_an_oracle_is_the_clean_latent():
    torch.manual_seed(0)
    z0, eps = torch.randn(4, 3, 2, 6), torch.randn(4, 3, 2, 6)
    d = torch.tensor([[0.5], [0.25], [1.0], [0.125]])
    tau = noise.sample_tau_on_grid((4, 3), d[:, 0])
    z_tau = noise.add_noise(z0, tau, eps)
    target = noise.bootstrap_target(lambda z, t, dd: z0, z_tau, tau, d)
    assert torch.allclose(target, z0, atol=1e-5)


def test_bootstrap_target_matches_two_half_steps_and_velocity_loss():
    """x-space MSE against the target equals tau^2 times the velocity-space loss."""
    torch.manual_seed(1)
    w = torch.randn(6)
    f = lambda z, t, dd: torch.tanh(z * w) + 0.1 * t[..., None]  # noqa: E731 - any deterministic model
    z_tau, tau, d = torch.randn(2, 1, 6), torch.tensor([[1.0], [0.5]]), torch.tensor([[0.5], [0.25]])
    target = noise.bootstrap_target(f, z_tau, tau, d)
    half = d / 2
    b1 = (f(z_tau, tau, half) - z_tau) / tau[..., None]
    z_mid = z_tau + half[..., None] * b1
    b2 = (f(z_mid, tau - half, half) - z_mid) / (tau - half)[..., None]
    b_bar = (b1 + b2) / 2
    student = torch.randn(2, 1, 6)
    velocity_loss = tau[..., None] ** 2 * ((student - z_tau) / tau[..., None] - b_bar) ** 2
    assert torch.allclose((student - target) ** 2, velocity_loss, atol=1e-5)


def test_tau_grid_is_d_to_one_in_steps_of_d():
    d = torch.full((5000,), 0.25)
    tau = noise.sample_tau_on_grid((5000, 1), d)
    assert set(torch.round(tau * 4).long().flatten().tolist()) == {1, 2, 3, 4}


def test_step_levels_and_sizes():
    assert noise.step_levels(64) == 7
    assert noise.step_size(0, 64) == 1 / 64 and noise.step_size(6, 64) == 1.0
    assert noise.step_level(4, 64) == 4  # d = 1/4 = 2**4 / 64
    with pytest.raises(ValueError, match="power of two"):
        noise.step_level(3, 64)
    with pytest.raises(ValueError, match="power of two"):
        noise.step_levels(48)


def test_denoise_schedule_ends_at_clean():
    schedule = noise.denoise_schedule(4)
    assert schedule[0] == (1.0, 0.25)
    assert schedule[-1][0] - schedule[-1][1] == pytest.approx(0.0)


def test_preconditioning_keeps_clean_inputs_and_hands_noise_to_the_network():
    c_skip, c_out = noise.preconditioning(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(c_skip, torch.tensor([1.0, 1.0, 0.0]))
    assert torch.allclose(c_out, torch.tensor([0.0, 0.5**0.5, 1.0]))


def test_prediction_around_the_previous_frame():
    torch.manual_seed(0)
    z_tau, tau = torch.randn(2, 3, 4), torch.tensor([[0.1, 0.5, 1.0], [0.0, 0.2, 0.3]])
    prior = noise.previous_frame_prior(z_tau, tau)
    assert torch.equal(prior[:, 0], torch.zeros(2, 4))  # the first frame has none
    assert torch.allclose(prior[:, 1:], noise.clean_estimate(z_tau, tau)[:, :-1])
    residual = torch.randn(2, 3, 4)
    z0_hat = noise.precondition(z_tau, tau, residual, prior)
    assert torch.allclose(z0_hat[1, 0], z_tau[1, 0])  # tau = 0: the input itself
    assert torch.allclose(z0_hat[0, 2], prior[0, 2] + residual[0, 2])  # tau = 1: prior + residual
