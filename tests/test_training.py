"""Training: the CLI end to end on a tiny dataset, exact resume, DDP replicas, evaluation."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gymnasium import spaces

from imaginegym.cli import main
from imaginegym.data import DatasetMeta, Episode, EpisodeDataset, write_episode
from imaginegym.models.tokenizer import TokenizerConfig
from imaginegym.training import tokenizer_trainer
from imaginegym.training.checkpoint import load_checkpoint, save_checkpoint
from imaginegym.training.loop import OptimConfig
from imaginegym.training.pipeline import load_tokenizer
from imaginegym.imagination import ImaginationEnv
from imaginegym.world_model import WorldModel

TINY_FLAGS = [
    "--tokenizer-image-size", "16", "--tokenizer-channels", "8", "8", "--tokenizer-latent-channels", "4",
    "--tokenizer-token-patch", "2", "--tokenizer-batch-size", "4", "--tokenizer-warmup-steps", "2",
    "--dynamics-width", "32", "--dynamics-depth", "1", "--dynamics-heads", "2", "--dynamics-context-length", "4",
    "--dynamics-k-max", "8", "--dynamics-batch-size", "4", "--dynamics-warmup-steps", "2", "--device", "cpu",
]


def test_train_world_model_cli_then_load_and_evaluate(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(run),
                 "--tokenizer-steps", "6", "--dynamics-steps", "6", *TINY_FLAGS]) == 0
    assert {"tokenizer.pt", "dynamics.pt", "latents.safetensors", "world_model.safetensors"} <= {p.name for p in run.iterdir()}
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    wm = WorldModel.load(run)
    assert wm.env_spec.task == "cartpole-swingup" and wm.start_frames.shape[1:] == (3, 16, 16, 3)
    assert main(["eval", "world-model", str(run), "--data", tiny_dataset, "--horizons", "1", "2", "3", "4", "--context", "4",
                 "--denoise-steps", "4", "8", "--per-episode", "2", "--context-noise", "0.05", "--device", "cpu"]) == 0
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["context_noise"] == 0.05
    assert set(results["models"]) == {"imagined_4_steps", "imagined_8_steps", "copy_last_frame", "mean_frame"}
    assert results["rollouts"] == 6 and (run / "eval" / "rollouts.gif").stat().st_size > 0
    imagined = results["models"]["imagined_4_steps"]
    per_step = [imagined["per_horizon"][h]["reward_error"] for h in ("1", "2", "3", "4")]
    assert sum(per_step) / 4 == pytest.approx(imagined["reward_mae"])  # every step is a horizon here
    assert "reward_error" not in results["models"]["copy_last_frame"]["per_horizon"]["1"]
    copy_last = results["models"]["copy_last_frame"]["per_horizon"]["1"]
    assert copy_last["psnr_changed"] <= copy_last["psnr"] and 0 < results["changed_share"]["1"] <= 1
    assert "copy_last_frame" in capsys.readouterr().out
    assert results["opacity_floor"] == 0.0  # the tiny model paints over a learned background: no floor
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "world-model", str(run), "--data", tiny_dataset, "--opacity-floor", "0.2", "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "imaginegym eval world-model: error: opacity_floor=0.2 needs kind='cnn' with background='median'" in capsys.readouterr().err


def cli_error(capsys, argv: list[str]) -> str:
    """The one-line error the CLI prints for ``argv`` (exit status 2), without its "imaginegym ...: error:" prefix."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in err and err.startswith("imaginegym ")
    return err.split(": error: ", 1)[1]


def record_rollout_batches(monkeypatch) -> list[dict]:
    """The batches of rollout windows the dynamics trainer draws from now on, appended as they come."""
    from imaginegym.training import dynamics_trainer

    seen, real = [], dynamics_trainer.rollout_forcing_loss
    monkeypatch.setattr(dynamics_trainer, "rollout_forcing_loss", lambda model, batch, config: seen.append(batch) or real(model, batch, config))
    return seen


