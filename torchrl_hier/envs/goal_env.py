"""Goal-conditioned views of ordinary envs: a fixed desired goal and the state as achieved goal.

Subgoal hierarchies and hindsight relabelling need an env goal to pursue and relabel. Gymnasium
tasks such as ``MountainCarContinuous-v0`` have none in their observation, so
:class:`FixedGoal` adds what the built-in mazes carry: ``"achieved_goal"`` (components of the
observation), ``"desired_goal"`` (a fixed goal), the goal appended to ``"observation"`` (where
the top level of a hierarchy reads it and hindsight relabelling rewrites it) and, optionally,
``"is_success"``. :func:`goal_gym_env` builds such a task from a gymnasium id, with the
observation optionally rescaled first (TorchRL's ``ObservationNorm``), and
``make_env("MountainCarContinuous")`` is HAC's MountainCar task built with it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, TensorSpec, Unbounded
from torchrl.envs import Compose, EnvBase, ObservationNorm, Transform, TransformedEnv

from torchrl_hier.control import Tolerance, check_tolerance, within_tolerance

__all__ = ["FixedGoal", "SUCCESS_TESTS", "goal_gym_env", "MOUNTAIN_CAR_HAC", "mountain_car_hac"]

#: What :class:`FixedGoal` reports as ``"is_success"``: nothing, reaching the goal within its
#: tolerance, or the env's own termination (for tasks that terminate only on success).
SUCCESS_TESTS = (None, "goal", "terminated")


def _vector(value: float | Sequence[float], n: int, what: str) -> torch.Tensor:
    out = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if out.numel() == 1:
        out = out.expand(n).clone()
    if out.numel() != n:
        raise ValueError(f"{what} has {out.numel()} entries; give one per goal component ({n}).")
    return out


class FixedGoal(Transform):
    """Adds a fixed desired goal and the achieved goal (``observation[..., indices]``) to an
    env's observations.

    Writes, at reset and after every step:

    - ``"achieved_goal"``: the components ``indices`` of ``observation_key``;
    - ``"desired_goal"``: ``goal`` (the same for every instance and step);
    - ``observation_key`` with the goal appended (``append=True``), as the built-in mazes carry
      it, so a goal-conditioned top level sees the goal and hindsight can relabel it at the
      observation's last ``len(goal)`` components (:attr:`desired_indices`);
    - ``success_key`` (``"is_success"``), if ``success`` is given: with ``"goal"``, whether
      the achieved goal is within ``tolerance`` (a number, or one per component) of the goal
      under ``norm``; with ``"terminated"``, whether the env terminated at this step, for tasks
      that terminate only on success (MountainCar: reaching the flag).

    The env's reward, termination and truncation are untouched.

    Args:
        indices: observation components forming the achieved goal, e.g. ``(0, 1)``.
        goal: the desired goal, one value per index.
        tolerance: for ``success="goal"``: a positive distance, or one per component.
        norm: the distance norm of the success test (``float("inf")``: per component).
        success: ``None`` (no success entry), ``"goal"`` or ``"terminated"``.
    """

    def __init__(
        self,
        indices: Sequence[int],
        goal: Sequence[float],
        tolerance: Tolerance | Sequence[float] = 0.05,
        *,
        norm: float = float("inf"),
        observation_key: str = "observation",
        append: bool = True,
        success: str | None = None,
        success_key: str = "is_success",
    ):
        indices = tuple(int(i) for i in indices)
        if not indices or len(set(indices)) != len(indices):
            raise ValueError(f"FixedGoal needs distinct goal indices, got {indices!r}.")
        if success not in SUCCESS_TESTS:
            raise ValueError(
                f"FixedGoal: success={success!r}; choose one of {list(SUCCESS_TESTS)}."
            )
        out_keys = ["achieved_goal", "desired_goal"] + ([] if success is None else [success_key])
        super().__init__(in_keys=[observation_key], out_keys=out_keys)
        self.indices = indices
        self.register_buffer("goal", _vector(goal, len(indices), "FixedGoal's goal"))
        self.tolerance = check_tolerance(
            tuple(tolerance) if isinstance(tolerance, Sequence) else tolerance, "FixedGoal"
        )
        if isinstance(self.tolerance, tuple) and len(self.tolerance) != len(indices):
            raise ValueError(
                f"FixedGoal: {len(self.tolerance)} tolerances for {len(indices)} goal components."
            )
        self.norm = float(norm)
        self.observation_key = observation_key
        self.append = bool(append)
        self.success = success
        self.success_key = success_key
        self._obs_dim: int | None = None

    @property
    def desired_indices(self) -> tuple[int, ...]:
        """Where the goal sits in the transformed observation (its last components)."""
        if self._obs_dim is None and self.container is not None:
            self.container.observation_spec  # computes the specs, hence the observation size
        if self._obs_dim is None:
            raise RuntimeError("FixedGoal: attach it to an env (TransformedEnv) first.")
        if not self.append:
            raise ValueError("FixedGoal(append=False) does not put the goal into the observation.")
        return tuple(range(self._obs_dim, self._obs_dim + len(self.indices)))

    def _write(self, td: TensorDictBase) -> TensorDictBase:
        observation = td.get(self.observation_key)
        if self._obs_dim is not None and observation.shape[-1] != self._obs_dim:
            raise ValueError(
                f"FixedGoal: {self.observation_key!r} has {observation.shape[-1]} entries, the "
                f"env's spec said {self._obs_dim}."
            )
        achieved = observation[..., list(self.indices)]
        goal = self.goal.to(observation.device, observation.dtype).expand_as(achieved)
        td.set("achieved_goal", achieved)
        td.set("desired_goal", goal)
        if self.success == "goal":
            reached = within_tolerance(achieved, goal, self.tolerance, self.norm).unsqueeze(-1)
            td.set(self.success_key, reached)
        elif self.success == "terminated":
            terminated = td.get("terminated", None)
            if terminated is None:  # at reset
                terminated = torch.zeros((*achieved.shape[:-1], 1), dtype=torch.bool,
                                         device=achieved.device)
            td.set(self.success_key, terminated.reshape(*achieved.shape[:-1], 1).bool())
        if self.append:
            td.set(self.observation_key, torch.cat([observation, goal], -1))
        return td

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._write(next_tensordict)

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return self._write(tensordict_reset)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        spec = observation_spec[self.observation_key]
        shape = spec.shape
        self._obs_dim = int(shape[-1])
        bad = [i for i in self.indices if not -self._obs_dim <= i < self._obs_dim]
        if bad:
            raise ValueError(
                f"FixedGoal: goal indices {bad} are out of range for {self.observation_key!r} of "
                f"{self._obs_dim} entries."
            )
        n = len(self.indices)
        goal_shape = (*shape[:-1], n)
        device = spec.device
        goal = self.goal.to(device)
        if isinstance(spec, Bounded):
            low = spec.space.low[..., list(self.indices)]
            high = spec.space.high[..., list(self.indices)]
            achieved: TensorSpec = Bounded(low, high, goal_shape, dtype=spec.dtype, device=device)
        else:
            achieved = Unbounded(goal_shape, dtype=spec.dtype, device=device)
        observation_spec["achieved_goal"] = achieved
        observation_spec["desired_goal"] = Bounded(
            goal.expand(goal_shape), goal.expand(goal_shape) + 0.0, goal_shape,
            dtype=spec.dtype, device=device,
        )
        if self.success is not None:
            observation_spec[self.success_key] = Categorical(
                2, (*shape[:-1], 1), dtype=torch.bool, device=device
            )
        if self.append:
            new_shape = (*shape[:-1], self._obs_dim + n)
            if isinstance(spec, Bounded):
                low = torch.cat([spec.space.low, goal.expand(goal_shape).to(spec.dtype)], -1)
                high = torch.cat([spec.space.high, goal.expand(goal_shape).to(spec.dtype)], -1)
                observation_spec[self.observation_key] = Bounded(
                    low, high, new_shape, dtype=spec.dtype, device=device
                )
            else:
                observation_spec[self.observation_key] = Unbounded(
                    new_shape, dtype=spec.dtype, device=device
                )
        return observation_spec


def goal_gym_env(
    name: str,
    batch_size: torch.Size | int = 1,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    *,
    indices: Sequence[int],
    goal: Sequence[float],
    tolerance: Tolerance | Sequence[float],
    norm: float = float("inf"),
    obs_loc: float | Sequence[float] | None = None,
    obs_scale: float | Sequence[float] | None = None,
    success: str | None = None,
    vectorized: bool = True,
    **kwargs: Any,
) -> TransformedEnv:
    """A gymnasium task made goal-conditioned by :class:`FixedGoal`.

    A 1-D ``batch_size`` of ``N`` steps ``N`` gymnasium envs in one call (a
    ``gymnasium.vector.SyncVectorEnv`` with autoreset off, through TorchRL's ``GymWrapper``),
    which costs about as much per call as a single env; ``vectorized=False`` gives
    ``make_env(name, ...)``'s ``SerialEnv`` instead, and ``()`` one unbatched ``GymEnv``.

    With ``obs_scale`` (and ``obs_loc``) the observation is first rescaled to
    ``obs * obs_scale + obs_loc`` (TorchRL's ``ObservationNorm``), e.g. into ``[-1, 1]`` per
    component; ``goal`` and ``tolerance`` are given in the env's own units and rescaled with it.
    ``success`` adds ``"is_success"`` (``"goal"``: the achieved goal within ``tolerance``;
    ``"terminated"``: the env's termination).
    ``kwargs`` go to ``GymEnv`` (e.g. ``max_episode_steps``).
    """
    base = _gym_base(name, batch_size, device, seed, vectorized, **kwargs)
    n = len(tuple(indices))
    goal_t = _vector(goal, n, "goal")
    tol = check_tolerance(
        tuple(tolerance) if isinstance(tolerance, Sequence) else tolerance, f"Task {name!r}"
    )
    transforms: list[Transform] = []
    if obs_scale is not None or obs_loc is not None:
        obs_dim = base.observation_spec["observation"].shape[-1]
        scale = _vector(1.0 if obs_scale is None else obs_scale, obs_dim, "obs_scale")
        loc = _vector(0.0 if obs_loc is None else obs_loc, obs_dim, "obs_loc")
        if not bool((scale > 0).all()):
            raise ValueError(f"obs_scale must be positive, got {scale.tolist()}.")
        transforms.append(
            ObservationNorm(loc=loc, scale=scale, in_keys=["observation"], standard_normal=False)
        )
        index = list(indices)
        goal_t = goal_t * scale[index] + loc[index]
        tol_t = torch.as_tensor(tol, dtype=torch.float32).expand(n) * scale[index]
        tol = tuple(tol_t.tolist()) if isinstance(tol, tuple) or n > 1 else float(tol_t)
    transforms.append(
        FixedGoal(indices, goal_t.tolist(), tol, norm=norm, success=success)
    )
    return TransformedEnv(base, Compose(*transforms))


def _gym_base(
    name: str, batch_size: torch.Size | int, device: torch.device | str, seed: int | None,
    vectorized: bool, **kwargs: Any,
) -> EnvBase:
    from torchrl_hier.envs.registry import make_env

    size = torch.Size([batch_size] if isinstance(batch_size, int) else batch_size)
    if not vectorized or len(size) != 1:
        return make_env(name, batch_size=size, device=device, seed=seed, **kwargs)
    import gymnasium
    from gymnasium.vector import AutoresetMode, SyncVectorEnv
    from torchrl.envs import GymWrapper

    vector = SyncVectorEnv(
        [functools.partial(gymnasium.make, name, **kwargs) for _ in range(size[0])],
        autoreset_mode=AutoresetMode.DISABLED,
    )
    env = GymWrapper(vector, device=device)
    if seed is not None:
        env.set_seed(seed)
    return env


#: HAC's MountainCar set-up (the PyTorch port of "Learning Multi-Level Hierarchies with
#: Hindsight"): goal state (position 0.48, velocity 0.04) within (0.01, 0.02) per component,
#: state rescaled into [-1, 1] (position in [-1.2, 0.6], velocity in [-0.07, 0.07]);
#: ``"is_success"`` is the env's own success (it terminates only at the flag).
MOUNTAIN_CAR_HAC: dict[str, Any] = dict(
    success="terminated",
    indices=(0, 1),
    goal=(0.48, 0.04),
    tolerance=(0.01, 0.02),
    norm=float("inf"),
    obs_scale=(1 / 0.9, 1 / 0.07),
    obs_loc=(0.3 / 0.9, 0.0),
)


def mountain_car_hac(**kwargs: Any) -> TransformedEnv:
    """``MountainCarContinuous-v0`` with HAC's goal (:data:`MOUNTAIN_CAR_HAC`, overridable by
    ``kwargs``), state rescaled into ``[-1, 1]``; observation ``(position, velocity,
    goal position, goal velocity)``, the env's own reward (100 on reaching the flag minus
    0.1 * action**2 per step) and termination; ``"is_success"``: reaching the flag."""
    return goal_gym_env("MountainCarContinuous-v0", **{**MOUNTAIN_CAR_HAC, **kwargs})

