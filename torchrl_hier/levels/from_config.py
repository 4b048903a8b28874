"""What a level family's config factory gets and returns, and the config helpers the
ready-made families share.

A hierarchy config names, per level, a factory with Hydra's ``_target_`` (and ``_partial_:
true``): Hydra's ``instantiate`` binds the level's config values, and the builder calls the
result with a ``LevelContext`` (the run-time objects: env, its specs, the device, the level
above). The factory returns ``LevelParts``: the level, its loss and how its transitions are
prepared. A new level family is such a factory plus a YAML file; nothing central changes::

    def my_family(ctx: LevelContext, *, hidden=(64, 64), gamma=0.99) -> LevelParts:
        policy, _, loss = dqn_head(ctx.obs_dim, ctx.env_spec, hidden=hidden, gamma=gamma,
                                   device=ctx.device)
        return LevelParts(Level(ctx.name, policy, gamma=gamma), loss)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tensordict import TensorDictBase
from torchrl.data import Bounded, Categorical, OneHot, TensorSpec
from torchrl.envs import EnvBase
from torchrl.objectives import LossModule

from torchrl_hier.control import Tolerance, check_tolerance
from torchrl_hier.errors import ConfigError
from torchrl_hier.level import Level
from torchrl_hier.levels.goals import GoalReward, GoalSlot, SubgoalSpace
from torchrl_hier.levels.hindsight import HindsightGoals
from torchrl_hier.levels.on_policy import ON_POLICY_ALGORITHMS, on_policy_level

__all__ = [
    "ACTIONS",
    "OPTIONS",
    "SUBGOALS",
    "LevelContext",
    "LevelParts",
    "as_container",
    "exploration_settings",
    "check_algorithm",
    "algorithms",
    "goal_space",
    "goal_norm",
    "goal_tolerance",
    "value_range_setting",
    "pre_tanh_penalty_setting",
    "env_goal_hindsight",
    "on_policy_parts",
]

#: What a level emits (``LevelParts.emits``), for the checks of the level below it.
ACTIONS, OPTIONS, SUBGOALS = "actions", "options", "subgoals"


@dataclass
class LevelParts:
    """One built level: its ``Level``, its loss, and how its transitions are prepared.

    ``process`` relabels its transitions (hindsight); ``episodic`` levels get whole episodes;
    ``on_policy`` levels learn from their trajectories (``OnPolicyLearner``); ``emits`` says
    what its actions are to the level below (``"options"``, ``"subgoals"`` or ``"actions"``);
    ``reachability`` is a subgoal level's ``ReachabilityMemory``, which the goal-conditioned
    level below feeds with its episodes.
    A ``frozen`` level has no learner of its own (``loss`` None, no ``learner`` block): its
    networks are trained by another level's loss (option-critic's ``Q_Omega``) or not at all.
    """

    level: Level
    loss: LossModule | None
    process: Callable[[TensorDictBase], TensorDictBase] | None = None
    episodic: bool = False
    on_policy: bool = False
    emits: str = ACTIONS
    frozen: bool = False
    #: a subgoal level's reachability memory (``ReachabilityMemory``), for the level below to
    #: feed with its whole episodes
    reachability: Any = None

    def __post_init__(self) -> None:
        if (self.loss is None) != self.frozen:
            raise ValueError(
                f"Level {self.level.name!r}: a level has a loss unless it is frozen (no learner "
                f"of its own); got loss={type(self.loss).__name__}, frozen={self.frozen}."
            )


@dataclass(frozen=True)
class LevelContext:
    """The run-time objects a level factory builds from: the level's name and place, the task
    config (its ``goal`` block), the env, its flat observation size and action spec, the
    device, and the level right above (``None`` for the top)."""

    name: str
    index: int
    n_levels: int
    task: Mapping[str, Any]
    env: EnvBase
    obs_dim: int
    env_spec: TensorSpec
    device: torch.device
    above: LevelParts | None = None

    @property
    def lowest(self) -> bool:
        """Whether the level emits the env's actions."""
        return self.index == self.n_levels - 1

    @property
    def where(self) -> str:
        """The level's config key, for error messages."""
        return f"hierarchy.levels.{self.name}"


def as_container(node: Any) -> Any:
    """``node`` as plain Python (an OmegaConf node resolved), else as it is."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def exploration_settings(exploration: Mapping[str, Any] | None) -> dict[str, Any]:
    """A level's ``exploration`` block with its defaults filled in."""
    ex = dict(as_container(exploration) or {})
    return {
        "eps_init": float(ex.get("eps_init", 1.0)),
        "eps_end": float(ex.get("eps_end", 0.05)),
        "annealing_num_steps": int(ex.get("annealing_num_steps", 10_000)),
        "noise_std": float(ex.get("noise_std", 0.1)),
        "random_probability": float(ex.get("random_probability", 0.0)),
    }


def check_algorithm(
    where: str, algorithm: str | None, spec: TensorSpec, options: tuple[str, ...]
) -> str:
    """The level's algorithm (``auto``/None: the first of ``options``), checked to fit."""
    if algorithm in (None, "auto"):
        return options[0]
    if algorithm not in options:
        kind = "discrete" if isinstance(spec, (Categorical, OneHot)) else "continuous"
        raise ConfigError(
            f"{where}.algorithm={algorithm!r} does not fit its {kind} actions "
            f"({type(spec).__name__}); choose one of {list(options)} (or auto)."
        )
    return algorithm