def test_rollout_batches_come_every_nth_step_with_real_context_then_frames_to_imagine(tiny_dataset, tmp_path, monkeypatch, capsys):
    seen = record_rollout_batches(monkeypatch)
    run = tmp_path / "run"
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(run), "--tokenizer-steps", "2", "--dynamics-steps", "6",
                 "--dynamics-rollout-every", "2", "--dynamics-rollout-start", "2", "--dynamics-rollout-length", "5",
                 "--dynamics-rollout-denoise-steps", "2", *TINY_FLAGS]) == 0
    assert len(seen) == 2  # steps 4 and 6 (the second step, index 1, comes before rollout_start)
    for batch in seen:
        assert int(batch["imagine_from"]) == 4 and batch["latents"].shape[:2] == (2, 4 + 5)  # context_length + rollout_length
        assert batch["action_mask"][:, 4:].all()  # no episode start among the frames to imagine
    assert load_checkpoint(run / "dynamics.pt")[1]["lengths"]["rollout_every"] == 2
    seen.clear()
    assert main(["train", "dynamics", "--data", tiny_dataset, "--out", str(run), "--dynamics-steps", "30",
                 "--dynamics-rollout-every", "2", "--dynamics-rollout-length", "5", "--dynamics-rollout-min-length", "2",
                 "--dynamics-rollout-denoise-steps", "1", *TINY_FLAGS[TINY_FLAGS.index("--dynamics-width"):]]) == 0
    drawn = {batch["latents"].shape[1] - 4 for batch in seen}  # resumed at step 6: 12 rollout batches
    assert drawn <= {2, 3, 4, 5} and len(drawn) > 1
    assert "rollout_min_length=6" in cli_error(capsys, ["train", "dynamics", "--data", tiny_dataset, "--out", str(run), "--dynamics-steps", "32",
                                                          "--dynamics-rollout-every", "2", "--dynamics-rollout-length", "5",
                                                          "--dynamics-rollout-min-length", "6", *TINY_FLAGS[TINY_FLAGS.index("--dynamics-width"):]])
    assert "rollout_length=40" in cli_error(capsys, ["train", "world-model", "--data", tiny_dataset, "--out", str(tmp_path / "other"),
                                                     "--tokenizer-steps", "2", "--dynamics-steps", "8", "--dynamics-rollout-every", "2",
                                                     "--dynamics-rollout-length", "40", *TINY_FLAGS])
    assert not (tmp_path / "other" / "tokenizer.pt").exists()  # found before the tokenizer trained


def test_rollout_batches_from_resets_imagine_from_a_short_context(tiny_dataset, tmp_path, monkeypatch, capsys):
    """Imagination from a reset sees one real frame: a share of rollout batches begin at episode starts and
    draw 1..context_length real frames; the others keep context_length real frames from anywhere
    (one frame mid-episode would hide the velocity)."""
    seen = record_rollout_batches(monkeypatch)
    run = tmp_path / "run"
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(run), "--tokenizer-steps", "2", "--dynamics-steps", "40",
                 "--dynamics-rollout-every", "2", "--dynamics-rollout-length", "3", "--dynamics-rollout-denoise-steps", "1",
                 "--dynamics-rollout-min-context", "1", "--dynamics-rollout-episode-start-fraction", "0.5", *TINY_FLAGS]) == 0
    assert len(seen) == 20
    from_resets = [batch for batch in seen if not batch["action_mask"][:, 0].any()]
    anywhere = [batch for batch in seen if batch["action_mask"][:, 0].any()]
    assert from_resets and anywhere
    for batch in from_resets:  # every window of the batch begins at its episode's first frame
        assert batch["latents"].shape[1] == int(batch["imagine_from"]) + 3 and batch["action_mask"][:, 1:].all()
    assert len({int(batch["imagine_from"]) for batch in from_resets} - {4}) >= 1 and all(1 <= int(b["imagine_from"]) <= 4 for b in from_resets)
    assert all(int(batch["imagine_from"]) == 4 and batch["action_mask"][:, 4:].all() for batch in anywhere)
    assert load_checkpoint(run / "dynamics.pt")[1]["lengths"]["rollout_min_context"] == 1
    assert "rollout_episode_start_fraction=1.5" in cli_error(capsys, [
        "train", "dynamics", "--data", tiny_dataset, "--out", str(run), "--dynamics-steps", "48", "--dynamics-rollout-every", "2",
        "--dynamics-rollout-episode-start-fraction", "1.5", *TINY_FLAGS[TINY_FLAGS.index("--dynamics-width"):]])


