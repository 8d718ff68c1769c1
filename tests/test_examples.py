"""Smoke test: every example runs end to end with tiny settings and writes what it says."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from imaginegym.data import EpisodeDataset
from imaginegym.training.checkpoint import load_checkpoint
from imaginegym.world_model import WorldModel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("imaginegym.envs.dmc") is None,
    reason="the examples collect from imaginegym/DMC-v0; envs/dmc.py has not landed yet",
)


def run_example(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_collect_episodes(tmp_path):
    out = run_example("collect_episodes.py", "--episodes", "2", "--steps", "10", "--out", str(tmp_path))
    assert len(EpisodeDataset(tmp_path / "data")) == 2
    assert iio.imread(tmp_path / "episode_0.gif").shape == (11, 64, 64, 3)
    assert "episode_0.gif" in out
    run_example("collect_episodes.py", "--episodes", "3", "--steps", "10", "--out", str(tmp_path))
    assert len(EpisodeDataset(tmp_path / "data")) == 3  # a re-run resumes


def test_demo(tmp_path, tiny_world_model_path):
    # `make demo` uses the bundled model; the tiny one (16x16 frames) keeps this fast
    out = run_example("demo.py", "--episodes", "2", "--steps", "10", "--out", str(tmp_path),
                      "--world-model", tiny_world_model_path)
    assert iio.imread(tmp_path / "real_vs_imagined.gif").shape == (11, 16, 32, 3)
    dataset = EpisodeDataset(tmp_path / "data")
    assert (len(dataset), dataset.task) == (2, "cartpole-swingup")
    assert iio.imread(tmp_path / "cartpole.gif").shape == (11, 64, 64, 3)
    assert "cartpole.gif" in out


def test_real_vs_imagined(tiny_world_model_path, tmp_path):
    # The tiny model's env_spec makes a 16x16 cartpole-swingup, so the real env matches it.
    out = run_example(
        "real_vs_imagined.py", "--world-model", tiny_world_model_path, "--steps", "4", "--context", "3",
        "--out", str(tmp_path / "side_by_side.gif"),
    )
    frames = iio.imread(tmp_path / "side_by_side.gif")
    assert frames.shape == (5, 16, 32, 3)  # the last context frame and 4 steps, real | imagined
    assert "side_by_side.gif" in out and "PSNR" in out


def test_train_world_model(tmp_path):
    out = run_example("train_world_model.py", "--out", str(tmp_path), "--episodes", "2", "--steps", "30", "--tokenizer-steps", "3",
                      "--dynamics-steps", "6", "--rollout-steps", "2", "--batch-size", "4", "--horizons", "1", "4", "--device", "cpu")
    assert "imagined_4_steps" in out and "copy_last_frame" in out and "rollout.gif" in out
    assert iio.imread(tmp_path / "rollout.gif").shape == (4, 64, 128, 3)  # real | imagined, 4 steps
    wm = WorldModel.load(tmp_path / "run" / "world_model.safetensors")
    assert wm.dynamics_config.mark_imagined
    assert load_checkpoint(tmp_path / "run" / "dynamics.pt")[1]["lengths"]["rollout_start"] == 4


BENCHMARKS = EXAMPLES.parent / "benchmarks"


def test_imagination_speed_benchmark_prints_ratios(tiny_world_model_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "imagination_speed.py"), "--world-model", tiny_world_model_path,
         "--num-envs", "1", "64", "--seconds", "0.2", "--real-workers", "1", "--threads", "1",
         "--denoise-steps", "2", "--rollout-steps", "30"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "2 denoising steps" in out and "latent@64 / best real" in out and "pixels@64 / best real" in out
    assert "one rollout of 30 imagined steps" in out and "KV cache" in out


def test_tokenizer_reconstruction_benchmark_prints_one_row_per_tokenizer(tiny_dataset, tiny_world_model_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "tokenizer_reconstruction.py"), "--data", tiny_dataset, "--train-data", tiny_dataset,
         "--tokenizers", tiny_world_model_path, "--every", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "identical to their predecessor" in lines[0] and "exact static" in result.stdout
    copy_last = next(line for line in lines if line.startswith("copy-last-frame"))
    assert "100.00" in copy_last  # the square stands still in some steps: copy-last is exact there
    assert any(line.startswith(tiny_world_model_path) for line in lines)


def test_rollout_grid_benchmark_writes_one_block_per_start(tiny_dataset, tiny_world_model_path, tmp_path):
    out = tmp_path / "grid.png"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "rollout_grid.py"), "--world-models", tiny_world_model_path, tiny_world_model_path,
         "--data", tiny_dataset, "--horizons", "1", "3", "--starts", "2", "--context", "4", "--scale", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    image = iio.imread(out)
    assert image.shape == (2 * 3 * 16 + 4, 2 * 16, 3)  # 2 starts x (real + 2 models) rows of 16 pixels, one gap


@pytest.mark.parametrize("obs", ["latent", "state"])
def test_train_in_imagination(tiny_world_model_path, tmp_path, obs):
    out = run_example("train_in_imagination.py", "--world-model", tiny_world_model_path, "--steps", "64", "--num-envs", "4",
                      "--horizon", "8", "--episodes", "1", "--out", str(tmp_path / "run"), "--device", "cpu", "--obs", obs)
    assert "real return" in out and "imagined" in out
    assert json.loads((tmp_path / "run" / "policy" / "policy.json").read_text())["obs_mode"] == obs
    assert (tmp_path / "run" / "policy" / "policy.json").is_file() and iio.imread(tmp_path / "run" / "eval.gif").shape[-2] == 32


def test_reliability_probe_runs_a_case_and_reports_it(tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "reliability_probe.py"), "--only", "dmc-action-left",
                             "--markdown", str(tmp_path / "r.md")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "clear error" in result.stdout and "| dmc-action-left" in (tmp_path / "r.md").read_text()


@pytest.mark.parametrize("obs", ["latent", "state"])
def test_agent_throughput_benchmark_prints_the_ratio(tiny_world_model_path, obs):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "agent_throughput.py"), "--world-model", tiny_world_model_path, "--steps", "64",
                             "--num-envs", "4", "--real-envs", "1", "--rollout-steps", "16", "--obs", obs],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imagined / real:" in result.stdout and "imagined (4 envs in one batch)" in result.stdout
    assert f"{obs} observations" in result.stdout


def test_in_context_darkroom(tmp_path):
    out = run_example("in_context_darkroom.py", "--model", "compressed-ad", "--num-tasks", "2", "--history-episodes", "3",
                      "--runs-per-task", "1", "--steps", "2", "--episodes", "2", "--tiny", "--out", str(tmp_path))
    assert "of the optimum" in out
    assert iio.imread(tmp_path / "learning_curve.png").ndim == 3
    assert (tmp_path / "run" / "agent" / "in_context_agent.json").is_file()


def test_imagined_darkroom(tmp_path):
    out = run_example("imagined_darkroom.py", "--train", "--num-tasks", "2", "--history-episodes", "3", "--steps", "4", "--tiny",
                      "--episodes", "1", "--out", str(tmp_path))
    assert "imagined / real" in out
    assert iio.imread(tmp_path / "learning_curves.png").ndim == 3
    assert (tmp_path / "world_model" / "world_model.safetensors").is_file()


def test_latent_state_probe_prints_r2_per_state_variable(tiny_world_model_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "latent_state_probe.py"), "--world-model", tiny_world_model_path,
                             "--episodes", "2", "--steps", "20", "--mlp-steps", "5", "--obs", "latent", "state"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(f"| {tiny_world_model_path}")]
    assert [row.split("|")[2:4] for row in rows] == [[" latent ", " ridge "], [" latent ", " MLP "], [" state ", " ridge "], [" state ", " MLP "]]
    assert all(len(row.split("|")) == 10 for row in rows)


def test_closed_loop_fidelity(tiny_world_model_path, tmp_path):
    out = run_example("closed_loop_fidelity.py", "--world-model", tiny_world_model_path, "--imagined-models", tiny_world_model_path,
                      "--iterations", "3", "--episodes", "1", "--epochs", "1", "--eval-episodes", "1", "--out", str(tmp_path / "run"))
    assert out.count("the student's real return") == 2 and "gap" in out
    assert (tmp_path / "run" / "distill" / "policy" / "policy.json").is_file() and (tmp_path / "run" / "eval_1.json").is_file()
    assert iio.imread(tmp_path / "run" / "eval.gif").shape[-2] == 32


def tiny_policy(world_model_path: str, out: Path) -> Path:
    """A PPO policy trained 16 steps in the tiny model's imagination (its policy/ directory)."""
    from imaginegym.agents.sb3 import AgentConfig, train_agent

    train_agent(AgentConfig(env=f"imagined:{world_model_path}", steps=16, num_envs=2, horizon=8, ppo_rollout_steps=8,
                            ppo_batch_size=16, ppo_epochs=1, net_arch=(16,), device="cpu"), out, progress=False)
    return out / "policy"


