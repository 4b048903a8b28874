"""Goal spaces: which part of an observation is the achieved goal, where a commanded goal lives,
and the sparse goal reward of goal-conditioned levels.

A :class:`SubgoalSpace` says which observation components form the achieved goal (e.g. the
agent's position), the bounds of the subgoals a subgoal level emits, and whether those
subgoals are absolute positions or displacements from the position where they were chosen.
A :class:`GoalSlot` says where a goal is read (and written, by hindsight relabelling): in the
``parent_action`` (a subgoal from the level above) or in the ``observation`` (the env's goal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tensordict import TensorDictBase
from torch import Tensor
from torchrl.data import Bounded
from torchrl.envs import EnvBase

from torchrl_hier.control import LevelStep, Tolerance, check_tolerance, within_tolerance
from torchrl_hier.level import OBSERVATION, PARENT_ACTION

__all__ = [
    "SubgoalSpace",
    "GoalSlot",
    "AchievedGoal",
    "CommandedGoal",
    "GoalReward",
    "check_goal_keys",
    "check_goal_env",
    "goal_distance",
]


def _as_indices(indices: Sequence[int] | int, what: str) -> tuple[int, ...]:
    if isinstance(indices, int):
        indices = (indices,)
    indices = tuple(indices)
    if not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ValueError(f"{what} must be a non-empty sequence of ints, got {indices!r}.")
    if len(set(indices)) != len(indices):
        raise ValueError(f"{what} has repeated entries: {indices!r}.")
    return indices


def _select(x: Tensor, indices: tuple[int, ...]) -> Tensor:
    """``x[..., indices]``, as a cheap slice when the indices are contiguous and increasing."""
    first = indices[0]
    if first >= 0 and indices == tuple(range(first, first + len(indices))):
        return x[..., first : first + len(indices)]
    return x[..., list(indices)]


def _check_in_range(
    indices: tuple[int, ...], size: int, level: str, key: str, what: str
) -> None:
    bad = [i for i in indices if not -size <= i < size]
    if bad:
        raise ValueError(
            f"Level {level!r}: {what} uses components {bad} of {key!r}, which has only {size} "
            f"entries in its last dim. Pick indices in [0, {size})."
        )


@dataclass(frozen=True)
class SubgoalSpace:
    """The achieved-goal projection of an observation and the bounds of subgoals.

    Args:
        indices: observation components (last dim) forming the achieved goal, e.g. ``(0, 1)``
            for the agent's position in ``GridMaze``/``PointMaze``.
        low, high: bounds of the subgoals a subgoal level emits (scalars or one per component):
            absolute positions, or displacements when ``relative``.
        relative: subgoals are displacements from the achieved goal at the time they are
            chosen. The subgoal level still hands the *absolute* target to the level below
            (``to_absolute``), so the level below never needs to know where the subgoal was set;
            its learner sees the displacement again (``to_relative``).
        resolution: for a discrete (DQN) subgoal level: the subgoals are the points of a
            regular lattice with ``resolution`` points per component between ``low`` and
            ``high`` (both included), ``resolution ** dim`` in all, numbered row-major
            (:attr:`lattice`, :meth:`lattice_index`). ``None``: continuous subgoals.
    """

    indices: tuple[int, ...]
    low: float | Sequence[float]
    high: float | Sequence[float]
    relative: bool = False
    resolution: int | None = None
    _low: Tensor = field(init=False, repr=False, compare=False)
    _high: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        indices = _as_indices(self.indices, "SubgoalSpace indices")
        object.__setattr__(self, "indices", indices)
        low = torch.as_tensor(self.low, dtype=torch.float32).expand(len(indices)).clone()
        high = torch.as_tensor(self.high, dtype=torch.float32).expand(len(indices)).clone()
        if not bool((low < high).all()):
            raise ValueError(
                f"SubgoalSpace needs low < high in every component, got low={low.tolist()}, "
                f"high={high.tolist()}."
            )
        r = self.resolution
        if r is not None and not (isinstance(r, int) and not isinstance(r, bool) and r >= 2):
            raise ValueError(
                f"SubgoalSpace resolution must be an int >= 2 (lattice points per component) or "
                f"None for continuous subgoals, got {r!r}."
            )
        object.__setattr__(self, "_low", low)
        object.__setattr__(self, "_high", high)

    @property
    def dim(self) -> int:
        return len(self.indices)

    @property
    def spec(self) -> Bounded:
        """The bounded spec of the subgoals the level emits (in its own frame)."""
        return Bounded(self._low.clone(), self._high.clone(), (self.dim,), dtype=torch.float32)

    @property
    def n_points(self) -> int:
        """The number of lattice points (``resolution ** dim``)."""
        self._need_lattice()
        return self.resolution**self.dim

    @property
    def lattice(self) -> Tensor:
        """The lattice points ``[n_points, dim]``, row-major (last component fastest)."""
        self._need_lattice()
        axes = [
            torch.linspace(float(lo), float(hi), self.resolution)
            for lo, hi in zip(self._low, self._high)
        ]
        return torch.cartesian_prod(*axes).reshape(-1, self.dim)

    def lattice_index(self, subgoal: Tensor) -> Tensor:
        """The index of the lattice point nearest to each subgoal (in this space's frame; out
        of bounds ones are clamped first): ``subgoal[..., dim] -> index[...]`` (int64)."""
        self._need_lattice()
        low = self._low.to(subgoal.device, subgoal.dtype)
        high = self._high.to(subgoal.device, subgoal.dtype)
        cell = ((self.clamp(subgoal) - low) / (high - low) * (self.resolution - 1)).round().long()
        strides = self.resolution ** torch.arange(
            self.dim - 1, -1, -1, device=subgoal.device
        )
        return (cell * strides).sum(-1)

    def _need_lattice(self) -> None:
        if self.resolution is None:
            raise ValueError(
                "This SubgoalSpace is continuous; give it resolution=... (points per component) "
                "for a discrete subgoal lattice."
            )

    def achieved(self, observation: Tensor) -> Tensor:
        """The achieved goal of an observation: ``observation[..., indices]``."""
        return _select(observation, self.indices)

    def to_absolute(self, subgoal: Tensor, observation: Tensor) -> Tensor:
        """The absolute target of a subgoal chosen at ``observation``."""
        return subgoal + self.achieved(observation) if self.relative else subgoal

    def to_relative(self, goal: Tensor, observation: Tensor) -> Tensor:
        """The subgoal, in this space's frame, whose absolute target is ``goal``."""
        return goal - self.achieved(observation) if self.relative else goal

    def clamp(self, subgoal: Tensor) -> Tensor:
        """Clamps a subgoal (in this space's frame) into the bounds."""
        low = self._low.to(subgoal.device, subgoal.dtype)
        high = self._high.to(subgoal.device, subgoal.dtype)
        return torch.maximum(torch.minimum(subgoal, high), low)

    def check(self, level: str, obs_dim: int, key: str = OBSERVATION) -> None:
        """Raises if the projection does not fit an observation with ``obs_dim`` entries."""
        _check_in_range(self.indices, obs_dim, level, key, "its subgoal projection")