def test_mark_imagined_changes_nothing_until_rollout_windows_come(tiny_dataset, tmp_path):
    """The flag is zero and gets no gradient from real windows, so a run can add rollout training later
    (``--dynamics-rollout-start``) and its first part equals a run without the flag."""
    import shutil

    plain, flagged = tmp_path / "plain", tmp_path / "flagged"
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(plain), "--tokenizer-steps", "2", "--dynamics-steps", "5",
                 *TINY_FLAGS]) == 0
    flagged.mkdir()
    for name in ("tokenizer.pt", "latents.safetensors"):
        shutil.copy(plain / name, flagged / name)
    assert main(["train", "dynamics", "--data", tiny_dataset, "--out", str(flagged), "--dynamics-steps", "5", "--dynamics-mark-imagined",
                 "--dynamics-rollout-every", "2", "--dynamics-rollout-start", "5", *TINY_FLAGS[TINY_FLAGS.index("--dynamics-width"):]]) == 0
    a, b = load_checkpoint(plain / "dynamics.pt")[0]["model"], load_checkpoint(flagged / "dynamics.pt")[0]["model"]
    assert set(b) - set(a) == {"imagined_embed"} and not b["imagined_embed"].any()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_training_resumes_exactly(tiny_dataset, tmp_path, monkeypatch):
    config = TokenizerConfig(image_size=16, channels=(8, 8), latent_channels=4, token_patch=2)
    optim = OptimConfig(steps=6, batch_size=4, warmup_steps=2, checkpoint_every=3)
    straight = tokenizer_trainer.train_tokenizer(tiny_dataset, tmp_path / "a", config, optim, "cpu")

    calls = {"n": 0}
    real = tokenizer_trainer.sample_frames

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # after the checkpoint at step 3 (one call is the image preview)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tokenizer_trainer, "sample_frames", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tokenizer_trainer.train_tokenizer(tiny_dataset, tmp_path / "b", config, optim, "cpu")
    monkeypatch.setattr(tokenizer_trainer, "sample_frames", real)
    assert load_checkpoint(tmp_path / "b" / "tokenizer.pt")[0]["step"] == 3
    resumed = tokenizer_trainer.train_tokenizer(tiny_dataset, tmp_path / "b", config, optim, "cpu")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_tokenizer_trains_the_same_from_memory_and_from_disk(tiny_dataset, tmp_path):
    config = TokenizerConfig(image_size=16, channels=(8, 8), latent_channels=4, token_patch=2)
    optim = OptimConfig(steps=4, batch_size=4, warmup_steps=2)
    in_memory = tokenizer_trainer.train_tokenizer(tiny_dataset, tmp_path / "a", config, optim, "cpu")
    from_disk = tokenizer_trainer.train_tokenizer(tiny_dataset, tmp_path / "b", config, optim, "cpu", frames_in_memory_bytes=0)
    for a, b in zip(in_memory.state_dict().values(), from_disk.state_dict().values()):
        assert torch.equal(a, b)


def test_median_background_comes_from_the_training_frames_and_survives_the_checkpoint(tiny_dataset, tmp_path):
    from imaginegym.models.tokenizer import float_to_pixels
    from imaginegym.training.pipeline import load_tokenizer

    config = TokenizerConfig(image_size=16, channels=(8, 8), latent_channels=4, token_patch=2, background="median")
    trained = tokenizer_trainer.train_tokenizer(tiny_dataset, tmp_path / "a", config, OptimConfig(steps=2, batch_size=4, warmup_steps=1), "cpu")
    dataset = EpisodeDataset(tiny_dataset)
    frames = torch.cat([torch.from_numpy(dataset.read(i, "frames")) for i in range(len(dataset))])
    assert torch.equal(float_to_pixels(trained.background), frames.median(dim=0).values)  # the square's track is black in most frames
    loaded = load_tokenizer(tmp_path / "a" / "tokenizer.pt")
    assert loaded.config == config
    assert torch.equal(loaded.background, trained.background)


