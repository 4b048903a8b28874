"""A short rollout of a 3-level hierarchy on the batched GridMaze, printing what each level did.

Run with ``python -m torchrl_hier.demo``.
"""

from __future__ import annotations

import torch
from torchrl.data import Categorical, Unbounded
from torchrl.envs import TransformedEnv

from torchrl_hier import Hierarchy, Timeout
from torchrl_hier.envs import GridMaze
from torchrl_hier.levels import random_level


def main(n_envs: int = 8, n_steps: int = 60, seed: int = 0) -> None:
    torch.manual_seed(seed)
    env = GridMaze(batch_size=[n_envs], max_steps=40, seed=seed)
    levels = [
        random_level("option", Categorical(4)),
        random_level("subgoal", Unbounded(2), control=Timeout(3)),
        random_level("primitive", env.action_spec_unbatched, control=Timeout(4), lowest=True),
    ]
    hierarchy = Hierarchy(levels, env)
    rollout = TransformedEnv(env, hierarchy.transform).rollout(
        n_steps, hierarchy.policy, break_when_any_done=False
    )
    completed = rollout["next", "hier", "completed"][0]
    print(f"{n_envs} envs x {n_steps} steps; completed transitions of env 0 (one row per level):")
    for name, row in zip(hierarchy.names, completed.T):
        print(f"  {name:>10} " + "".join("|" if c else "." for c in row.tolist()))
    print("\nper level: transitions, mean tau, mean SMDP reward")
    for name, data in hierarchy.transitions(rollout).items():
        tau = data["steps_to_next_obs"].float().mean().item()
        reward = data["next", "reward"].mean().item()
        print(f"  {name:>10} {data.shape[0]:6d} {tau:8.2f} {reward:10.3f}")


if __name__ == "__main__":
    main()
