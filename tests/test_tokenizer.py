"""Tokenizers: shapes, tanh range, learning, masked-autoencoder curriculum, LPIPS fallback."""

import warnings

import pytest
import torch

from imaginegym import metrics
from imaginegym.models.tokenizer import TokenizerConfig, float_to_pixels, foreground_mask, make_tokenizer, pixels_to_float


@pytest.mark.parametrize("config", [
    TokenizerConfig(kind="cnn", image_size=16, channels=(8, 8), latent_channels=4, token_patch=2),
    TokenizerConfig(kind="cnn", image_size=16, channels=(8, 8), latent_channels=4, token_patch=4,
                    decoder_channels=(16, 8), decoder_upsample="pixel_shuffle"),
    TokenizerConfig(kind="cnn", image_size=16, channels=(8, 8), latent_channels=4, bottleneck="global",
                    width=32, num_latents=2, latent_dim=6, decoder_upsample="pixel_shuffle"),
    TokenizerConfig(kind="transformer", image_size=16, patch_size=4, width=32, depth=1, heads=2, num_latents=3, latent_dim=8),
])
def test_pixel_tokenizers_round_trip_shapes_and_range(config):
    tok = make_tokenizer(config)
    frames = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    z = tok.encode(frames)
    assert z.shape == (2, 3, config.latent_tokens, config.token_dim)
    assert z.abs().max() <= 1
    obs = tok.to_observation(tok.decode(z))
    assert obs.shape == frames.shape and obs.dtype == torch.uint8


