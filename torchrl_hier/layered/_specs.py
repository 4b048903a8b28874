"""What the LayeredRL-style API needs to know about an env: its per-instance observation and
action specs and its number of instances, for a gymnasium vector env or a TorchRL ``EnvBase``.

The engine's :class:`torchrl_hier.Hierarchy` validates levels against a TorchRL env; for a
gymnasium env (and to change the number of instances) we give it a :class:`SpecEnv` built from
these specs. Stepping always happens in the user's env, never in the ``SpecEnv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.data import (
    Binary,
    Bounded,
    Categorical,
    Composite,
    MultiCategorical,
    MultiOneHot,
    OneHot,
    TensorSpec,
    Unbounded,
)
from torchrl.envs import EnvBase

__all__ = [
    "EnvSpecs",
    "SpecEnv",
    "env_specs",
    "is_gym_vector_env",
    "check_autoreset_mode",
    "check_uniform_sampling",
]

OBSERVATION_KEY = "observation"


@dataclass(frozen=True)
class EnvSpecs:
    """Per-instance (unbatched) specs of an env and its number of instances."""

    observation: TensorSpec
    action: TensorSpec
    reward_dtype: torch.dtype
    n_envs: int


def is_gym_vector_env(env: object) -> bool:
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - gymnasium is a dependency of the layered API
        return False
    return isinstance(env, gymnasium.vector.VectorEnv)


def _is_gym_env(env: object) -> bool:
    try:
        import gymnasium
    except ImportError:  # pragma: no cover
        return False
    return isinstance(env, gymnasium.Env)


def check_autoreset_mode(env: object) -> bool:
    """Raises unless a gymnasium vector env autoresets in SAME_STEP mode or not at all;
    returns whether it is SAME_STEP."""
    import gymnasium

    modes = gymnasium.vector.AutoresetMode
    mode = env.metadata.get("autoreset_mode", None)
    if mode not in (modes.SAME_STEP, modes.DISABLED):
        raise ValueError(
            f"The vector env's autoreset mode is {mode}; the LayeredRL-style API handles "
            "SAME_STEP (the last observation of an episode is in info['final_obs']) and DISABLED "
            "(finished instances are reset by hand). In NEXT_STEP mode (gymnasium's default) the "
            "step after an episode end ignores the action and returns the reset observation, "
            "which is not a transition of the hierarchy. Create the env with autoreset_mode="
            "gymnasium.vector.AutoresetMode.SAME_STEP, e.g. gymnasium.make_vec(id, n, "
            "vectorization_mode='sync', vector_kwargs={'autoreset_mode': "
            "gymnasium.vector.AutoresetMode.SAME_STEP})."
        )
    return mode == modes.SAME_STEP


def env_specs(env: object, observation_key="observation") -> EnvSpecs:
    """Reads the specs of a gymnasium vector env (checking its autoreset mode) or of a TorchRL
    env with batch size ``[n]``."""
    if is_gym_vector_env(env):
        check_autoreset_mode(env)
        return EnvSpecs(
            observation=gym_space_to_spec(env.single_observation_space, "observation"),
            action=gym_space_to_spec(env.single_action_space, "action"),
            reward_dtype=torch.float32,
            n_envs=int(env.num_envs),
        )
    if isinstance(env, EnvBase):
        if len(env.batch_size) != 1:
            raise ValueError(
                f"The LayeredRL-style API needs a TorchRL env with one batch dim (env "
                f"instances), got batch_size={tuple(env.batch_size)}. Batch it with "
                "SerialEnv/ParallelEnv (or build it with batch_size=[n])."
            )
        obs_spec = env.observation_spec.get(observation_key, None)
        if obs_spec is None:
            raise KeyError(
                f"The env has no observation {observation_key!r} (it has "
                f"{sorted(map(str, env.observation_spec.keys(True, True)))}); pass observation_key=."
            )
        n = env.batch_size[0]
        return EnvSpecs(
            observation=obs_spec[0].clone(),
            action=env.full_action_spec[env.action_key][0].clone(),
            reward_dtype=env.full_reward_spec[env.reward_key].dtype,
            n_envs=int(n),
        )
    if _is_gym_env(env):
        raise TypeError(
            "The LayeredRL-style API works on vector envs (observations carry an env-instance "
            f"dim), got a single gymnasium env {env!r}. Wrap it: gymnasium.vector.SyncVectorEnv("
            "[make_env], autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)."
        )
    raise TypeError(
        "env must be a gymnasium.vector.VectorEnv or a torchrl.envs.EnvBase with batch_size=[n], "
        f"got {type(env).__name__}."
    )


def gym_space_to_spec(space, what: str) -> TensorSpec:
    """A TorchRL spec for a gymnasium space (Box, Discrete, MultiDiscrete, MultiBinary)."""
    import gymnasium
    from torchrl.envs.libs.gym import _gym_to_torchrl_spec_transform

    spaces = gymnasium.spaces
    if not isinstance(
        space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
    ):
        raise TypeError(
            f"The {what} space {space} is not supported: the LayeredRL-style API handles Box, "
            "Discrete, MultiDiscrete and MultiBinary spaces. Flatten it first, e.g. with "
            "gymnasium.wrappers.FlattenObservation."
        )
    start = getattr(space, "start", None)
    if what == "action" and start is not None and np.any(np.asarray(start) != 0):
        raise ValueError(
            f"The action space {space} starts at {start}, but TorchRL's Categorical specs start "
            "at 0, so actions would be off by that amount. Use a space starting at 0 (e.g. a "
            "gymnasium.ActionWrapper that adds the offset)."
        )
    return _gym_to_torchrl_spec_transform(space, categorical_action_encoding=True)


def check_uniform_sampling(spec: TensorSpec, what: str = "The env action space") -> None:
    """Raises unless ``spec`` is finite: discrete, or bounded with finite bounds."""
    if isinstance(spec, (Categorical, OneHot, MultiCategorical, MultiOneHot, Binary)):
        return
    if isinstance(spec, Bounded):
        low, high = spec.space.low, spec.space.high
        if torch.isfinite(low).all() and torch.isfinite(high).all():
            return
        raise ValueError(
            f"{what} is bounded with non-finite bounds (low={low.tolist()}, "
            f"high={high.tolist()}), so it cannot be sampled uniformly. Give it finite bounds "
            "(e.g. gymnasium.wrappers.ClipAction / RescaleAction)."
        )
    raise ValueError(
        f"{what} ({type(spec).__name__}, shape {tuple(spec.shape)}) cannot be sampled "
        "uniformly: uniform sampling needs a finite space (Discrete, MultiDiscrete, "
        "MultiBinary or a Box with finite low and high). Wrap the env so that its action space "
        "is finite, or use a level with its own exploration instead of RandomHierarchy."
    )


class SpecEnv(EnvBase):
    """An ``EnvBase`` that only carries specs (observation under ``"observation"``, action,
    reward ``[n, 1]``, done/terminated/truncated ``[n, 1]``), so the engine's ``Hierarchy`` can
    validate levels and size its state for ``n`` instances. It cannot step: the LayeredRL-style
    API steps the user's env itself and hands the results to ``process_transition``."""

    def __init__(self, specs: EnvSpecs, n_envs: int, device: torch.device):
        super().__init__(batch_size=torch.Size([n_envs]), device=device)
        shape = torch.Size([n_envs])
        self.observation_spec = Composite(
            {OBSERVATION_KEY: specs.observation.to(device).expand(*shape, *specs.observation.shape)},
            shape=shape,
        )
        self.action_spec = specs.action.to(device).expand(*shape, *specs.action.shape)
        self.reward_spec = Unbounded((*shape, 1), dtype=specs.reward_dtype, device=device)
        flag = Categorical(2, (*shape, 1), dtype=torch.bool, device=device)
        self.full_done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=shape
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        raise RuntimeError(
            "SpecEnv only describes the specs of the user's env for the LayeredRL-style "
            "Hierarchy; step and reset the real env instead."
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise RuntimeError(
            "SpecEnv only describes the specs of the user's env for the LayeredRL-style "
            "Hierarchy; step and reset the real env instead."
        )

    def _set_seed(self, seed: int | None) -> None:
        return None
