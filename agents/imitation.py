"""DAgger: distil a scripted expert that reads the simulator's state into a policy on a world model's observations.

    imaginegym agent distill --world-model cartpole-swingup --expert swingup-expert --out runs/expert-latent
    imaginegym agent eval --policy runs/expert-latent/policy --episodes 10    # real vs imagined: the model's closed-loop fidelity

    from imaginegym.agents.imitation import DistillConfig, distill_expert
    policy = distill_expert(DistillConfig(world_model="cartpole-swingup"), "runs/expert-latent")

The student sees what an agent trained in imagination sees (``obs`` of ``frame_stack`` frames or latents,
`imaginegym.imagination.real_twin`); the expert (`imaginegym.data.policies`, one that ``needs_state``) labels
every state the student visits with its own noiseless action (Ross et al. 2011, DAgger). Iteration 0 is the
expert acting with exploration noise, iteration 1 mixes expert and student, later ones are the student
alone; after each, the student is refitted on all labels so far. The student that scored best over a whole
iteration (student-only iterations) is written to ``OUT/policy`` as an SB3 PPO policy (`AgentPolicy`), so
``imaginegym agent eval`` reports its real return beside its imagined twin's: where a competent policy goes,
the gap measures the world model in closed loop (the open-loop figures of ``imaginegym eval world-model``
drift apart on an unstable pole whatever the model). The policy also collects data (`AgentPolicy.source`)
and can start PPO.

Resumable: the labels (``labels.npz``) and each iteration's result (``distill.json``) are written
atomically after every iteration; a rerun continues from the last finished one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from tqdm.auto import tqdm

from imaginegym.data.atomic import atomic_write, write_json_atomic
from imaginegym.data.policies import POLICIES, needs_state
from imaginegym.data.spaces import space_to_json
from imaginegym.validation import check_count

STATE_FILE = "distill.json"
LABELS_FILE = "labels.npz"


@dataclass(frozen=True)
class DistillConfig:
    """One DAgger run; each field is one `imaginegym agent distill` flag."""

    world_model: str = "cartpole-swingup"  # the student observes this model's latents (or frames), as in its imagined env
    expert: str = "swingup-expert"  # a scripted policy that reads the simulator's state (imaginegym.data.policies)
    obs: str = "latent"  # latent | pixels, as `imaginegym agent train --obs`
    frame_stack: int = 4  # the student sees the last N frames (or latents)
    iterations: int = 16  # DAgger iterations (0: the expert with noise, 1: half expert, then the student alone)
    episodes: int = 6  # real episodes per iteration
    expert_noise: float = 0.3  # std of the Gaussian noise on the expert's actions in iteration 0 (states off its clean path)
    epochs: int = 30  # passes over all labels at each refit
    batch_size: int = 256
    lr: float = 1e-3  # Adam learning rate of each refit
    net_arch: tuple[int, ...] = (256, 256)  # the student's actor (and the untrained critic PPO would start from)
    activation: str = "ELU"  # Tanh | ReLU | ELU
    policy_std: float = 0.2  # the Gaussian std of the saved PPO policy (sampling collection, a PPO start)
    seed: int = 0  # episode seeds (seed * 1_000_003 + 1000 * iteration + episode), noise and initial weights
    threads: int = 1  # torch CPU threads

    def __post_init__(self):
        if self.expert not in POLICIES or not needs_state(self.expert):
            experts = [name for name in POLICIES if needs_state(name)]
            raise ValueError(f"expert={self.expert!r}: use a scripted policy that reads the simulator's state: {', '.join(experts)}")
        if self.obs not in ("latent", "pixels"):
            raise ValueError(f"obs={self.obs!r}: use latent or pixels")
        for name in ("frame_stack", "iterations", "episodes", "epochs", "batch_size", "threads"):
            check_count(name, getattr(self, name))
        if self.episodes > 1000:
            raise ValueError(f"episodes={self.episodes}: at most 1000 per iteration (their seeds are 1000 apart)")
        if self.iterations < 3:
            raise ValueError(f"iterations={self.iterations}: DAgger needs at least 3 (expert, mixed, then the student alone)")
        if not self.lr > 0 or not self.policy_std > 0 or self.expert_noise < 0:
            raise ValueError(f"lr={self.lr} and policy_std={self.policy_std} must be > 0, expert_noise={self.expert_noise} >= 0")


def expert_share(iteration: int) -> float:
    """The probability that the expert, not the student, acts at a step of ``iteration``."""
    return 1.0 if iteration == 0 else 0.5 if iteration == 1 else 0.0


def _actor_mean(policy, obs: torch.Tensor) -> torch.Tensor:
    """The PPO policy's deterministic action (its Gaussian's mean) for a batch of observations."""
    features = policy.extract_features(obs, policy.pi_features_extractor)
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


def _fit(config: DistillConfig, policy_config, observations: np.ndarray, labels: np.ndarray, seed: int):
    """A new student fitted to all labels (a fresh network each time, as DAgger's supervised step)."""
    from imaginegym.agents.sb3.policy import AgentPolicy

    torch.manual_seed(seed)
    policy = AgentPolicy.build(policy_config)
    with torch.no_grad():
        policy.log_std.fill_(float(np.log(config.policy_std)))
    params = [p for name, p in policy.named_parameters() if not name.startswith(("value_net", "mlp_extractor.value_net", "log_std"))]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    x, y = torch.from_numpy(observations), torch.from_numpy(labels)  # observations in their own dtype (uint8 frames stay small)
    generator = torch.Generator().manual_seed(seed)
    policy.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = (_actor_mean(policy, x[batch].float()) - y[batch]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return policy.eval()


def _policy_config(config: DistillConfig, env):
    from imaginegym.agents.sb3.policy import PolicyConfig

    return PolicyConfig(algo="ppo", world_model=str(config.world_model), obs_mode=config.obs, frame_stack=config.frame_stack,
                        observation_space=space_to_json(env.observation_space), action_space=space_to_json(env.action_space),
                        net_arch=list(config.net_arch), activation=config.activation,
                        training={"distilled_from": config.expert, **{k: v for k, v in asdict(config).items() if k != "threads"}})


def _check_settings(out: Path, config: DistillConfig) -> dict[str, Any]:
    """The run's state (a fresh one for a new directory); refuses a directory of another run."""
    wanted = json.loads(json.dumps({k: v for k, v in asdict(config).items() if k not in ("iterations", "threads")}))
    path = out / STATE_FILE
    if not path.is_file():
        return {"config": wanted, "iterations": []}
    state = json.loads(path.read_text())
    changed = sorted(k for k in set(state["config"]) | set(wanted) if state["config"].get(k) != wanted.get(k))
    if changed:
        raise ValueError(f"{out} holds a distillation with other settings ({', '.join(changed)} differ): use another --out, the same "
                         "settings to resume (--iterations may grow), or delete the directory to start over")
    return state


def distill_expert(config: DistillConfig, out: str | os.PathLike, progress: bool = True):
    """Run DAgger (resuming from ``out``); returns the best student as an `AgentPolicy`, saved in ``out/policy``."""
    from torch.utils.tensorboard import SummaryWriter

    from imaginegym.agents.sb3.policy import AgentPolicy
    from imaginegym.imagination import real_twin

    out = Path(out)
    state = _check_settings(out, config)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    env = real_twin(config.world_model, config.obs, config.frame_stack, "cpu", include_state=True)
    if not isinstance(env.action_space, spaces.Box):
        raise ValueError(f"the student regresses continuous actions; {config.world_model}'s env acts in {env.action_space}")
    policy_config = _policy_config(config, env)
    expert = POLICIES[config.expert](env.action_space, config.seed, 0.0, 0.0)  # noiseless labels
    observations = np.zeros((0, *env.observation_space.shape), env.observation_space.dtype)
    labels = np.zeros((0, *env.action_space.shape), np.float32)
    done_iterations = len(state["iterations"])
    if done_iterations:
        with np.load(out / LABELS_FILE) as saved:
            observations, labels = saved["observations"], saved["labels"]
    student = _fit(config, policy_config, observations, labels, config.seed * 1000 + done_iterations) if done_iterations else None
    best = max((r["return_mean"] for r in state["iterations"] if r["expert_share"] == 0), default=-np.inf)
    writer = SummaryWriter(str(out / "tensorboard"))
    low, high = env.action_space.low, env.action_space.high
    try:
        for iteration in tqdm(range(done_iterations, config.iterations), initial=done_iterations, total=config.iterations,
                              desc="DAgger", unit="iteration", disable=not progress):
            share, rng = expert_share(iteration), np.random.default_rng([config.seed, iteration])
            returns, new_obs, new_labels = [], [], []
            for episode in range(config.episodes):
                obs, info = env.reset(seed=config.seed * 1_000_003 + 1000 * iteration + episode)
                total, finished = 0.0, False
                while not finished:
                    label = expert(None, info["state"])
                    new_obs.append(np.asarray(obs, env.observation_space.dtype)), new_labels.append(label.astype(np.float32))
                    if student is None or rng.random() < share:
                        action = label + (config.expert_noise * rng.standard_normal(label.shape) if iteration == 0 else 0.0)
                    else:
                        with torch.no_grad():
                            action = _actor_mean(student, torch.from_numpy(obs[None].astype(np.float32)))[0].numpy()
                    obs, reward, terminated, truncated, info = env.step(np.clip(action, low, high).astype(np.float32))
                    total, finished = total + float(reward), terminated or truncated
                returns.append(total)
            if share == 0 and np.mean(returns) > best:  # the student that acted in this iteration; the next one is refitted
                best = float(np.mean(returns))
                AgentPolicy(policy_config, student).save(out / "policy")
            observations, labels = np.concatenate([observations, np.stack(new_obs)]), np.concatenate([labels, np.stack(new_labels)])
            with atomic_write(out / LABELS_FILE) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, observations=observations, labels=labels)
            result = {"iteration": iteration, "expert_share": share, "return_mean": float(np.mean(returns)),
                      "return_std": float(np.std(returns)), "returns": [float(r) for r in returns], "labels": len(labels)}
            state["iterations"].append(result)
            write_json_atomic(out / STATE_FILE, state)
            writer.add_scalar("distill/return", result["return_mean"], iteration)
            student = _fit(config, policy_config, observations, labels, config.seed * 1000 + iteration + 1)
    finally:
        writer.close()
        env.close()
    if not (out / "policy").is_dir():
        raise RuntimeError(f"no student-only iteration finished in {out}: run more --iterations")
    return AgentPolicy.load(out / "policy")