@pytest.mark.parametrize("upsample, bottleneck", [("transposed", "grid"), ("pixel_shuffle", "grid"), ("pixel_shuffle", "global")])
def test_cnn_tokenizer_learns_to_reconstruct(upsample, bottleneck):
    torch.manual_seed(0)
    tok = make_tokenizer(TokenizerConfig(kind="cnn", image_size=16, channels=(16, 16), latent_channels=8, token_patch=2,
                                         decoder_upsample=upsample, bottleneck=bottleneck, width=64, num_latents=1, latent_dim=16))
    frames = torch.randint(0, 256, (4, 1, 16, 16, 3), dtype=torch.uint8)
    frames[..., :8, :] = 0  # some structure
    optimizer = torch.optim.Adam(tok.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        loss, m = tok.loss(frames)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else float(m["psnr"])
    assert float(m["psnr"]) > first + 3


def test_transformer_tokenizer_mask_ratio_warms_up_and_is_block_causal():
    tok = make_tokenizer(TokenizerConfig(kind="transformer", image_size=16, patch_size=4, width=32, depth=1, heads=2,
                                         num_latents=2, latent_dim=4, mask_ratio_max=0.8, mask_warmup_steps=100))
    assert tok.mask_ratio_max(0) == 0 and tok.mask_ratio_max(50) == pytest.approx(0.4) and tok.mask_ratio_max(500) == pytest.approx(0.8)
    tok.eval()
    frames = torch.randint(0, 256, (1, 3, 16, 16, 3), dtype=torch.uint8)
    z = tok.encode(frames)
    changed = frames.clone()
    changed[:, 2] = 255 - changed[:, 2]
    z2 = tok.encode(changed)
    assert torch.allclose(z[:, :2], z2[:, :2], atol=1e-6)  # past latents never see later frames
    assert not torch.allclose(z[:, 2], z2[:, 2])


@pytest.mark.parametrize("kind", ["mlp", "embedding"])
def test_vector_and_discrete_tokenizers(kind):
    torch.manual_seed(0)
    config = TokenizerConfig(kind=kind, obs_dim=2, num_values=9 if kind == "embedding" else 0, width=32, num_latents=2, latent_dim=4)
    tok = make_tokenizer(config)
    obs = torch.randint(0, 9, (16, 2)) if kind == "embedding" else torch.randn(16, 2)
    optimizer = torch.optim.Adam(tok.parameters(), lr=1e-2)
    for _ in range(150):
        loss, m = tok.loss(obs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    decoded = tok.to_observation(tok.decode(tok.encode(obs)))
    if kind == "embedding":
        assert (decoded == obs).float().mean() > 0.9
        with pytest.raises(ValueError, match=r"\[0, 9\)"):
            tok.encode(torch.tensor([[9, 0]]))
    else:
        assert float(m["mse"]) < 0.05


def test_bad_configs_name_the_problem():
    with pytest.raises(ValueError, match="token_patch"):
        TokenizerConfig(kind="cnn", image_size=64, channels=(8, 8, 8), token_patch=3)
    with pytest.raises(ValueError, match="kind"):
        TokenizerConfig(kind="vqvae")
    with pytest.raises(ValueError, match="decoder_channels"):
        TokenizerConfig(kind="cnn", image_size=64, channels=(8, 8, 8), decoder_channels=(16, 8))
    with pytest.raises(ValueError, match="bottleneck"):
        TokenizerConfig(kind="cnn", bottleneck="pooled")
    with pytest.raises(ValueError, match="decoder_upsample"):
        TokenizerConfig(kind="cnn", decoder_upsample="nearest")
    with pytest.raises(ValueError, match="obs_dim"):
        TokenizerConfig(kind="mlp")
    with pytest.raises(ValueError, match="foreground_weight=0.5"):
        TokenizerConfig(kind="cnn", foreground_weight=0.5)


def test_pixel_conversions_round_trip():
    frames = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    assert torch.equal(float_to_pixels(pixels_to_float(frames)), frames)


def test_lpips_absent_warns_once_and_can_be_required(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "lpips_backbone_path", lambda: tmp_path / "missing.pth")
    monkeypatch.setattr(metrics, "_warned_lpips", False)
    with pytest.warns(UserWarning, match="LPIPS backbone weights not found"):
        assert metrics.load_lpips() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.load_lpips() is None  # said once only
    with pytest.raises(FileNotFoundError, match="LPIPS"):
        metrics.load_lpips(required=True)


def test_cnn_decoder_options_keep_old_layouts_and_lists_from_json():
    """The default decoder keeps the layout of earlier files; JSON lists become tuples."""
    mirrored = make_tokenizer(TokenizerConfig(kind="cnn", image_size=16, channels=(8, 16), token_patch=2))
    explicit = make_tokenizer(TokenizerConfig(kind="cnn", image_size=16, channels=[8, 16], token_patch=2, decoder_channels=[16, 8]))
    assert explicit.config.channels == (8, 16) and explicit.config.decoder_channels == (16, 8)
    assert {k: v.shape for k, v in mirrored.state_dict().items()} == {k: v.shape for k, v in explicit.state_dict().items()}
    shuffle = make_tokenizer(TokenizerConfig(kind="cnn", image_size=16, channels=(8, 16), token_patch=2, decoder_upsample="pixel_shuffle"))
    full_resolution_convs = [m for m in shuffle.decoder if isinstance(m, torch.nn.Conv2d) and m.out_channels == 3]
    assert not full_resolution_convs  # the last doubling is a pixel shuffle


@pytest.mark.parametrize("upsample, bottleneck, background", [
    ("transposed", "grid", "learned"), ("pixel_shuffle", "grid", "learned"), ("pixel_shuffle", "global", "learned"),
    ("transposed", "global", "median"), ("pixel_shuffle", "global", "median"),
])
def test_decode_observation_equals_decode_then_to_observation(upsample, bottleneck, background):
    torch.manual_seed(0)
    tok = make_tokenizer(TokenizerConfig(kind="cnn", image_size=16, channels=(8, 16), latent_channels=4, token_patch=2, background=background,
                                         decoder_upsample=upsample, bottleneck=bottleneck, width=32, num_latents=2, latent_dim=4)).eval()
    with torch.no_grad():
        tok.background.add_(torch.rand_like(tok.background) - 0.5)  # not the flat initial image
        z = torch.rand(2, 3, tok.config.latent_tokens, tok.config.token_dim) * 2 - 1
        slow = tok.to_observation(tok.decode(z))
    fast = tok.decode_observation(z)
    assert fast.shape == (2, 3, 16, 16, 3) and fast.dtype == torch.uint8
    assert (fast.int() - slow.int()).abs().max() <= 1  # rounding of float sums in another order


def moving_square_frames(batch: int = 8) -> torch.Tensor:
    """A static grey background with a white 3x3 square at a different place in each frame."""
    frames = torch.full((batch, 1, 16, 16, 3), 90, dtype=torch.uint8)
    for i in range(batch):
        frames[i, 0, 6:9, i + 2 : i + 5] = 255
    return frames


def test_foreground_mask_marks_the_pixels_away_from_the_batch_median():
    frames = moving_square_frames()
    frames[0, 0, 0, 0] = 90 + metrics.MOVING_THRESHOLD  # on the threshold: still background
    mask = foreground_mask(frames)
    assert mask.shape == (8, 1, 1, 16, 16)
    expected = (frames[..., 0] == 255).float().unsqueeze(2)
    assert torch.equal(mask, expected)


def test_changed_frames_are_those_that_differ_from_the_frame_before():
    context = torch.zeros(1, 2, 4, 4, 3, dtype=torch.uint8)
    target = torch.zeros(1, 3, 4, 4, 3, dtype=torch.uint8)
    target[0, 1:, 2, 2, 1] = 7  # frame 0 equals the last context frame, frame 2 equals frame 1
    assert metrics.changed_frames(context, target).tolist() == [[False, True, False]]


def test_foreground_weight_scales_the_loss_of_moving_pixels_only():
    frames = moving_square_frames()
    config = dict(kind="cnn", image_size=16, channels=(8, 8), latent_channels=4, token_patch=2)
    torch.manual_seed(0)
    plain = make_tokenizer(TokenizerConfig(**config))
    weighted = make_tokenizer(TokenizerConfig(**config, foreground_weight=10.0))
    weighted.load_state_dict(plain.state_dict())
    squared_error = (plain.decode(plain.encode(frames)) - pixels_to_float(frames)).pow(2)
    moving = foreground_mask(frames)
    loss, m = weighted.loss(frames)
    torch.testing.assert_close(loss, squared_error.mean() + 9.0 * (squared_error * moving).mean())
    torch.testing.assert_close(plain.loss(frames)[0], squared_error.mean())
    expected_moving = (squared_error * moving).sum() / (moving.sum() * 3)
    torch.testing.assert_close(m["moving_psnr"], -10 * torch.log10(expected_moving))


def median_background_tokenizer(upsample: str = "pixel_shuffle"):
    return make_tokenizer(TokenizerConfig(kind="cnn", image_size=16, channels=(8, 16), latent_channels=4, bottleneck="global",
                                          width=32, num_latents=1, latent_dim=4, decoder_upsample=upsample, background="median"))


def test_median_background_is_the_per_pixel_median_and_a_saved_buffer():
    frames = moving_square_frames()
    tok = median_background_tokenizer()
    tok.set_background(frames)
    assert torch.equal(float_to_pixels(tok.background), frames.flatten(0, 1).median(dim=0).values)
    assert "background" in tok.state_dict() and "background" not in dict(tok.named_parameters())
    with pytest.raises(ValueError, match=r"frames of shape \(2, 8, 8, 3\)"):
        tok.set_background(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    learned = make_tokenizer(TokenizerConfig(kind="cnn", image_size=16, channels=(8, 16), token_patch=2))
    with pytest.raises(ValueError, match="background='median'"):
        learned.set_background(frames)


@pytest.mark.parametrize("upsample", ["transposed", "pixel_shuffle"])
def test_median_background_shows_exactly_where_the_decoder_paints_nothing(upsample):
    """Opacity ~0 (a very negative logit) leaves the background's pixels exact, whatever the latent."""
    frames = moving_square_frames()
    tok = median_background_tokenizer(upsample).eval()
    tok.set_background(frames)
    last = tok.decoder[-2] if upsample == "pixel_shuffle" else tok.decoder[-1]
    with torch.no_grad():
        opacity_logit = torch.arange(last.out_channels) // (last.out_channels // 4) == 3  # channels are colour-major
        last.bias[opacity_logit] = -30.0
        z = torch.rand(3, 1, 4) * 2 - 1
        out = tok.decode_observation(z)
        assert torch.equal(out, tok.to_observation(tok.decode(z)))
        last.bias[opacity_logit] = 30.0  # fully opaque: the decoder's own colours, not the background
        painted = tok.decode_observation(z)
    background = frames.flatten(0, 1).median(dim=0).values
    assert torch.equal(out, background.expand_as(out))
    assert not torch.equal(painted, background.expand_as(painted))


def test_median_background_rejects_an_unknown_choice():
    with pytest.raises(ValueError, match="background='mean'"):
        TokenizerConfig(kind="cnn", background="mean")


def test_opacity_penalty_adds_the_mean_opacity_to_the_loss():
    frames = moving_square_frames()
    config = dict(kind="cnn", image_size=16, channels=(8, 16), latent_channels=4, bottleneck="global", width=32,
                  num_latents=1, latent_dim=4, background="median")
    torch.manual_seed(0)
    plain = make_tokenizer(TokenizerConfig(**config))
    torch.manual_seed(0)
    penalised = make_tokenizer(TokenizerConfig(**config, opacity_penalty=0.5))
    loss, metrics = plain.loss(frames)
    penalised_loss, penalised_metrics = penalised.loss(frames)
    assert 0 < metrics["opacity"] < 1 and torch.equal(metrics["opacity"], penalised_metrics["opacity"])
    assert penalised_loss.item() == pytest.approx(loss.item() + 0.5 * metrics["opacity"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="opacity_penalty=0.1 needs kind='cnn' with background='median'"):
        TokenizerConfig(kind="cnn", opacity_penalty=0.1)


@pytest.mark.parametrize("upsample", ["transposed", "pixel_shuffle"])
def test_opacity_floor_shows_the_exact_background_under_faint_paint_at_inference_only(upsample):
    frames = moving_square_frames()
    tok = median_background_tokenizer(upsample)
    tok.set_background(frames)
    background = frames.flatten(0, 1).median(dim=0).values
    last = tok.decoder[-2] if upsample == "pixel_shuffle" else tok.decoder[-1]
    opacity_logit = torch.arange(last.out_channels) // (last.out_channels // 4) == 3  # channels are colour-major
    z = torch.rand(3, 1, 4) * 2 - 1
    with torch.no_grad():
        last.weight[opacity_logit] = 0.0
        last.bias[opacity_logit] = -1.0  # opacity sigmoid(-1) = 0.27 everywhere: faint paint
        tok.eval()
        faint = tok.decode_observation(z)
        tok.set_opacity_floor(0.25)
        below = tok.decode_observation(z)
        assert torch.equal(below, tok.to_observation(tok.decode(z)))
        tok.set_opacity_floor(0.3)
        floored = tok.decode_observation(z)
        training_images, training_opacity = tok.train().reconstruct(frames[:, :1])
    assert not torch.equal(faint, background.expand_as(faint)) and torch.equal(below, faint)
    assert torch.equal(floored, background.expand_as(floored))
    torch.testing.assert_close(training_opacity, torch.full_like(training_opacity, torch.sigmoid(torch.tensor(-1.0)).item()))


def test_opacity_floor_needs_a_median_background_and_a_value_below_one():
    with pytest.raises(ValueError, match="opacity_floor=0.2 needs kind='cnn' with background='median'"):
        TokenizerConfig(kind="cnn", opacity_floor=0.2)
    with pytest.raises(ValueError, match=r"opacity_floor=1.0 .* in \[0, 1\)"):
        TokenizerConfig(kind="cnn", background="median", opacity_floor=1.0)