def test_checkpoints_load_without_unpickling_and_refuse_junk(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2), "step": 3}, {"name": "x"})
    state, config = load_checkpoint(path)
    assert state["step"] == 3 and config == {"name": "x"}
    (tmp_path / "junk.pt").write_text("hello")
    with pytest.raises(ValueError, match="not an imaginegym training checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_torchrun_ddp_two_processes_keep_replicas_identical(tiny_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "imaginegym.cli", "train", "tokenizer", "--data", tiny_dataset, "--out", str(tmp_path / "ddp"),
           "--tokenizer-steps", "4", "--tokenizer-checkpoint-every", "2", *TINY_FLAGS[:13], "--device", "cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replicas identical" in result.stdout + result.stderr
    assert load_checkpoint(tmp_path / "ddp" / "tokenizer.pt")[0]["step"] == 4
    # the dynamics under DDP, rollout windows and the imagined flag included (a parameter that some
    # batches leave out of the graph would stop DDP at the next step)
    cmd = [*cmd[:cmd.index("tokenizer")], "dynamics", "--data", tiny_dataset, "--out", str(tmp_path / "ddp"), "--dynamics-steps", "4",
           "--dynamics-checkpoint-every", "2", "--dynamics-mark-imagined", "--dynamics-rollout-every", "2", "--dynamics-rollout-length", "3",
           "--dynamics-rollout-denoise-steps", "2", *TINY_FLAGS[TINY_FLAGS.index("--dynamics-width"):]]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replicas identical" in result.stdout + result.stderr
    assert load_checkpoint(tmp_path / "ddp" / "dynamics.pt")[0]["step"] == 4


def test_flag_help_comes_from_the_config_field_comments(capsys):
    with pytest.raises(SystemExit):
        main(["train", "world-model", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--dynamics-batch-size BATCH_SIZE per process: under torchrun the global batch is nproc times this (default: 32)" in help_text
    assert "--dynamics-rollout-every ROLLOUT_EVERY every n-th batch holds rollout windows (0: never)" in help_text
    assert "--tokenizer-kind KIND cnn | transformer | mlp | embedding (default: cnn)" in help_text
    assert "--tokenizer-background BACKGROUND cnn: \"learned\" adds a trained image under the decoder's output;" in help_text  # comment above
    assert help_text.count("(default: 32) (default: 32)") == 0


def test_bad_settings_fail_before_any_training_with_a_one_line_error(tiny_dataset, tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["train", "world-model", "--data", tiny_dataset, "--out", out, *TINY_FLAGS]
    cases = [
        (["--dynamics-heads", "3"], "width=32 with heads=3"),
        (["--tokenizer-steps", "0"], "steps=0 must be an integer >= 1"),
        (["--dynamics-steps", "-5"], "steps=-5 must be an integer >= 1"),
        (["--dynamics-context-length", "99"], "context_length=99 frames exceeds the longest episode"),
        (["--tokenizer-image-size", "32", "--tokenizer-channels", "8", "8", "8"], "16x16 frames but the tokenizer's image_size is 32"),
        (["--device", "cuda:9"] if not torch.cuda.is_available() else ["--device", "tpu"], "device="),
    ]
    for flags, message in cases:
        assert message in cli_error(capsys, [*base, *flags]), flags
        assert not (tmp_path / "run" / "tokenizer.pt").exists()
    missing = str(tmp_path / "missing")
    assert "no dataset at" in cli_error(capsys, ["train", "world-model", "--data", missing, "--out", out, *TINY_FLAGS])
    assert "no dataset at" in cli_error(capsys, ["train", "dynamics", "--data", missing, "--out", out, *TINY_FLAGS[TINY_FLAGS.index("--dynamics-width"):]])
    assert "tokenizer.pt does not exist" in cli_error(capsys, ["train", "dynamics", "--data", tiny_dataset, "--out", out,
                                                               *TINY_FLAGS[TINY_FLAGS.index("--dynamics-width"):]])


def test_eval_refuses_zero_counts_and_names_a_missing_dataset(tiny_world_model_path, tiny_dataset, tmp_path, capsys):
    for flag in ("--horizons", "--context", "--per-episode", "--denoise-steps"):
        for value in ("0", "-1"):
            capsys.readouterr()
            with pytest.raises(SystemExit):
                main(["eval", "world-model", tiny_world_model_path, "--data", tiny_dataset, flag, value])
            assert f"expected an integer >= 1, got '{value}'" in capsys.readouterr().err
    assert "no dataset at" in cli_error(capsys, ["eval", "world-model", tiny_world_model_path, "--data", str(tmp_path / "nope"),
                                                 "--train-data", tiny_dataset, "--device", "cpu"])


def test_a_run_directory_refuses_another_dataset_unless_restarted(tiny_dataset, tmp_path, capsys):
    from conftest import write_tiny_dataset

    run = tmp_path / "run"
    flags = ["--tokenizer-steps", "2", "--dynamics-steps", "2", *TINY_FLAGS]
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(run), *flags]) == 0
    before = (run / "world_model.safetensors").read_bytes()
    other = write_tiny_dataset(tmp_path / "other-data", episodes=2, seed=5)
    error = cli_error(capsys, ["train", "world-model", "--data", other, "--out", str(run), *flags])
    assert f"holds a run on the dataset {tiny_dataset}" in error and f"not on {other}" in error and "--restart" in error
    assert (run / "world_model.safetensors").read_bytes() == before  # the old model is not overwritten
    assert main(["train", "world-model", "--data", other, "--out", str(run), "--restart", *flags]) == 0
    assert json.loads((run / "run.json").read_text())["dataset"]["path"] == str(Path(other).resolve())
    assert load_checkpoint(run / "tokenizer.pt")[1]["data"] == other


def test_latents_follow_a_grown_dataset_and_a_tokenizer_that_trained_on(tiny_dataset, tmp_path, capsys):
    from conftest import write_tiny_dataset
    from imaginegym.training.latents import LatentEpisodes

    run = tmp_path / "run"
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(run), "--tokenizer-steps", "2", "--dynamics-steps", "2", *TINY_FLAGS]) == 0
    first = LatentEpisodes(run / "latents.safetensors")
    assert len(first) == 3
    grown = write_tiny_dataset(tmp_path / "grown", episodes=5)  # the same 3 episodes, then 2 more
    for name in ("episode_000003.h5", "episode_000004.h5"):
        shutil.copy(Path(grown) / name, Path(tiny_dataset) / name)
    # More tokenizer steps but no more dynamics steps: the dynamics would sit in the old tokenizer's latent space.
    error = cli_error(capsys, ["train", "world-model", "--data", tiny_dataset, "--out", str(run), "--tokenizer-steps", "4",
                               "--dynamics-steps", "2", *TINY_FLAGS])
    assert "dynamics.pt was trained on the latents of an earlier tokenizer" in error
    latents = LatentEpisodes(run / "latents.safetensors")
    assert len(latents) == 5 and latents.key != first.key  # encoded again: 5 episodes, by the new tokenizer
    tokenizer = load_tokenizer(run / "tokenizer.pt").eval()
    with torch.no_grad():
        expected = tokenizer.encode(torch.from_numpy(EpisodeDataset(tiny_dataset).read(4, "frames"))).half().float().numpy()
    np.testing.assert_array_equal(latents.read(4, "latents"), expected)  # the current tokenizer's latents
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(run), "--tokenizer-steps", "4", "--dynamics-steps", "4", *TINY_FLAGS]) == 0
    assert load_checkpoint(run / "dynamics.pt")[1]["latents"] == latents.key  # trained on the new latents, then exported


