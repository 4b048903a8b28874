"""Random and constant levels, for tests and baselines, and the config factory of the flat
baseline (one learning level acting in the env)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import TensorSpec

from torchrl_hier.control import Always, ReturnControlRule
from torchrl_hier.errors import ConfigError
from torchrl_hier.level import ACTION, OBSERVATION, Level
from torchrl_hier.levels.from_config import (
    LevelContext,
    LevelParts,
    algorithms,
    check_algorithm,
    env_goal_hindsight,
    exploration_settings,
    on_policy_parts,
)
from torchrl_hier.levels.on_policy import ON_POLICY_ALGORITHMS
from torchrl_hier.levels.parts import actor_critic_head, dqn_head

__all__ = ["SpecRandomPolicy", "ConstantPolicy", "random_level", "constant_level", "flat_from_config"]


class SpecRandomPolicy(TensorDictModuleBase):
    """Samples ``"action"`` uniformly from an unbatched spec, for every instance of the batch.

    Draws from torch's global generator, so ``torch.manual_seed`` makes it reproducible.
    """

    def __init__(self, spec: TensorSpec):
        super().__init__()
        self.spec = spec
        self.in_keys = [OBSERVATION]
        self.out_keys = [ACTION]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = self.spec.rand(tensordict.batch_size)
        return tensordict.set(ACTION, action.to(tensordict.device or action.device))


class ConstantPolicy(TensorDictModuleBase):
    """Writes the same ``"action"`` for every instance."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", torch.as_tensor(value))
        self.in_keys = [OBSERVATION]
        self.out_keys = [ACTION]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = self.value.expand(*tensordict.batch_size, *self.value.shape)
        return tensordict.set(ACTION, action.clone())


def random_level(
    name: str,
    action_spec: TensorSpec,
    control: ReturnControlRule | None = None,
    lowest: bool = False,
    **kwargs,
) -> Level:
    """A level acting uniformly at random in ``action_spec`` (the env's, for the lowest)."""
    return Level(
        name,
        SpecRandomPolicy(action_spec),
        action_spec=None if lowest else action_spec,
        control=control or Always(),
        **kwargs,
    )


def constant_level(
    name: str, value: torch.Tensor, action_spec: TensorSpec | None = None, **kwargs
) -> Level:
    """A level that always emits ``value``."""
    return Level(name, ConstantPolicy(value), action_spec=action_spec, **kwargs)


def flat_from_config(
    ctx: LevelContext,
    *,
    algorithm: str | None = "auto",
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    exploration: Mapping[str, Any] | None = None,
    hindsight_k: int = 0,
    hindsight_strategy: str = "future",
    clip_epsilon: float = 0.2,
    entropy_coeff: float = 0.01,
    critic_coeff: float = 0.5,
) -> LevelParts:
    """The only level of a one-level hierarchy (config family ``flat``): DQN on discrete
    actions, TD3 or SAC on continuous ones, or PPO/A2C; off-policy, with HER on the env goal
    when ``hindsight_k > 0`` on a goal task."""
    if ctx.n_levels != 1:
        raise ConfigError(
            f"{ctx.where} is a flat level, which is for a one-level hierarchy; this one has "
            f"{ctx.n_levels}."
        )
    spec = ctx.env_spec
    algorithm = check_algorithm(ctx.where, algorithm, spec, algorithms(spec))
    if algorithm in ON_POLICY_ALGORITHMS:
        return on_policy_parts(
            ctx, spec, algorithm, hidden=hidden, gamma=gamma, hindsight_k=hindsight_k,
            clip_epsilon=clip_epsilon, entropy_coeff=entropy_coeff, critic_coeff=critic_coeff,
        )
    ex = exploration_settings(exploration)
    gamma = float(gamma)
    if algorithm == "dqn":
        policy, _, loss = dqn_head(
            ctx.obs_dim, spec, hidden=tuple(hidden), gamma=gamma, eps_init=ex["eps_init"],
            eps_end=ex["eps_end"], annealing_num_steps=ex["annealing_num_steps"],
            device=ctx.device,
        )
    else:
        policy, _, loss = actor_critic_head(
            ctx.obs_dim, spec, algorithm=algorithm, hidden=tuple(hidden), gamma=gamma,
            noise_std=ex["noise_std"], annealing_num_steps=ex["annealing_num_steps"],
            random_probability=ex["random_probability"], device=ctx.device,
        )
    part = LevelParts(Level(ctx.name, policy, gamma=gamma), loss)
    return env_goal_hindsight(part, ctx, hindsight_k, hindsight_strategy)
