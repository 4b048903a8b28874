"""Return-control rules: when a level hands control back to the level above.

A rule is called once per env step, batched over env instances, on the :class:`LevelStep` of a
level; it returns a boolean tensor of the env batch shape. It is only consulted for instances
where the level has just completed a transition (the passes mask the rest), and an episode end
always hands control up, whatever the rule says. Rules compose with ``|`` and ``&``::

    rule = GoalReached(tolerance=0.5) | Timeout(10)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor, nn

__all__ = [
    "LevelStep",
    "ReturnControlRule",
    "Timeout",
    "Never",
    "Always",
    "GoalReached",
    "ModuleRule",
    "AnyOf",
    "AllOf",
    "rule_modules",
    "Tolerance",
    "check_tolerance",
    "within_tolerance",
]

#: A goal tolerance: one distance for all components, or one per component (HAC's thresholds,
#: e.g. ``(0.01, 0.02)`` for MountainCar's position and velocity).
Tolerance = float | tuple[float, ...]


def check_tolerance(tolerance, who: str = "This goal check") -> Tolerance:
    """``tolerance`` as a float, or a tuple of floats (one per goal component), all positive;
    raises a clear error naming ``who`` otherwise."""
    if isinstance(tolerance, Tensor):
        tolerance = tolerance.tolist()
    values = tuple(tolerance) if isinstance(tolerance, (list, tuple)) else (tolerance,)
    if not values or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise TypeError(
            f"{who} needs a positive tolerance: a number, or a non-empty sequence of numbers "
            f"(one per goal component), got {tolerance!r}."
        )
    if not all(v > 0 for v in values):
        raise ValueError(
            f"{who} needs a positive tolerance: the goal tolerance must be positive (a positive "
            "goal tolerance is the distance under which the goal counts as reached; a sequence "
            f"gives one per component), got {tolerance!r}."
        )
    if isinstance(tolerance, (list, tuple)):
        return tuple(float(v) for v in values)
    return float(tolerance)


def within_tolerance(
    achieved: Tensor, goal: Tensor, tolerance: Tolerance, norm: float = 2.0
) -> Tensor:
    """Whether ``achieved`` is within ``tolerance`` of ``goal`` (last dim: components).

    A float tolerance bounds ``||achieved - goal||_norm``; a per-component one bounds
    ``||(achieved - goal) / tolerance||_norm`` by 1, so with ``norm=inf`` every component must
    be within its own tolerance (HAC's goal test).
    """
    diff = (achieved - goal).float()
    if isinstance(tolerance, tuple):
        if len(tolerance) != diff.shape[-1]:
            raise ValueError(
                f"A per-component tolerance of {len(tolerance)} entries for goals of "
                f"{diff.shape[-1]} components; give one tolerance per component (or a number)."
            )
        scale = torch.as_tensor(tolerance, dtype=diff.dtype, device=diff.device)
        return torch.linalg.vector_norm(diff / scale, ord=norm, dim=-1) <= 1.0
    return torch.linalg.vector_norm(diff, ord=norm, dim=-1) <= tolerance


class LevelStep:
    """What one level's reward and return-control rules see after an env step, batched.

    Entries are computed on first access, so a rule pays only for what it reads:
    ``observation`` is the level's (mapped) observation when it chose its running action,
    ``next_observation`` its mapped observation after the step, ``action`` its running action,
    ``parent_action`` the action of the level above (``None`` for the top level),
    ``env_reward`` the env reward of the step, ``steps`` the env steps in the running
    transition, ``count`` the transitions the level completed since it took control (this
    step's included; env steps for the lowest level), and ``root``/``next`` the env
    TensorDicts at t and t+1 (built on first access where the caller has none).
    """

    def __init__(
        self,
        index: int,
        name: str,
        root: TensorDictBase | Callable[[], TensorDictBase],
        next: TensorDictBase | Callable[[], TensorDictBase],
        read_observation: Callable[[], Tensor],
        read_next_observation: Callable[[], Tensor],
        read_action: Callable[[], Tensor],
        parent: LevelStep | None,
        env_reward: Tensor,
        steps: Tensor,
    ):
        self.index = index
        self.name = name
        self._root = root
        self._next = next
        self._read_observation = read_observation
        self._read_next_observation = read_next_observation
        self._read_action = read_action
        self.parent = parent
        self.env_reward = env_reward
        self.steps = steps
        self.count: Tensor | None = None

    @cached_property
    def root(self) -> TensorDictBase:
        return self._root if isinstance(self._root, TensorDictBase) else self._root()

    @cached_property
    def next(self) -> TensorDictBase:
        return self._next if isinstance(self._next, TensorDictBase) else self._next()

    @cached_property
    def observation(self) -> Tensor:
        return self._read_observation()

    @cached_property
    def next_observation(self) -> Tensor:
        return self._read_next_observation()

    @cached_property
    def action(self) -> Tensor:
        return self._read_action()

    @property
    def parent_action(self) -> Tensor | None:
        return None if self.parent is None else self.parent.action

    def tensordict(self) -> TensorDict:
        """The step as a level-keyed TensorDict, for module-based rules."""
        data = {
            "observation": self.observation,
            "action": self.action,
            "next": {"observation": self.next_observation},
        }
        if self.parent is not None:
            data["parent_action"] = self.parent_action
            data["next"]["parent_action"] = self.parent_action
        return TensorDict(data, batch_size=self.env_reward.shape)


class ReturnControlRule:
    """Base class: subclasses implement :meth:`__call__`. ``|`` and ``&`` compose rules."""

    def __call__(self, step: LevelStep) -> Tensor:
        raise NotImplementedError

    def __or__(self, other: ReturnControlRule) -> ReturnControlRule:
        return AnyOf((self, _check_rule(other)))

    def __and__(self, other: ReturnControlRule) -> ReturnControlRule:
        return AllOf((self, _check_rule(other)))


def _check_rule(rule: object) -> ReturnControlRule:
    if not isinstance(rule, ReturnControlRule):
        raise TypeError(
            f"Return-control rules compose only with other rules, got {type(rule).__name__}. "
            "Wrap a callable in ModuleRule or subclass ReturnControlRule."
        )
    return rule


@dataclass(frozen=True)
class AnyOf(ReturnControlRule):
    """Hands control back when any of its rules does."""

    rules: tuple[ReturnControlRule, ...]

    def __call__(self, step: LevelStep) -> Tensor:
        out = self.rules[0](step)
        for rule in self.rules[1:]:
            out = out | rule(step)
        return out


@dataclass(frozen=True)
class AllOf(ReturnControlRule):
    """Hands control back when all of its rules do."""

    rules: tuple[ReturnControlRule, ...]

    def __call__(self, step: LevelStep) -> Tensor:
        out = self.rules[0](step)
        for rule in self.rules[1:]:
            out = out & rule(step)
        return out


@dataclass(frozen=True, init=False)
class Timeout(ReturnControlRule):
    """Hands control back after ``transitions`` completed transitions of the level since it
    took control, as HAC's horizon H does. For the lowest level a transition is one env step;
    above it, one transition lasts until the level below hands control back.

    ``Timeout(steps=n)`` is the deprecated spelling of ``Timeout(transitions=n)``.
    """

    transitions: int

    def __init__(self, transitions: int | None = None, *, steps: int | None = None):
        if steps is not None:
            if transitions is not None:
                raise TypeError("Timeout takes transitions= (or the deprecated steps=), not both.")
            warnings.warn(
                "Timeout(steps=...) is deprecated: it counts the level's own completed "
                "transitions (env steps only for the lowest level). Use "
                "Timeout(transitions=...) or Timeout(n).",
                DeprecationWarning,
                stacklevel=2,
            )
            transitions = steps
        if isinstance(transitions, bool) or not isinstance(transitions, int) or transitions < 1:
            raise ValueError(
                "Timeout(transitions) needs a positive int (the level's own completed "
                f"transitions since it took control), got {transitions!r}."
            )
        object.__setattr__(self, "transitions", transitions)

    @property
    def steps(self) -> int:
        """Deprecated name of :attr:`transitions`."""
        return self.transitions

    def __call__(self, step: LevelStep) -> Tensor:
        return step.count >= self.transitions


@dataclass(frozen=True)
class Never(ReturnControlRule):
    """Keeps control until the episode ends."""

    def __call__(self, step: LevelStep) -> Tensor:
        return torch.zeros_like(step.steps, dtype=torch.bool)


@dataclass(frozen=True)
class Always(ReturnControlRule):
    """Hands control back after every completed transition."""

    def __call__(self, step: LevelStep) -> Tensor:
        return torch.ones_like(step.steps, dtype=torch.bool)


@dataclass(frozen=True)
class GoalReached(ReturnControlRule):
    """Hands control back when the achieved goal is within ``tolerance`` of the commanded one.

    Args:
        tolerance: positive distance under which the goal counts as reached, or one per
            component (:func:`within_tolerance`).
        achieved: where the achieved goal is read: a key of the env's next TensorDict, a callable
            ``LevelStep -> Tensor``, or ``None`` for the level's mapped next observation.
        goal: where the commanded goal is read: a key of the env's root TensorDict, a callable,
            or ``None`` for the parent level's action (the usual subgoal set-up).
        norm: the ``ord`` of :func:`torch.linalg.vector_norm` (2, or ``float("inf")``).
    """

    tolerance: Tolerance
    achieved: NestedKey | Callable[[LevelStep], Tensor] | None = None
    goal: NestedKey | Callable[[LevelStep], Tensor] | None = None
    norm: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "tolerance", check_tolerance(self.tolerance, "GoalReached")
        )

    def achieved_goal(self, step: LevelStep) -> Tensor:
        return _read(self.achieved, step, step.next, step.next_observation, "achieved")

    def commanded_goal(self, step: LevelStep) -> Tensor:
        return _read(self.goal, step, step.root, step.parent_action, "goal")

    def __call__(self, step: LevelStep) -> Tensor:
        achieved = self.achieved_goal(step)
        goal = self.commanded_goal(step)
        if achieved.shape != goal.shape:
            raise ValueError(
                f"GoalReached on level {step.name!r}: achieved goal has shape "
                f"{tuple(achieved.shape)} but commanded goal has shape {tuple(goal.shape)}; "
                "pass achieved=/goal= that pick matching components."
            )
        return within_tolerance(achieved, goal, self.tolerance, self.norm)


def _read(
    source: NestedKey | Callable[[LevelStep], Tensor] | None,
    step: LevelStep,
    td: TensorDictBase,
    default: Tensor | None,
    what: str,
) -> Tensor:
    if source is None:
        if default is None:
            raise ValueError(
                f"GoalReached on level {step.name!r}: there is no parent action to use as the "
                f"{what}; pass {what}=<key or callable>."
            )
        return default
    if callable(source):
        return source(step)
    value = td.get(source, None)
    if value is None:
        raise KeyError(
            f"GoalReached on level {step.name!r}: key {source!r} for the {what} goal is not in "
            f"the env TensorDict (keys: {sorted(map(str, td.keys(True, True)))})."
        )
    return value


@dataclass(frozen=True)
class ModuleRule(ReturnControlRule):
    """A rule computed by a module, e.g. a learned termination head.

    The module reads the level's :meth:`LevelStep.tensordict` (``observation``, ``action``,
    ``parent_action``, ``("next", "observation")``) and writes a boolean (or 0/1) entry
    ``out_key``. A callable ``LevelStep -> Tensor`` is accepted too.
    """

    module: TensorDictModuleBase | Callable[[LevelStep], Tensor]
    out_key: NestedKey = "terminate"

    def __call__(self, step: LevelStep) -> Tensor:
        if isinstance(self.module, TensorDictModuleBase):
            out = self.module(step.tensordict())
            if self.out_key not in out.keys(True):
                raise KeyError(
                    f"ModuleRule on level {step.name!r}: the module did not write {self.out_key!r}."
                )
            value = out.get(self.out_key)
        else:
            value = self.module(step)
        return value.reshape(step.steps.shape).bool()


def rule_modules(rule: ReturnControlRule) -> list[nn.Module]:
    """The ``nn.Module``s inside ``rule`` (a :class:`ModuleRule`'s module, through
    :class:`AnyOf`/:class:`AllOf`), in a fixed order: the learned parts of a level's
    return-control rule (termination heads), which its policy does not hold, for saving and
    loading them."""
    if isinstance(rule, (AnyOf, AllOf)):
        return [m for sub in rule.rules for m in rule_modules(sub)]
    if isinstance(rule, ModuleRule) and isinstance(rule.module, nn.Module):
        return [rule.module]
    return []