def test_a_full_disk_while_saving_a_checkpoint_says_so_and_keeps_the_old_one(small_disk):
    disk, preexec_fn = small_disk
    code = (
        "import sys, torch\nfrom pathlib import Path\nfrom imaginegym.training.checkpoint import load_checkpoint, save_checkpoint\n"
        "path = Path(sys.argv[1]) / 'dynamics.pt'\n"
        "save_checkpoint(path, {'step': 1, 'w': torch.ones(4)}, {'run': 1})\n"
        "try:\n    save_checkpoint(path, {'step': 2, 'w': torch.ones(1 << 20)}, {'run': 1})\n"
        "except OSError as error:\n    print(error)\n"
        "print(load_checkpoint(path)[0]['step'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(disk)], capture_output=True, text=True, preexec_fn=preexec_fn, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    message, step = result.stdout.strip().splitlines()
    assert f"could not write {disk / 'dynamics.pt'}: " in message and message.endswith("the previous dynamics.pt is intact")
    assert "no space left on device" in message or "file too large" in message
    assert step == "1"


def test_damaged_checkpoints_files_as_out_and_foreign_eval_data_get_one_line_errors(tiny_dataset, tmp_path, capsys, monkeypatch):
    from conftest import write_tiny_dataset

    run = tmp_path / "run"
    flags = ["--tokenizer-steps", "2", "--dynamics-steps", "2", *TINY_FLAGS]
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(run), *flags]) == 0
    (tmp_path / "notes.txt").write_text("keep me")
    assert "--out " + str(tmp_path / "notes.txt") + " is a file" in cli_error(capsys, ["train", "world-model", "--data", tiny_dataset,
                                                                                       "--out", str(tmp_path / "notes.txt"), *flags])
    (run / "dynamics.pt").write_bytes(b"junk")
    error = cli_error(capsys, ["train", "world-model", "--data", tiny_dataset, "--out", str(run), *flags])
    assert "dynamics.pt is not an imaginegym training checkpoint" in error and "Delete it to train that stage again" in error
    other = write_tiny_dataset(tmp_path / "other", episodes=1)
    big = DatasetMeta(env_id="imaginegym/DMC-v0", task="reacher-easy", observation_space=spaces.Box(0, 255, (24, 24, 3), np.uint8),
                      action_space=spaces.Box(-1, 1, (2,), np.float32), action_repeat=2, size=24)
    write_episode(tmp_path / "reacher", 0, Episode(np.zeros((21, 24, 24, 3), np.uint8), np.zeros((20, 2), np.float32), np.zeros(20),
                                                   np.zeros(20, bool), np.zeros(20, bool)), big, seed=0, policy="random")
    model = str(tmp_path / "model.safetensors")
    shutil.copy(run / "world_model.safetensors", model)
    error = cli_error(capsys, ["eval", "world-model", model, "--data", str(tmp_path / "reacher"), "--train-data", other, "--device", "cpu"])
    assert "holds reacher-easy episodes" in error and "give held-out episodes of the model's own env" in error
    assert "give --train-data" in cli_error(capsys, ["eval", "world-model", model, "--data", other, "--device", "cpu"])


