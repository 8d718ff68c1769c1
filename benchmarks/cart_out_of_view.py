"""How long the cart of DMC cartpole stays outside the 64x64 view in a competent swing-up.

    MUJOCO_GL=egl python benchmarks/cart_out_of_view.py --episodes 5

The scripted swing-up (`swingup-expert`, noise std up to 0.3) plays cartpole-swingup at action
repeat 2, as the world models see it. After each agent step the cart's centre is projected into
the frame through the env's camera (MuJoCo's camera pose and field of view); the cart counts as
out of view when that point lies outside the image. A world model attends to `context_length`
frames (the bundled ones: 8, so 7 past frames): an out-of-view run longer than that leaves it no
frame that shows where the cart is.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import imaginegym.envs  # noqa: F401
from imaginegym.data.policies import CartpoleSwingupExpert


def cart_pixel(physics, camera_id: int, size: int) -> tuple[float, float]:
    """The cart's centre in pixel coordinates (column, row) of a size x size frame of camera ``camera_id``."""
    model, data = physics.model, physics.data
    point = data.xpos[model.name2id("cart", "body")]
    position, rotation = data.cam_xpos[camera_id], data.cam_xmat[camera_id].reshape(3, 3)
    local = rotation.T @ (point - position)  # camera frame: x right, y up, looking along -z
    focal = 0.5 * size / np.tan(np.deg2rad(model.cam_fovy[camera_id]) / 2)
    return size / 2 + focal * local[0] / -local[2], size / 2 - focal * local[1] / -local[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--noise", type=float, default=0.3, help="the expert's largest noise std")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env = gym.make("imaginegym/DMC-v0", task="cartpole-swingup", size=64, action_repeat=2, include_state=True)
    size, camera_id = env.unwrapped.size, env.unwrapped.camera_id
    print("| episode | return | cart x range | steps out of view | longest run out of view (agent steps) |")
    print("| --- | --- | --- | --- | --- |")
    longest_runs = []
    for episode in range(args.episodes):
        observation, info = env.reset(seed=args.seed + episode)
        policy = CartpoleSwingupExpert(env.action_space, seed=args.seed + episode, noise_high=args.noise)
        physics = env.unwrapped._physics  # the dm_control Physics the frames are rendered from
        total, done, xs, out = 0.0, False, [], []
        while not done:
            observation, reward, terminated, truncated, info = env.step(policy(observation, info["state"]))
            total += reward
            done = terminated or truncated
            column, row = cart_pixel(physics, camera_id, size)
            xs.append(info["state"][0])
            out.append(not (0 <= column < size and 0 <= row < size))
        runs, current = [0], 0
        for flag in out:
            current = current + 1 if flag else 0
            runs.append(current)
        longest_runs.append(max(runs))
        print(f"| {episode} | {total:.1f} | {min(xs):+.2f} .. {max(xs):+.2f} | {sum(out)} of {len(out)} | {max(runs)} |")
    print(f"longest run out of view: {np.mean(longest_runs):.1f} agent steps on average, at most {max(longest_runs)}")


if __name__ == "__main__":
    main()