def test_policy_replay_benchmark_compares_open_and_closed_loop_with_reality(tiny_world_model_path, tmp_path):
    tiny_policy(tiny_world_model_path, tmp_path / "run")
    result = subprocess.run([sys.executable, str(BENCHMARKS / "policy_replay.py"), "--policy", str(tmp_path / "run" / "policy"),
                             "--episodes", "1", "--starts", "0", "5", "600", "--horizon", "4", "--out", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| 0 |" in result.stdout and "| 5 |" in result.stdout and "| 600 |" not in result.stdout  # past the episode's end: skipped
    starts = json.loads((tmp_path / "r.json").read_text())["starts"]
    assert [len(starts["5"][k]) for k in ("real", "open_loop", "closed_loop")] == [1, 1, 1] and starts["600"]["real"] == []


def test_policy_replay_open_loop_only_takes_a_model_with_another_tokenizer(tiny_world_model_path, tmp_path):
    from conftest import make_tiny_world_model

    tiny_policy(tiny_world_model_path, tmp_path / "run")
    other = str(make_tiny_world_model(seed=1).save(tmp_path / "other.safetensors"))  # other tokenizer weights: other latents
    command = [sys.executable, str(BENCHMARKS / "policy_replay.py"), "--policy", str(tmp_path / "run" / "policy"), "--world-model", other,
               "--episodes", "1", "--starts", "0", "5", "--horizon", "4", "--out", str(tmp_path / "r.json")]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "other tokenizer weights" in refused.stderr  # closed loop would feed the policy foreign latents
    result = subprocess.run(command + ["--open-loop-only"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| 5 |" in result.stdout and "closed loop" not in result.stdout
    starts = json.loads((tmp_path / "r.json").read_text())["starts"]
    assert [len(starts["5"][k]) for k in ("real", "open_loop", "closed_loop")] == [1, 1, 0]


def test_mbrl_seeds_benchmark_averages_the_iterations_every_seed_finished(tmp_path):
    for seed, returns in enumerate([[100.0, 300.0, 500.0], [200.0, 100.0]]):  # seed 1 has finished one iteration fewer
        curve = [{"iteration": i, "real_steps": 5000 * (i + 1), "eval_return_mean": r, "wall_s": 60.0 * (i + 1)} for i, r in enumerate(returns)]
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "loop.json").write_text(json.dumps({"curve": curve}))
    result = subprocess.run([sys.executable, str(BENCHMARKS / "mbrl_seeds.py"), str(tmp_path / "seed0"), str(tmp_path / "seed1"),
                             "--out", str(tmp_path / "seeds.png")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 0 ") or line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert rows == ["| 0 | 10,000 | 100.0 | 200.0 | 150.0 ± 50.0 | 1.0 / 1.0 |", "| 1 | 20,000 | 300.0 | 100.0 | 200.0 ± 100.0 | 2.0 / 2.0 |"]
    assert iio.imread(tmp_path / "seeds.png").ndim == 3
    missing = subprocess.run([sys.executable, str(BENCHMARKS / "mbrl_seeds.py"), str(tmp_path / "nothing")], capture_output=True, text=True)
    assert missing.returncode != 0 and "no loop.json" in missing.stderr


def test_sample_spread_benchmark_measures_how_imagined_continuations_differ(tiny_world_model_path, tmp_path):
    tiny_policy(tiny_world_model_path, tmp_path / "run")
    command = [sys.executable, str(BENCHMARKS / "sample_spread.py"), "--world-model", tiny_world_model_path, "--policies",
               str(tmp_path / "run" / "policy"), "--episodes", "1", "--starts", "2", "600", "--horizon", "3", "--samples", "3",
               "--out", str(tmp_path / "s.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    spreads = json.loads((tmp_path / "s.json").read_text())["policies"][str(tmp_path / "run" / "policy")]
    assert list(spreads) == ["2"]  # start 600 lies past the episode's end: skipped
    assert all(v > 0 for v in spreads["2"])  # other diffusion noise, other continuations
    one = subprocess.run(command[:-4] + ["--samples", "1"], capture_output=True, text=True, timeout=300)
    assert one.returncode != 0 and "--samples 1 must be >= 2" in one.stderr