def test_ctrl_c_during_training_says_how_to_resume(tiny_dataset, tmp_path, capsys, monkeypatch):
    from imaginegym.training import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train_tokenizer", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "world-model", "--data", tiny_dataset, "--out", str(tmp_path / "run"), *TINY_FLAGS])
    assert exit_info.value.code == 130
    assert "interrupted; what finished is kept: run the same command again to resume" in capsys.readouterr().err


def test_init_from_starts_at_the_models_weights_and_freeze_tokenizer_keeps_its_latents(tiny_dataset, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(first),
                 "--tokenizer-steps", "6", "--dynamics-steps", "6", *TINY_FLAGS]) == 0
    base = WorldModel.load(first)
    with pytest.raises(SystemExit):
        main(["train", "world-model", "--data", tiny_dataset, "--out", str(tmp_path / "x"), "--freeze-tokenizer", *TINY_FLAGS])
    assert "--freeze-tokenizer keeps the tokenizer of --init-from MODEL: give --init-from too" in capsys.readouterr().err
    second = tmp_path / "second"
    # the architecture comes from the model: these flags' other dynamics width is not used
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(second), "--init-from", str(first),
                 "--freeze-tokenizer", "--dynamics-steps", "1", "--dynamics-lr", "1e-9", "--dynamics-warmup-steps", "1",
                 *[f if f != "32" else "48" for f in TINY_FLAGS]]) == 0
    continued = WorldModel.load(second)
    assert continued.dynamics_config.width == 32
    for name, tensor in base.tokenizer.state_dict().items():  # frozen: the very same tokenizer
        assert torch.equal(tensor, continued.tokenizer.state_dict()[name]), name
    base_dynamics = base.dynamics.state_dict()
    for name, tensor in continued.dynamics.state_dict().items():  # one step at lr 1e-9: the model's weights, not random ones
        torch.testing.assert_close(tensor, base_dynamics[name], atol=1e-5, rtol=0, msg=name)
    fresh = tmp_path / "fresh"
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(fresh), "--tokenizer-steps", "1",
                 "--dynamics-steps", "1", "--dynamics-lr", "1e-9", "--dynamics-warmup-steps", "1", "--dynamics-seed", "5",
                 *TINY_FLAGS]) == 0
    random_start = WorldModel.load(fresh).dynamics.state_dict()
    assert any(not torch.allclose(random_start[n], base_dynamics[n], atol=1e-3) for n in base_dynamics if base_dynamics[n].is_floating_point())
    assert load_checkpoint(second / "dynamics.pt")[0]["step"] == 1