@dataclass(frozen=True)
class GoalSlot:
    """Where a level's goal lives in its TensorDicts: components ``indices`` of ``key``.

    ``GoalSlot.parent(dim)`` is the first ``dim`` entries of ``"parent_action"`` (a subgoal,
    possibly followed by a subgoal-test flag); ``GoalSlot.observation((2, 3))`` is a goal that
    the env writes into the observation. Hindsight relabelling writes new goals into both the
    root and the ``"next"`` entry.
    """

    key: str
    indices: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.key not in (PARENT_ACTION, OBSERVATION):
            raise ValueError(
                f"A goal lives in {PARENT_ACTION!r} (a subgoal from the level above) or in "
                f"{OBSERVATION!r} (the env's goal), got key={self.key!r}."
            )
        object.__setattr__(self, "indices", _as_indices(self.indices, "GoalSlot indices"))

    @classmethod
    def parent(cls, dim: int) -> GoalSlot:
        return cls(PARENT_ACTION, tuple(range(dim)))

    @classmethod
    def observation(cls, indices: Sequence[int]) -> GoalSlot:
        return cls(OBSERVATION, tuple(indices))

    @property
    def dim(self) -> int:
        return len(self.indices)

    def read(self, td: TensorDictBase, level: str = "this level", next: bool = False) -> Tensor:
        key = ("next", self.key) if next else self.key
        value = td.get(key, None)
        if value is None:
            raise KeyError(
                f"Level {level!r}: its goal is read from {key!r}, which the TensorDict does not "
                f"hold (it holds {sorted(map(str, td.keys(True, True)))})."
            )
        return _select(value, self.indices)

    def read_step(self, step: LevelStep) -> Tensor:
        """The goal as a level's reward and control rules see it after an env step."""
        if self.key == PARENT_ACTION:
            value = step.parent_action
            if value is None:
                raise ValueError(
                    f"Level {step.name!r} reads its goal from {PARENT_ACTION!r}, but it is the "
                    "top level, which has none. Put a subgoal level above it, or read the goal "
                    "from the observation (GoalSlot.observation(indices))."
                )
        else:
            value = step.next_observation
        return _select(value, self.indices)

    def write(self, td: TensorDictBase, goal: Tensor) -> TensorDictBase:
        """Writes ``goal`` into the slot of the root and ``"next"`` entries (in place)."""
        for key in (self.key, ("next", self.key)):
            value = td.get(key, None)
            if value is None:
                continue
            value = value.clone()
            value[..., list(self.indices)] = goal.to(value.dtype)
            td.set(key, value)
        return td

    def check(self, level: str, size: int) -> None:
        _check_in_range(self.indices, size, level, self.key, "its goal")


