"""The settings of an agent training run (light: no torch, so the command line's help stays fast)."""

from __future__ import annotations

from dataclasses import dataclass

from imaginegym.validation import check_count

ALGORITHM_NAMES = ("ppo", "sac")
ACTIVATION_NAMES = ("Tanh", "ReLU", "ELU")
WORLDS = ("imagined", "real")
LR_SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class AgentConfig:
    """One agent training run; each field is one `imaginegym agent train` flag."""

    algo: str = "ppo"  # ppo | sac
    env: str = "imagined:cartpole-swingup"  # imagined:MODEL or real:MODEL (a bundled world model name or a path)
    obs: str = "latent"  # latent (the tokenizer's latents) | state (latents + the dynamics' state) | pixels, in both worlds
    frame_stack: int = 4  # observations are the last N frames (or latents), so they are Markov
    steps: int = 1_000_000  # env steps to train for, all envs together (a resumed run continues to this)
    num_envs: int = 32  # envs stepped together (imagined: one batch; real: in this process)
    horizon: int = 64  # imagined episode length; truncation bootstraps the value, as SB3 does at time limits
    start_data: str | None = None  # imagined episodes start from windows of this dataset (default: the model's bundled starts)
    episode_start_fraction: float = 0.0  # share of imagined episodes that start at the first frames of a start_data episode (the real env's initial states)
    seed: int = 0  # env seeds and the network's initial weights
    device: str = "auto"  # the world model's and the policy's device
    threads: int = 1  # torch CPU threads: small networks step fastest on one (two threads stall ~10x when another job shares the cores)
    checkpoint_every: int = 50_000  # env steps between resumable checkpoints
    net_arch: tuple[int, ...] = (256, 256)  # hidden layers of the actor and the critic
    activation: str = "ELU"  # Tanh | ReLU | ELU
    lr: float = 3e-4  # Adam learning rate
    lr_schedule: str = "constant"  # constant | linear (decays to 0 at `steps`, as CleanRL's PPO anneals it)
    gamma: float = 0.99  # discount
    ppo_rollout_steps: int = 64  # PPO: steps per env between updates
    ppo_batch_size: int = 512  # PPO: minibatch size
    ppo_epochs: int = 5  # PPO: passes over each rollout
    ppo_entropy: float = 0.0  # PPO: entropy bonus
    normalize_reward: bool = False  # train on rewards scaled by a running std of the discounted return (SB3 VecNormalize); the policy is unchanged
    sac_buffer_size: int = 300_000  # SAC: replay buffer transitions
    sac_learning_starts: int = 5_000  # SAC: random steps before learning
    sac_gradient_steps: int = -1  # SAC: updates per step of all envs (-1: one per env step, so many envs do not mean few updates)

    def __post_init__(self):
        if self.algo not in ALGORITHM_NAMES:
            raise ValueError(f"algo={self.algo!r}: use one of {', '.join(ALGORITHM_NAMES)}")
        if self.world not in WORLDS or not self.model:
            raise ValueError(f"env={self.env!r}: use imagined:MODEL or real:MODEL, MODEL a bundled world model name or a path "
                             "(e.g. imagined:cartpole-swingup)")
        if self.obs not in ("latent", "state", "pixels"):
            raise ValueError(f"obs={self.obs!r}: use latent, state (the latents and the world model's state of each frame) or pixels")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
        if self.activation not in ACTIVATION_NAMES:
            raise ValueError(f"activation={self.activation!r}: use one of {', '.join(ACTIVATION_NAMES)}")
        for name in ("threads", "frame_stack", "steps", "num_envs", "horizon", "checkpoint_every", "ppo_rollout_steps", "ppo_batch_size",
                     "ppo_epochs", "sac_buffer_size"):
            check_count(name, getattr(self, name))
        if self.sac_gradient_steps != -1:
            check_count("sac_gradient_steps", self.sac_gradient_steps)
        if not 0 <= self.episode_start_fraction <= 1:
            raise ValueError(f"episode_start_fraction={self.episode_start_fraction} must lie in [0, 1] (0: windows anywhere in the episodes)")
        if self.episode_start_fraction and (self.world != "imagined" or self.start_data is None):
            raise ValueError(f"episode_start_fraction={self.episode_start_fraction} chooses where imagined episodes start in start_data: "
                             "give an imagined env and --start-data")
        if not self.lr > 0 or not 0 < self.gamma <= 1:
            raise ValueError(f"lr={self.lr} must be > 0 and gamma={self.gamma} in (0, 1]")

    @property
    def world(self) -> str:
        return self.env.split(":", 1)[0]

    @property
    def model(self) -> str:
        return self.env.split(":", 1)[1] if ":" in self.env else ""