def test_init_from_with_a_longer_context_keeps_the_weights_and_attends_further(tiny_dataset, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(first),
                 "--tokenizer-steps", "4", "--dynamics-steps", "4", *TINY_FLAGS]) == 0
    with pytest.raises(SystemExit):
        main(["train", "world-model", "--data", tiny_dataset, "--out", str(tmp_path / "x"), "--context-length", "6", *TINY_FLAGS])
    assert "--context-length 6 changes the context of --init-from MODEL: give --init-from too" in capsys.readouterr().err
    longer = tmp_path / "longer"
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(longer), "--init-from", str(first), "--context-length", "6",
                 "--freeze-tokenizer", "--dynamics-steps", "1", "--dynamics-lr", "1e-9", "--dynamics-warmup-steps", "1", *TINY_FLAGS]) == 0
    base, continued = WorldModel.load(first), WorldModel.load(longer)
    assert base.dynamics_config.context_length == 4 and continued.dynamics_config.context_length == 6
    base_dynamics = base.dynamics.state_dict()
    for name, tensor in continued.dynamics.state_dict().items():
        torch.testing.assert_close(tensor, base_dynamics[name], atol=1e-5, rtol=0, msg=name)
    env = ImaginationEnv(continued, context_length=5)  # 5 past frames: more than the first model could attend to
    env.reset(seed=0)
    assert env.step(env.action_space.sample())[0].shape == env.observation_space.shape


def test_a_grown_dataset_encodes_only_its_new_episodes_while_the_tokenizer_is_unchanged(tiny_dataset, tmp_path):
    from conftest import write_tiny_dataset
    from imaginegym.training.latents import LatentEpisodes, encode_dataset, latents_key

    run = tmp_path / "run"
    assert main(["train", "world-model", "--data", tiny_dataset, "--out", str(run), "--tokenizer-steps", "2", "--dynamics-steps", "2", *TINY_FLAGS]) == 0
    tokenizer = load_tokenizer(run / "tokenizer.pt").eval()
    grown = write_tiny_dataset(tmp_path / "grown", episodes=5)  # the same 3 episodes, then 2 more
    for name in ("episode_000003.h5", "episode_000004.h5"):
        shutil.copy(Path(grown) / name, Path(tiny_dataset) / name)
    dataset = EpisodeDataset(tiny_dataset)
    encoded = []
    encode = tokenizer.encode
    tokenizer.encode = lambda frames: encoded.append(len(frames)) or encode(frames)
    path = run / "latents.safetensors"
    encode_dataset(tokenizer, dataset, path, torch.device("cpu"), latents_key(dataset, tokenizer))
    assert encoded == [31, 31]  # episodes 3 and 4 only
    incremental = LatentEpisodes(path)
    encode_dataset(tokenizer, dataset, tmp_path / "all.safetensors", torch.device("cpu"), latents_key(dataset, tokenizer))
    assert len(encoded) == 7  # a new file: every episode
    full = LatentEpisodes(tmp_path / "all.safetensors")
    for i in range(5):
        for key in ("latents", "actions", "rewards", "terminated"):
            np.testing.assert_array_equal(incremental.read(i, key), full.read(i, key))
    with torch.no_grad():
        next(tokenizer.parameters()).add_(1.0)  # another tokenizer: nothing is reused
    encoded.clear()
    encode_dataset(tokenizer, dataset, path, torch.device("cpu"), latents_key(dataset, tokenizer))
    assert len(encoded) == 5