@dataclass(frozen=True)
class AchievedGoal:
    """``LevelStep -> Tensor``: the achieved goal after the step (for ``GoalReached``)."""

    space: SubgoalSpace

    def __call__(self, step: LevelStep) -> Tensor:
        return self.space.achieved(step.next_observation)


@dataclass(frozen=True)
class CommandedGoal:
    """``LevelStep -> Tensor``: the goal a level pursues (for ``GoalReached``)."""

    slot: GoalSlot

    def __call__(self, step: LevelStep) -> Tensor:
        return self.slot.read_step(step)


def goal_distance(achieved: Tensor, goal: Tensor, norm: float = 2.0) -> Tensor:
    return torch.linalg.vector_norm((achieved - goal).float(), ord=norm, dim=-1)


@dataclass(frozen=True)
class GoalReward:
    """The sparse reward of a goal-conditioned level, as HAC uses: ``reached`` on a step that
    ends within ``tolerance`` of the goal, ``not_reached`` otherwise (default 0 / -1).

    Use it as ``Level.reward`` (per env step, on a :class:`LevelStep`) and, through
    :meth:`transition`, to recompute the reward of relabelled transitions.

    Args:
        space: gives the achieved goal of an observation.
        tolerance: positive distance under which the goal counts as reached, or one per
            component (e.g. HAC's ``(0.01, 0.02)`` for position and velocity;
            :func:`~torchrl_hier.control.within_tolerance`).
        goal: where the goal is read; default the first ``space.dim`` entries of the parent
            action (the subgoal of the level above).
        reached, not_reached: the per-step rewards.
        norm: the ``ord`` of the distance (2, or ``float("inf")``).
    """

    space: SubgoalSpace
    tolerance: Tolerance
    goal: GoalSlot | None = None
    reached: float = 0.0
    not_reached: float = -1.0
    norm: float = 2.0

    def __post_init__(self) -> None:
        tolerance = check_tolerance(self.tolerance, "GoalReward")
        if isinstance(tolerance, tuple) and len(tolerance) != self.space.dim:
            raise ValueError(
                f"GoalReward: {len(tolerance)} tolerances for a goal of {self.space.dim} "
                f"components {self.space.indices}; give one per component (or a number)."
            )
        object.__setattr__(self, "tolerance", tolerance)
        if self.goal is None:
            object.__setattr__(self, "goal", GoalSlot.parent(self.space.dim))
        if self.goal.dim != self.space.dim:
            raise ValueError(
                f"GoalReward: the goal slot has {self.goal.dim} components but the space's "
                f"achieved goal has {self.space.dim}."
            )

    def is_reached(self, achieved: Tensor, goal: Tensor) -> Tensor:
        return within_tolerance(achieved, goal, self.tolerance, self.norm)

    def __call__(self, step: LevelStep) -> Tensor:
        reached = self.is_reached(
            self.space.achieved(step.next_observation), self.goal.read_step(step)
        )
        return torch.where(
            reached,
            torch.as_tensor(self.reached, dtype=step.env_reward.dtype, device=reached.device),
            torch.as_tensor(self.not_reached, dtype=step.env_reward.dtype, device=reached.device),
        )

    def transition(
        self, td: TensorDictBase, gamma: float, level: str = "this level"
    ) -> tuple[Tensor, Tensor]:
        """The reward ``[N, 1]`` and reached flag ``[N, 1]`` of transitions ``td`` for the goal
        in its slot.

        The reward is what the level would have accumulated over the transition's τ steps had
        the goal been reached only at its last step (if at all):
        ``not_reached * sum_{k<τ-1} gamma**k + gamma**(τ-1) * (reached or not_reached)``; for
        τ = 1 this is the per-step reward exactly.
        """
        achieved = self.space.achieved(td.get(("next", OBSERVATION)))
        reached = self.is_reached(achieved, self.goal.read(td, level, next=True)).unsqueeze(-1)
        reward_like = td.get(("next", "reward"))
        tau = td.get("steps_to_next_obs").to(reward_like.dtype).reshape(reached.shape)
        last = torch.where(
            reached,
            torch.as_tensor(self.reached, dtype=reward_like.dtype, device=reached.device),
            torch.as_tensor(self.not_reached, dtype=reward_like.dtype, device=reached.device),
        )
        if gamma == 1.0:
            before = tau - 1
        else:
            before = (1 - gamma ** (tau - 1)) / (1 - gamma)
        reward = self.not_reached * before + gamma ** (tau - 1) * last
        return reward.reshape(reward_like.shape), reached


