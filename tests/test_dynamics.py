"""Dynamics: block-causal attention, KV-cached imagination equal to full recomputation, heads, loss."""

import pytest
import torch

from imaginegym.models.dynamics import Dynamics, DynamicsConfig, sliding_causal_mask
from imaginegym.models.shortcut import ShortcutConfig, shortcut_forcing_loss


def tiny(action_kind="box", context_length=5, **kw):
    torch.manual_seed(0)
    config = DynamicsConfig(latent_tokens=3, latent_dim=8, action_kind=action_kind, action_dim=2 if action_kind == "box" else 5,
                            width=32, depth=2, heads=2, context_length=context_length, k_max=8, **kw)
    return Dynamics(config).eval()


def inputs(model, b=2, t=4):
    z = torch.randn(b, t, 3, 8)
    tau = torch.rand(b, t)
    level = torch.zeros(b, t, dtype=torch.long)
    if model.config.action_kind == "box":
        actions = torch.randn(b, t, 2)
    else:
        actions = torch.randint(0, 5, (b, t))
    mask = torch.ones(b, t, dtype=torch.bool)
    return z, tau, level, actions, mask


def train_briefly(model, loss_fn, key: str, steps: int = 60):
    """Adam on ``loss_fn() -> (loss, metrics)`` for a few steps -> (first, last) values of ``metrics[key]``, last metrics."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(steps):
        loss, metrics = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else float(metrics[key])
    return first, float(metrics[key]), metrics


@pytest.mark.parametrize("kind,options", [("box", {}), ("discrete", {}), ("box", {"prior_input": True}),
                                          ("discrete", {"condition_tokens": False})])
def test_frames_do_not_see_the_future(kind, options):
    model = tiny(kind, **options)
    z, tau, level, actions, mask = inputs(model)
    before = model(z, tau, level, actions, mask)[0]
    z2 = z.clone()
    z2[:, -1] += 1.0  # change only the last frame
    after = model(z2, tau, level, actions, mask)[0]
    assert torch.allclose(before[:, :-1], after[:, :-1], atol=1e-6)
    assert not torch.allclose(before[:, -1], after[:, -1])


def test_sliding_window_limits_what_a_frame_sees():
    mask = sliding_causal_mask(5, 2)
    assert mask.tolist()[4] == [False, False, False, True, True]


def test_without_condition_tokens_a_frame_is_its_latent_tokens_and_still_sees_action_and_noise_level():
    model = tiny(condition_tokens=False)
    assert model.tokens_per_frame == 3 and model.new_cache(2).k.shape[3] == 5 * 3  # (capacity + 1) frames of K tokens
    z, tau, level, actions, mask = inputs(model)
    out = model(z, tau, level, actions, mask)[0]
    assert not torch.allclose(out, model(z, tau, level, actions + 1, mask)[0])
    assert not torch.allclose(out, model(z, tau, level + 1, actions, mask)[0])


@pytest.mark.parametrize("condition_tokens", [True, False])
def test_no_action_embedding_is_used_where_mask_is_false(condition_tokens):
    model = tiny(condition_tokens=condition_tokens)
    z, tau, level, actions, mask = inputs(model)
    mask[:, 0] = False
    out1 = model(z, tau, level, actions, mask)[0]
    actions2 = actions.clone()
    actions2[:, 0] = 99.0  # ignored where there is no action
    assert torch.allclose(out1, model(z, tau, level, actions2, mask)[0])


@pytest.mark.parametrize("options", [{}, {"prior_input": True}, {"condition_tokens": False, "prior_input": True, "context_noise": 0.03125}])
@pytest.mark.parametrize("context_length", [6, 4])  # 4: every cache slot filled, attention without a mask
def test_kv_cached_imagination_equals_full_recomputation(options, context_length):
    """Prefill + cached passes give what one forward over the whole window gives."""
    model = tiny(context_length=context_length, **options)
    b, c = 2, 3
    z, _, _, actions, mask = inputs(model, b, c + 1)
    mask[:, 0] = False
    cache = model.new_cache(b)
    rows = torch.arange(b)
    zero = torch.zeros_like(z[:, :c])
    model.prefill(cache, rows, z[:, :c], actions[:, :c], mask[:, :c], zero)
    step = model._step_inputs(cache, rows, actions[:, c:], mask[:, c:])
    assert (step["mask"] is None) == (context_length == c + 1)
    cached = model._cached_pass(cache, rows, z[:, c:], 0.5, 1, step, commit=False, heads=True)
    tau_ctx = model.config.context_noise
    tau = torch.cat([torch.full((b, c), tau_ctx), torch.full((b, 1), 0.5)], 1)
    level = torch.cat([torch.zeros(b, c, dtype=torch.long), torch.ones(b, 1, dtype=torch.long)], 1)
    z_in = torch.cat([(1 - tau_ctx) * z[:, :c], z[:, c:]], 1)
    full = model(z_in, tau, level, actions, mask)
    for got, want in zip(cached, full):
        assert torch.allclose(got[:, 0], want[:, -1], atol=1e-5)


def test_imagined_frames_carry_their_flag_in_the_cache_as_in_a_full_forward():
    """With mark_imagined, a frame committed by imagine_step is context flagged as imagined; prefilled frames are not."""
    model = tiny(context_length=6, mark_imagined=True, condition_tokens=False, prior_input=True)
    with torch.no_grad():
        model.imagined_embed.normal_()
    b, c = 2, 3
    z, _, _, actions, mask = inputs(model, b, c + 2)
    z = z.clamp(-1, 1)
    mask[:, 0] = False
    cache = model.new_cache(b)
    rows = torch.arange(b)
    model.prefill(cache, rows, z[:, :c], actions[:, :c], mask[:, :c], torch.zeros_like(z[:, :c]))
    noise_steps = torch.cat([torch.randn(b, 1, 3, 8), torch.zeros(b, 1, 3, 8)], 1)  # no noise when it enters the cache
    imagined, _, _ = model.imagine_step(cache, rows, actions[:, c], noise_steps)
    step = model._step_inputs(cache, rows, actions[:, c + 1:], mask[:, c + 1:])
    cached = model._cached_pass(cache, rows, z[:, c + 1:], 0.5, 1, step, commit=False, heads=True)
    tau_ctx = model.config.context_noise
    tau = torch.cat([torch.full((b, c + 1), tau_ctx), torch.full((b, 1), 0.5)], 1)
    level = torch.cat([torch.zeros(b, c + 1, dtype=torch.long), torch.ones(b, 1, dtype=torch.long)], 1)
    z_in = torch.cat([(1 - tau_ctx) * z[:, :c], (1 - tau_ctx) * imagined[:, None], z[:, c + 1:]], 1)
    flags = torch.tensor([False] * c + [True, False]).expand(b, -1)
    full = model(z_in, tau, level, actions, mask, imagined=flags)
    for got, want in zip(cached, full):
        assert torch.allclose(got[:, 0], want[:, -1], atol=1e-5)
    unflagged = model(z_in, tau, level, actions, mask)
    assert not torch.allclose(cached[0][:, 0], unflagged[0][:, -1], atol=1e-3)


def test_cache_is_a_ring_buffer_of_constant_size_and_rows_are_independent():
    model = tiny(context_length=4)
    cache = model.new_cache(3)
    shape = tuple(cache.k.shape)
    rows = torch.arange(3)
    model.prefill(cache, rows, torch.randn(3, 2, 3, 8), torch.randn(3, 2, 2), torch.ones(3, 2, dtype=torch.bool), torch.zeros(3, 2, 3, 8))
    torch.manual_seed(1)
    noise_steps = torch.randn(3, 5, 3, 8)
    for _ in range(20):
        z, r, p = model.imagine_step(cache, rows, torch.randn(3, 2), noise_steps)
        assert z.abs().max() <= 1 and torch.isfinite(r).all() and ((p >= 0) & (p <= 1)).all()
    assert tuple(cache.k.shape) == shape and cache.valid.all() and cache.time.tolist() == [22] * 3
    # stepping only row 1 leaves rows 0 and 2 untouched
    k_before = cache.k.clone()
    model.imagine_step(cache, torch.tensor([1]), torch.randn(1, 2), noise_steps[:1])
    assert torch.equal(cache.k[:, [0, 2]], k_before[:, [0, 2]]) and not torch.equal(cache.k[:, 1], k_before[:, 1])
    assert cache.time.tolist() == [22, 23, 22]


def test_batched_step_matches_single_env_steps():
    model = tiny()
    ctx = torch.randn(2, 3, 3, 8), torch.randn(2, 3, 2), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3, 3, 8)
    action, noise_steps = torch.randn(2, 2), torch.randn(2, 5, 3, 8)
    both = model.new_cache(2)
    model.prefill(both, torch.arange(2), *ctx)
    z_both = model.imagine_step(both, torch.arange(2), action, noise_steps)[0]
    one = model.new_cache(1)
    model.prefill(one, torch.arange(1), *(x[1:] for x in ctx))
    z_one = model.imagine_step(one, torch.arange(1), action[1:], noise_steps[1:])[0]
    assert torch.allclose(z_both[1], z_one[0], atol=1e-5)


def test_shortcut_forcing_loss_trains_every_part():
    torch.manual_seed(0)
    model = tiny(context_length=4).train()
    b, t = 8, 4
    batch = {
        "latents": torch.rand(b, t, 3, 8) * 2 - 1, "actions": torch.randn(b, t, 2),
        "action_mask": torch.ones(b, t, dtype=torch.bool), "rewards": torch.rand(b, t),
        "terminated": torch.zeros(b, t, dtype=torch.bool),
    }
    batch["action_mask"][:, 0] = False
    loss, metrics = shortcut_forcing_loss(model, batch, ShortcutConfig(bootstrap_fraction=0.25))
    assert {"flow", "bootstrap", "reward", "continue", "loss"} <= set(metrics)
    loss.backward()
    assert model.step_embed.weight.grad[1:].abs().sum() > 0  # coarse step sizes get trained
    assert model.reward_head[-1].weight.grad.abs().sum() > 0
    first, last, _ = train_briefly(model, lambda: shortcut_forcing_loss(model, batch), "flow")
    assert last < 0.7 * first


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="action_kind"):
        DynamicsConfig(action_kind="multi")
    with pytest.raises(ValueError, match="power of two"):
        DynamicsConfig(k_max=48)
    with pytest.raises(ValueError, match="context_noise=1.5"):
        DynamicsConfig(context_noise=1.5)
    with pytest.raises(ValueError, match="loss_weight_floor=0"):
        ShortcutConfig(loss_weight_floor=0)
    with pytest.raises(ValueError, match="low_noise_max=2"):
        ShortcutConfig(low_noise_max=2)
    with pytest.raises(ValueError, match="pure_noise_prob=1.5"):
        ShortcutConfig(pure_noise_prob=1.5)


def test_diffusion_runs_on_standardized_latents_and_returns_raw_ones():
    model = tiny(context_length=4)
    raw = torch.rand(200, 3, 8) * 0.2 + 0.5  # small fluctuations around an offset, like static background
    model.set_latent_statistics(raw)
    standardized = model.normalize(raw)
    assert torch.allclose(standardized.mean(0), torch.zeros(3, 8), atol=1e-5)
    assert torch.allclose(standardized.std(0), torch.ones(3, 8), atol=1e-4)
    assert torch.allclose(model.denormalize(standardized), raw, atol=1e-6)
    cache = model.new_cache(2)
    model.prefill(cache, torch.arange(2), raw[:4].reshape(2, 2, 3, 8), torch.randn(2, 2, 2),
                  torch.ones(2, 2, dtype=torch.bool), torch.randn(2, 2, 3, 8))
    z, _, _ = model.imagine_step(cache, torch.arange(2), torch.randn(2, 2), torch.randn(2, 5, 3, 8))
    assert z.min() >= -1 and z.max() <= 1


def test_matched_windows_predict_each_frame_from_low_noise_copies():
    """Matched windows: each predicted frame sees the low-noise copies of earlier frames and itself only."""
    from imaginegym.models.shortcut import two_copy_frame_mask

    mask = two_copy_frame_mask(4, 3, "cpu")
    t = 4
    assert mask[t + 2].tolist() == [True, True, False, False] + [False, False, True, False]
    assert mask[t + 3].tolist() == [False, True, True, False] + [False, False, False, True]  # window of 3 frames, itself included
    assert not mask[:t, t:].any()  # context never sees predicted frames
    torch.manual_seed(0)
    model = tiny(context_length=4).train()
    b = 8
    batch = {
        "latents": torch.rand(b, t, 3, 8) * 2 - 1, "actions": torch.randn(b, t, 2),
        "action_mask": torch.ones(b, t, dtype=torch.bool), "rewards": torch.rand(b, t),
        "terminated": torch.zeros(b, t, dtype=torch.bool),
    }
    config = ShortcutConfig(bootstrap_fraction=0.25, matched_fraction=1.0)  # no plain windows at all
    first, last, metrics = train_briefly(model, lambda: shortcut_forcing_loss(model, batch, config), "flow")
    assert {"flow", "bootstrap", "reward"} <= set(metrics)
    assert last < 0.7 * first


def test_pure_noise_prob_puts_the_predicted_frames_of_matched_windows_at_tau_one():
    model = tiny(context_length=4)
    b, t = 4, 4
    batch = {
        "latents": torch.rand(b, t, 3, 8) * 2 - 1, "actions": torch.randn(b, t, 2),
        "action_mask": torch.ones(b, t, dtype=torch.bool), "rewards": torch.rand(b, t),
        "terminated": torch.zeros(b, t, dtype=torch.bool),
    }
    seen = []
    forward = model.forward
    model.forward = lambda z, tau, *args, **kw: seen.append(tau) or forward(z, tau, *args, **kw)
    for prob, expect_all_one in ((1.0, True), (0.0, False)):
        seen.clear()
        shortcut_forcing_loss(model, batch, ShortcutConfig(bootstrap_fraction=0.0, matched_fraction=1.0, pure_noise_prob=prob))
        (tau,) = seen
        k_max = model.config.k_max
        assert tau[:, :t].max() <= round(2 * model.config.context_noise * k_max) / k_max  # the low-noise context copy
        assert bool((tau[:, t:] == 1).all()) == expect_all_one


def rollout_batch(b=6, t=7, start=4):
    torch.manual_seed(1)
    batch = {
        "latents": torch.rand(b, t, 3, 8) * 2 - 1, "actions": torch.randn(b, t, 2),
        "action_mask": torch.ones(b, t, dtype=torch.bool), "rewards": torch.rand(b, t),
        "terminated": torch.zeros(b, t, dtype=torch.bool), "imagine_from": torch.tensor(start),
    }
    batch["action_mask"][:, 0] = False
    return batch


def test_rollout_windows_see_the_models_own_imagination_not_the_real_future():
    from imaginegym.models.shortcut import imagine_continuation

    model = tiny(context_length=4)
    batch = rollout_batch()
    torch.manual_seed(0)
    seen = imagine_continuation(model, batch, 4, 2)
    assert torch.allclose(seen[:, :4], model.normalize(batch["latents"][:, :4]))  # real context as it is
    assert not torch.allclose(seen[:, 4:], model.normalize(batch["latents"][:, 4:]), atol=0.1)  # imagined, not copied
    changed = dict(batch, latents=batch["latents"].clone())
    changed["latents"][:, 4:] = -changed["latents"][:, 4:]
    torch.manual_seed(0)
    assert torch.equal(imagine_continuation(model, changed, 4, 2), seen)  # the real future is never read
    changed["actions"] = batch["actions"].clone()
    changed["actions"][:, 5] += 1
    torch.manual_seed(0)
    other = imagine_continuation(model, changed, 4, 2)
    assert torch.equal(other[:, :5], seen[:, :5]) and not torch.allclose(other[:, 5:], seen[:, 5:])  # but the actions are
    with pytest.raises(ValueError, match="imagine_from=7"):
        imagine_continuation(model, batch, 7, 2)
    bad = dict(batch, action_mask=batch["action_mask"].clone())
    bad["action_mask"][:, 5] = False
    with pytest.raises(ValueError, match="episode start"):
        imagine_continuation(model, bad, 4, 2)


def test_rollout_forcing_loss_trains_on_real_targets_of_imagined_frames():
    from imaginegym.models.shortcut import rollout_forcing_loss

    model = tiny(context_length=4).train()
    batch = rollout_batch()
    config = ShortcutConfig(rollout_denoise_steps=2, pure_noise_prob=0.5)
    loss, metrics = rollout_forcing_loss(model, batch, config)
    assert {"rollout_flow", "rollout_reward", "rollout_continue", "rollout_drift", "loss"} <= set(metrics)
    loss.backward()
    assert model.reward_head[-1].weight.grad.abs().sum() > 0 and model.latent_out.weight.grad.abs().sum() > 0
    # the frames before imagine_from carry no loss: their targets do not move it
    changed = dict(batch, latents=batch["latents"].clone(), rewards=batch["rewards"].clone())
    changed["rewards"][:, :4] += 5
    torch.manual_seed(3)
    a = rollout_forcing_loss(model, batch, config)[0]
    torch.manual_seed(3)
    assert torch.equal(rollout_forcing_loss(model, changed, config)[0], a)
    changed["rewards"][:, 5] += 5
    torch.manual_seed(3)
    assert rollout_forcing_loss(model, changed, config)[0] > a + 1
    first, last, _ = train_briefly(model, lambda: rollout_forcing_loss(model, batch, config), "rollout_flow")
    assert last < 0.7 * first
    with pytest.raises(ValueError, match="rollout_denoise_steps=3"):
        ShortcutConfig(rollout_denoise_steps=3)


def test_rollout_forcing_loss_trains_the_imagined_flag_and_plain_windows_leave_it_alone():
    from imaginegym.models.shortcut import rollout_forcing_loss

    model = tiny(context_length=4, mark_imagined=True).train()
    batch = rollout_batch()
    rollout_forcing_loss(model, batch, ShortcutConfig(rollout_denoise_steps=2))[0].backward()
    assert model.imagined_embed.grad.abs().sum() > 0
    model.zero_grad()
    plain = {key: value for key, value in batch.items() if key != "imagine_from"}
    shortcut_forcing_loss(model, plain, ShortcutConfig(matched_fraction=0.5))[0].backward()
    assert model.imagined_embed.grad is None or not model.imagined_embed.grad.any()  # real data: never flagged


def test_task_conditioned_cached_imagination_equals_full_recomputation_and_depends_on_the_task():
    """A model with task_dim reads each env's task from the cache as a full forward reads it, and its outputs follow the task."""
    model = tiny(context_length=6, task_dim=2)
    model.set_task_statistics(torch.tensor([[0.0, 0.0], [8.0, 8.0], [4.0, 2.0]]))
    b, c = 2, 3
    z, _, _, actions, mask = inputs(model, b, c + 1)
    mask[:, 0] = False
    task = torch.tensor([[2.0, 7.0], [5.0, 1.0]])
    cache = model.new_cache(b)
    rows = torch.arange(b)
    model.prefill(cache, rows, z[:, :c], actions[:, :c], mask[:, :c], torch.zeros_like(z[:, :c]), task=task)
    step = model._step_inputs(cache, rows, actions[:, c:], mask[:, c:])
    cached = model._cached_pass(cache, rows, z[:, c:], 0.5, 1, step, commit=False, heads=True)
    tau_ctx = model.config.context_noise
    tau = torch.cat([torch.full((b, c), tau_ctx), torch.full((b, 1), 0.5)], 1)
    level = torch.cat([torch.zeros(b, c, dtype=torch.long), torch.ones(b, 1, dtype=torch.long)], 1)
    z_in = torch.cat([(1 - tau_ctx) * z[:, :c], z[:, c:]], 1)
    full = model(z_in, tau, level, actions, mask, task=task)
    for got, want in zip(cached, full):
        assert torch.allclose(got[:, 0], want[:, -1], atol=1e-5)
    other = model(z_in, tau, level, actions, mask, task=task.flip(0))
    assert not torch.allclose(full[1], other[1], atol=1e-4)  # the reward head sees the task


def test_task_errors_name_the_fix():
    with pytest.raises(ValueError, match="conditioned on the task"):
        tiny(task_dim=2)(*inputs(tiny(task_dim=2)))
    with pytest.raises(ValueError, match="one task"):
        tiny()(*inputs(tiny()), task=torch.zeros(2, 2))
    model = tiny(task_dim=2)
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        model(*inputs(model), task=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="task_dim"):
        DynamicsConfig(task_dim=-1)


def test_single_task_models_keep_their_state_dict():
    """No task entries in a model without tasks: the bundled models' files still load."""
    assert not any(key.startswith("task") for key in tiny().state_dict())
    assert {"task_mean", "task_std"} <= set(tiny(task_dim=2).state_dict())