def algorithms(spec: TensorSpec, option_level: bool = False) -> tuple[str, ...]:
    """The algorithms a ready-made level acting in ``spec`` can use (the default first)."""
    if isinstance(spec, (Categorical, OneHot)):
        return (("dqn", "sac") if option_level else ("dqn",)) + ON_POLICY_ALGORITHMS
    if isinstance(spec, Bounded):
        return ("td3", "sac") + ON_POLICY_ALGORITHMS
    raise ConfigError(
        f"The task's action spec {type(spec).__name__} is neither discrete (Categorical/OneHot) "
        "nor Bounded; the ready-made levels cannot act in it."
    )


def goal_space(task: Mapping[str, Any], where: str, relative: bool = False) -> SubgoalSpace:
    """The subgoal space of the task's ``goal`` block (``relative``: displacements within
    ``relative_range`` of its bounds)."""
    goal = task.get("goal")
    if goal is None:
        raise ConfigError(
            f"{where} needs subgoals, but task {task['name']!r} has no 'goal' block (achieved-goal "
            "indices, bounds, tolerance). Pick a goal task (task=GridMaze-FourRooms, "
            "task=PointMaze-UMaze, ...) or add task.goal."
        )
    low, high = goal["low"], goal["high"]
    if relative:
        span = [h - l for l, h in zip(_as_list(low, goal), _as_list(high, goal))]
        scale = float(goal.get("relative_range", 0.5))
        low, high = [-scale * s for s in span], [scale * s for s in span]
    return SubgoalSpace(tuple(goal["indices"]), low, high, relative=relative)


def goal_norm(task: Mapping[str, Any]) -> float:
    """The distance norm of goal checks (``task.goal.norm``: 2, or ``.inf`` for "same cell")."""
    return float(task["goal"].get("norm", 2.0))


def goal_tolerance(task: Mapping[str, Any], where: str, override: Any = None) -> Tolerance:
    """The goal tolerance: ``override`` if given, else ``task.goal.tolerance``; a number, or a
    list with one per goal component (e.g. MountainCar's position and velocity)."""
    value = as_container(task["goal"]["tolerance"] if override is None else override)
    try:
        tolerance = check_tolerance(value, where)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from err
    n = len(task["goal"]["indices"])
    if isinstance(tolerance, tuple) and len(tolerance) != n:
        raise ConfigError(
            f"{where}: {len(tolerance)} goal tolerances for a goal of {n} components "
            f"(task.goal.indices); give one per component, or a number."
        )
    return tolerance


def value_range_setting(value: Any, where: str) -> tuple[float, float] | None:
    """A level's ``value_range`` setting: ``null`` (unbounded Q-values) or ``[low, high]``."""
    value = as_container(value)
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ConfigError(f"{where}.value_range={value!r}; give [low, high] or null.")
    low, high = float(value[0]), float(value[1])
    if not low < high:
        raise ConfigError(f"{where}.value_range={value!r} needs low < high.")
    return low, high


def pre_tanh_penalty_setting(value: Any, where: str, algorithm: str) -> float:
    """A TD3 level's ``pre_tanh_penalty`` setting: a number >= 0 (0: none), TD3 only."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{where}.pre_tanh_penalty={value!r}; give a number >= 0 (0: none).")
    if value and algorithm != "td3":
        raise ConfigError(
            f"{where}.pre_tanh_penalty={value!r} penalises a TD3 actor's pre-tanh output; "
            f"algorithm={algorithm!r} has none. Set it to 0."
        )
    return float(value)


def _as_list(value: Any, goal: Mapping[str, Any]) -> list[float]:
    n = len(goal["indices"])
    value = as_container(value)
    return list(value) if isinstance(value, (list, tuple)) else [float(value)] * n


def env_goal_hindsight(
    part: LevelParts, ctx: LevelContext, k: int, strategy: str = "future"
) -> LevelParts:
    """HER on the env's own goal for a level rewarded by the env (``k > 0`` on a task with a
    ``goal`` block): copies of its transitions with the goal in the observation replaced by
    positions reached later, rewarded and terminated as the env would have."""
    goal = ctx.task.get("goal")
    if int(k or 0) <= 0 or goal is None or goal.get("desired_indices") is None:
        return part
    reward = GoalReward(
        goal_space(ctx.task, ctx.where), goal_tolerance(ctx.task, ctx.where),
        goal=GoalSlot.observation(tuple(goal["desired_indices"])),
        reached=float(goal.get("reached", 1.0)), not_reached=float(goal.get("not_reached", 0.0)),
        norm=goal_norm(ctx.task),
    )
    part.process = HindsightGoals(
        reward, gamma=part.level.gamma, k=int(k), strategy=strategy, level=ctx.name,
    )
    part.episodic = True
    return part


def on_policy_parts(
    ctx: LevelContext, spec: TensorSpec, algorithm: str, *, hidden: Any, gamma: float,
    hindsight_k: int, clip_epsilon: float, entropy_coeff: float, critic_coeff: float,
    emits: str = ACTIONS, **kwargs: Any,
) -> LevelParts:
    """An on-policy level (``on_policy_level``, ``algorithm`` ppo or a2c) emitting ``spec``,
    learning from its own trajectories; ``kwargs`` go to ``on_policy_level``."""
    if int(hindsight_k or 0) > 0 and ctx.task.get("goal") is not None:
        raise ConfigError(
            f"{ctx.where}.algorithm={algorithm!r} learns on-policy from its own trajectories, "
            "but hindsight_k > 0 asks for relabelled (off-policy) copies of its transitions: "
            f"set {ctx.where}.hindsight_k=0."
        )
    level, loss = on_policy_level(
        ctx.name, ctx.obs_dim, spec, algorithm=algorithm, hidden=tuple(hidden),
        gamma=float(gamma), clip_epsilon=float(clip_epsilon),
        entropy_coeff=float(entropy_coeff), critic_coeff=float(critic_coeff),
        device=ctx.device, **kwargs,
    )
    return LevelParts(level, loss, on_policy=True, emits=emits)