def check_goal_keys(
    env: EnvBase, level: str, keys: Sequence[str] = ("achieved_goal", "desired_goal")
) -> None:
    """Raises a ``KeyError`` naming the level and the key if ``env`` lacks a goal entry that a
    goal-conditioned level needs (e.g. ``"achieved_goal"``/``"desired_goal"``)."""
    present = set(env.observation_spec.keys(True, True))
    for key in keys:
        if key not in present:
            raise KeyError(
                f"Level {level!r} is goal-conditioned and needs the env entry {key!r}, but the "
                f"env ({type(env).__name__}) has only {sorted(map(str, present))}. Use a "
                "goal-conditioned env (e.g. PointMaze) or put the goal into the observation."
            )


def check_goal_env(
    env: EnvBase,
    level: str,
    space: SubgoalSpace,
    keys: Sequence[str] = ("achieved_goal", "desired_goal"),
    observation_key: str = OBSERVATION,
) -> None:
    """Checks that ``env`` suits a goal-conditioned level: it has the goal entries ``keys``, its
    achieved goal has ``space.dim`` components, and ``space`` projects its observation."""
    check_goal_keys(env, level, keys)
    spec = env.observation_spec
    achieved = spec[keys[0]].shape[len(env.batch_size):]
    if tuple(achieved) != (space.dim,):
        raise ValueError(
            f"Level {level!r}: the env's {keys[0]!r} has shape {tuple(achieved)}, but the "
            f"SubgoalSpace projects {space.dim} components {space.indices}."
        )
    if observation_key not in spec.keys(True, True):
        raise KeyError(
            f"Level {level!r}: the env has no observation {observation_key!r} to project goals from."
        )
    obs_shape = spec[observation_key].shape[len(env.batch_size):]
    space.check(level, obs_shape[-1] if len(obs_shape) else 0, observation_key)
