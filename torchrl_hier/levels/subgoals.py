"""Subgoal levels (HAC-style) and the goal-conditioned levels below them.

A subgoal level emits a subgoal in a :class:`~torchrl_hier.levels.SubgoalSpace` (a projection of
the observation, absolute or relative to the current position, bounded by the space's spec),
with a TD3 (``TanhDelta``) or SAC (``TanhNormal``) actor and a ``ValueOperator`` critic. What it
hands to the level below is always ``[absolute subgoal (dim), test flag (1)]``:

- a relative subgoal is turned into the absolute target where it is chosen, so the level below
  pursues a fixed target and never needs to know where the subgoal was set;
- the test flag is HAC's subgoal testing: with probability ``test_probability`` the subgoal is
  tested, and every level below then acts without exploration (:class:`GreedyWhenTested`).

A goal-conditioned level reads that target from ``"parent_action"``, is rewarded by
:class:`~torchrl_hier.levels.GoalReward` (``not_reached`` per step, ``reached`` on reaching it)
and hands control back on ``GoalReached(tolerance) | Timeout(horizon)``.

The learner of a subgoal level must see its transitions through
:func:`~torchrl_hier.levels.subgoal_transitions` (hindsight actions, test penalties, and the
subgoal back in the space's frame); the level below through
:class:`~torchrl_hier.levels.HindsightGoals` (goal rewards, termination on reaching, HER).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase, TensorDictSequential
from torch import Tensor
from torchrl.data import Bounded, OneHot, TensorSpec, Unbounded
from torchrl.envs import EnvBase
from torchrl.modules import EGreedyModule
from torchrl.objectives import LossModule

from torchrl_hier.control import (
    GoalReached,
    LevelStep,
    ReturnControlRule,
    Timeout,
    Tolerance,
    check_tolerance,
)
from torchrl_hier.errors import ConfigError
from torchrl_hier.level import PARENT_ACTION, Level
from torchrl_hier.levels.from_config import (
    SUBGOALS,
    LevelContext,
    LevelParts,
    algorithms,
    check_algorithm,
    exploration_settings,
    goal_norm,
    goal_space,
    goal_tolerance,
    pre_tanh_penalty_setting,
    value_range_setting,
)
from torchrl_hier.levels.goals import (
    AchievedGoal,
    CommandedGoal,
    GoalReward,
    GoalSlot,
    SubgoalSpace,
    check_goal_env,
)
from torchrl_hier.levels.hindsight import SCOPES, HindsightGoals, subgoal_transitions
from torchrl_hier.levels.reachability import ACTION_MASK, PlannedSubgoals, ReachabilityMemory
from torchrl_hier.levels.parts import (
    GreedyWhenTested,
    LatticeSubgoal,
    SubgoalTestFlag,
    SubgoalToAbsolute,
    actor_critic_head,
    conditioned_head,
    dqn_head,
)

__all__ = [
    "subgoal_level",
    "planned_subgoal_level",
    "goal_conditioned_level",
    "subgoal_action_spec",
    "goal_control",
    "subgoal_from_config",
    "planned_subgoal_from_config",
    "goal_conditioned_from_config",
]


def subgoal_action_spec(space: SubgoalSpace) -> TensorSpec:
    """The spec of what a subgoal level hands below: ``[absolute subgoal, test flag]``."""
    if space.relative:
        return Unbounded((space.dim + 1,), dtype=torch.float32)
    low = torch.cat([space.spec.space.low, torch.zeros(1)])
    high = torch.cat([space.spec.space.high, torch.ones(1)])
    return Bounded(low, high, (space.dim + 1,), dtype=torch.float32)


def _check_positive_int(level: str, what: str, value) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"Level {level!r}: {what} must be a positive int, got {value!r}.")


def _check_tolerance(level: str, tolerance, dim: int | None = None) -> Tolerance:
    tolerance = check_tolerance(tolerance, f"Level {level!r}")
    if dim is not None and isinstance(tolerance, tuple) and len(tolerance) != dim:
        raise ValueError(
            f"Level {level!r}: {len(tolerance)} goal tolerances for subgoals of {dim} "
            "components; give one per component (or a number)."
        )
    return tolerance


def _check_space(level: str, space, obs_dim: int) -> None:
    if not isinstance(space, SubgoalSpace):
        raise TypeError(
            f"Level {level!r}: expected a SubgoalSpace for its goals, got {type(space).__name__}."
        )
    _check_positive_int(level, "obs_dim", obs_dim)
    space.check(level, obs_dim)


def goal_control(
    space: SubgoalSpace, tolerance: Tolerance, horizon: int | None, norm: float = 2.0
) -> ReturnControlRule:
    """``GoalReached(tolerance) | Timeout(horizon)`` on the achieved goal of ``space`` against the
    subgoal in the parent action."""
    rule = GoalReached(
        tolerance,
        achieved=AchievedGoal(space),
        goal=CommandedGoal(GoalSlot.parent(space.dim)),
        norm=norm,
    )
    return rule if horizon is None else rule | Timeout(horizon)


def _goal_parts(
    name: str,
    obs_dim: int,
    goal_space: SubgoalSpace,
    tolerance: Tolerance,
    horizon: int | None,
    reached: float,
    not_reached: float,
    norm: float,
    intrinsic_reward: bool,
) -> tuple[ReturnControlRule, Callable[[LevelStep], Tensor] | None]:
    _check_space(name, goal_space, obs_dim)
    tolerance = _check_tolerance(name, tolerance, goal_space.dim)
    if horizon is not None:
        _check_positive_int(name, "horizon", horizon)
    control = goal_control(goal_space, tolerance, horizon, norm)
    reward = (
        GoalReward(goal_space, tolerance, reached=reached, not_reached=not_reached, norm=norm)
        if intrinsic_reward
        else None
    )
    return control, reward


class _CheckParentWidth(TensorDictModuleBase):
    """Raises a clear error when the parent action is not ``[subgoal (dim), test flag]``."""

    def __init__(self, name: str, width: int):
        super().__init__()
        self.name = name
        self.width = width
        self.in_keys = [PARENT_ACTION]
        self.out_keys = []

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        got = tensordict.get(PARENT_ACTION).shape[-1]
        if got != self.width:
            raise ValueError(
                f"Level {self.name!r} is goal-conditioned on a subgoal of {self.width - 1} "
                f"components plus a test flag ({self.width} entries), but its "
                f"'parent_action' has {got}. Put a subgoal_level with the same SubgoalSpace "
                "above it."
            )
        return tensordict


def _goal_conditioned_policy(
    name: str, policy: TensorDictModuleBase, goal_space: SubgoalSpace
) -> TensorDictModuleBase:
    return TensorDictSequential(
        _CheckParentWidth(name, goal_space.dim + 1),
        GreedyWhenTested(policy, flag_index=goal_space.dim),
    )


def subgoal_level(
    name: str,
    obs_dim: int,
    space: SubgoalSpace,
    *,
    algorithm: str = "td3",
    test_probability: float = 0.3,
    goal_space: SubgoalSpace | None = None,
    tolerance: Tolerance | None = None,
    horizon: int | None = None,
    reached: float = 0.0,
    not_reached: float = -1.0,
    norm: float = 2.0,
    reward: Callable[[LevelStep], Tensor] | None = None,
    control: ReturnControlRule | None = None,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    noise_std: float = 0.1,
    noise_end: float | None = None,
    eps_init: float = 1.0,
    eps_end: float = 0.05,
    annealing_num_steps: int = 10_000,
    value_range: tuple[float, float] | None = None,
    random_probability: float = 0.0,
    reachability: ReachabilityMemory | None = None,
    pre_tanh_penalty: float = 0.0,
    obs_map: Callable[[Tensor], Tensor] | None = None,
    obs_shape: tuple[int, ...] | int | None = None,
    env: EnvBase | None = None,
    device: torch.device | str | None = None,
) -> tuple[Level, LossModule]:
    """A level emitting subgoals in ``space`` (bounded by ``space.spec``), HAC-style.

    Args:
        name: the level's name.
        obs_dim: size of its (mapped) observation; ``space`` must project it.
        space: the subgoal space (achieved-goal components, bounds, absolute or relative).
        algorithm: ``"td3"`` (``TanhDelta`` actor + Gaussian noise, ``TD3Loss``), ``"sac"``
            (``TanhNormal`` actor, ``SACLoss``) or ``"dqn"``: epsilon-greedy over the points of
            a lattice space (``SubgoalSpace(..., resolution=n)``), ``DQNLoss`` on their
            one-hot.
        test_probability: HAC's subgoal-testing rate lambda (0 disables testing).
        goal_space: for a middle level of a 3+-level hierarchy: the space of the subgoals the
            level above sets for this one; the level is then goal-conditioned like
            :func:`goal_conditioned_level` (needs ``tolerance``; ``horizon``, ``reached``,
            ``not_reached``, ``norm`` as there), and tested subgoals above make it greedy.
        reward, control: override the level's reward / return-control rule.
        env: if given, checked to be goal-conditioned (``"achieved_goal"``/``"desired_goal"``
            entries matching ``space``).
        gamma, hidden, noise_std, noise_end, eps_init, eps_end, annealing_num_steps: learning
            parameters (see :func:`~torchrl_hier.levels.actor_critic_head` and
            :func:`~torchrl_hier.levels.dqn_head`).
        value_range: ``(low, high)`` bounds of its Q-values (HAC bounds them by the returns the
            level can get, e.g. ``(0, 1)`` for a 0/1 goal reward); ``None``: unbounded.
        random_probability: TD3: the share of exploring subgoals drawn uniformly from the
            space (HAC: 0.2) instead of noised (:class:`~torchrl_hier.levels.GaussianOrUniform`).
        reachability: ``algorithm="dqn"`` only: adjacency-constrained subgoals (HRAC-style):
            the level picks, explores and bootstraps only among the lattice subgoals this
            :class:`~torchrl_hier.levels.ReachabilityMemory` has seen reached from the current
            position within its ``steps``; feed the memory whole episodes of the level below
            (``memory.update(episodes)``) before the learners' ``extend``.
        pre_tanh_penalty: TD3: weight of a penalty on the actor's pre-tanh output that keeps
            its subgoals off the space's bounds
            (:class:`~torchrl_hier.levels.PreTanhPenaltyTD3Loss`; 0: stock ``TD3Loss``).

    Returns:
        ``(level, loss)``. The loss trains the actor on subgoals in ``space``'s own frame: feed
        it ``subgoal_transitions(...)`` of the level's transitions, not the raw ones.
    """
    _check_space(name, space, obs_dim)
    if env is not None:
        check_goal_env(env, name, space)
    parent_dim, goal_reward = None, None
    if goal_space is not None:
        if tolerance is None:
            raise ValueError(
                f"Level {name!r} is goal-conditioned (goal_space given) and needs a positive "
                "tolerance= for reaching its goal."
            )
        goal_rule, goal_reward = _goal_parts(
            name, obs_dim, goal_space, tolerance, horizon, reached, not_reached, norm, True
        )
        control = goal_rule if control is None else control
        parent_dim = goal_space.dim + 1
    elif tolerance is not None:
        _check_tolerance(name, tolerance, space.dim)
    if reachability is not None and algorithm != "dqn":
        raise ValueError(
            f"Level {name!r}: reachability= masks the points of a lattice; it needs "
            f"algorithm='dqn', got {algorithm!r}."
        )
    if reachability is not None and reachability.space != space:
        raise ValueError(
            f"Level {name!r}: its reachability memory is over {reachability.space}, not the "
            f"level's subgoal space {space}."
        )
    if algorithm == "dqn":
        if pre_tanh_penalty:
            raise ValueError(
                f"Level {name!r}: pre_tanh_penalty is for a TD3 actor; algorithm='dqn' has none."
            )
        if space.resolution is None:
            raise ValueError(
                f"Level {name!r}: algorithm='dqn' picks subgoals from a lattice; give its "
                "SubgoalSpace a resolution= (points per component)."
            )
        policy, _, loss = dqn_head(
            obs_dim, OneHot(space.n_points, dtype=torch.int64), parent_dim=parent_dim,
            goal_space=goal_space, hidden=hidden, gamma=gamma, eps_init=eps_init,
            eps_end=eps_end, annealing_num_steps=annealing_num_steps, value_range=value_range,
            reachability=reachability, device=device,
        )
        modules = [policy, LatticeSubgoal(space, device)]
    else:
        policy, _, loss = actor_critic_head(
            obs_dim,
            space.spec,
            algorithm=algorithm,
            parent_dim=parent_dim,
            goal_space=goal_space,
            hidden=hidden,
            gamma=gamma,
            noise_std=noise_std,
            noise_end=noise_end,
            annealing_num_steps=annealing_num_steps,
            value_range=value_range,
            random_probability=random_probability,
            pre_tanh_penalty=pre_tanh_penalty,
            device=device,
        )
        modules = [policy]
    if space.relative:
        modules.append(SubgoalToAbsolute(space))
    modules.append(
        SubgoalTestFlag(
            test_probability, parent_flag_index=None if goal_space is None else goal_space.dim
        )
    )
    policy = TensorDictSequential(*modules)
    if goal_space is not None:
        policy = _goal_conditioned_policy(name, policy, goal_space)
    level = Level(
        name,
        policy,
        action_spec=subgoal_action_spec(space),
        obs_map=obs_map,
        obs_shape=obs_shape,
        reward=reward if reward is not None else goal_reward,
        gamma=gamma,
        **({} if control is None else {"control": control}),
    )
    return level, loss


def planned_subgoal_level(
    name: str,
    obs_dim: int,
    memory: ReachabilityMemory,
    goal: Sequence[int],
    *,
    test_probability: float = 0.0,
    eps_init: float = 1.0,
    eps_end: float = 0.05,
    annealing_num_steps: int = 10_000,
    norm: float = 2.0,
    gamma: float = 0.99,
    env: EnvBase | None = None,
    device: torch.device | str | None = None,
) -> Level:
    """A top subgoal level that plans instead of learning a value: graph-based subgoal
    selection (:class:`~torchrl_hier.levels.PlannedSubgoals`) over the chains of subgoals
    ``memory`` has seen reached, towards the env goal at ``goal`` (indices of the
    observation). While exploring it replaces its pick, with probability epsilon (annealed
    from ``eps_init`` to ``eps_end`` over ``annealing_num_steps`` of its choices, as
    :func:`~torchrl_hier.levels.anneal_exploration` steps it), by a uniformly drawn reachable
    subgoal; it hands below ``[absolute subgoal, test flag]`` like :func:`subgoal_level`.
    It has no loss: feed ``memory.update(...)`` with whole episodes of the level below, whose
    learner (``goal_conditioned_level`` + ``HindsightGoals``) is the only one."""
    space = memory.space
    _check_space(name, space, obs_dim)
    if env is not None:
        check_goal_env(env, name, space)
    _check_positive_int(name, "annealing_num_steps", annealing_num_steps)
    spec = OneHot(space.n_points, dtype=torch.int64, device=device)
    modules = [
        PlannedSubgoals(memory, goal, norm=norm),
        EGreedyModule(spec, eps_init=float(eps_init), eps_end=float(eps_end),
                      annealing_num_steps=annealing_num_steps, action_mask_key=ACTION_MASK,
                      device=device),
        LatticeSubgoal(space, device),
    ]
    if space.relative:
        modules.append(SubgoalToAbsolute(space))
    modules.append(SubgoalTestFlag(test_probability))
    return Level(name, TensorDictSequential(*modules), action_spec=subgoal_action_spec(space),
                 gamma=gamma)


def goal_conditioned_level(
    name: str,
    obs_dim: int,
    action_spec: TensorSpec,
    goal_space: SubgoalSpace,
    *,
    tolerance: Tolerance,
    horizon: int | None = 10,
    algorithm: str | None = None,
    reached: float = 0.0,
    not_reached: float = -1.0,
    norm: float = 2.0,
    intrinsic_reward: bool = True,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    eps_init: float = 1.0,
    eps_end: float = 0.05,
    annealing_num_steps: int = 10_000,
    noise_std: float = 0.1,
    noise_end: float | None = None,
    value_range: tuple[float, float] | None = None,
    random_probability: float = 0.0,
    pre_tanh_penalty: float = 0.0,
    obs_map: Callable[[Tensor], Tensor] | None = None,
    obs_shape: tuple[int, ...] | int | None = None,
    lowest: bool = True,
    env: EnvBase | None = None,
    device: torch.device | str | None = None,
) -> tuple[Level, LossModule]:
    """A level pursuing the subgoal of the subgoal level above it.

    Its networks read the observation and ``goal - achieved(observation)``; it is rewarded by
    ``GoalReward`` (``not_reached`` per step, ``reached`` on the step that reaches the subgoal
    within ``tolerance``; ``intrinsic_reward=False`` keeps the env reward) and hands control
    back on ``GoalReached(tolerance) | Timeout(horizon)``. While the subgoal is tested it acts
    greedily.

    Args:
        action_spec: what it emits: the env's unbatched action spec for the lowest level
            (``Categorical``/``OneHot``: DQN; ``Bounded``: TD3 or SAC).
        goal_space: the subgoal space of the level above (its projection gives the achieved
            goal of this level's observation).
        tolerance: positive distance under which the subgoal counts as reached, or one per
            goal component (HAC's thresholds; :func:`~torchrl_hier.control.within_tolerance`).
        horizon: HAC's H, in this level's steps (``None``: only reaching ends a subgoal).
        algorithm: ``"dqn"`` (discrete, default), ``"td3"`` (continuous, default) or ``"sac"``.
        value_range: ``(low, high)`` bounds of its Q-values, e.g. HAC's ``(-horizon, 0)``.
        random_probability: TD3: the share of exploring actions drawn uniformly (HAC: 0.2).
        pre_tanh_penalty: TD3: weight of a penalty on the actor's pre-tanh output that keeps
            it off its tanh bounds (:class:`~torchrl_hier.levels.PreTanhPenaltyTD3Loss`).
        lowest: True when it emits the env action.
        env: if given, checked to be goal-conditioned (``"achieved_goal"``/``"desired_goal"``
            entries matching ``goal_space``).

    Returns:
        ``(level, loss)``; feed the loss ``HindsightGoals(...)`` of its transitions, which sets
        the goal reward and marks reaching the subgoal as terminal (and relabels goals).
    """
    control, reward = _goal_parts(
        name, obs_dim, goal_space, tolerance, horizon, reached, not_reached, norm,
        intrinsic_reward,
    )
    if env is not None:
        check_goal_env(env, name, goal_space)
    parent_dim = goal_space.dim + 1
    policy, loss = conditioned_head(
        name, obs_dim, action_spec, algorithm, parent_dim=parent_dim, goal_space=goal_space,
        hidden=hidden, gamma=gamma, eps_init=eps_init, eps_end=eps_end,
        annealing_num_steps=annealing_num_steps, noise_std=noise_std, noise_end=noise_end,
        value_range=value_range, random_probability=random_probability,
        pre_tanh_penalty=pre_tanh_penalty, device=device,
    )
    level = Level(
        name,
        _goal_conditioned_policy(name, policy, goal_space),
        action_spec=None if lowest else action_spec,
        obs_map=obs_map,
        obs_shape=obs_shape,
        reward=reward,
        control=control,
        gamma=gamma,
    )
    return level, loss


def subgoal_from_config(
    ctx: LevelContext,
    *,
    algorithm: str | None = "td3",
    relative: bool = False,
    test_probability: float = 0.3,
    penalty: float | None = None,
    horizon: int = 8,
    tolerance: Tolerance | None = None,
    hindsight_k: int = 4,
    hindsight_strategy: str = "future",
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    exploration: Mapping[str, Any] | None = None,
    reward: str = "env",
    value_range: Sequence[float] | None = None,
    hindsight_scope: str = "episode",
    pre_tanh_penalty: float = 0.0,
) -> LevelParts:
    """A HAC subgoal level (config family ``subgoal``) proposing positions in the task's goal
    space (TD3 or SAC). At the top it pursues the env goal (relabelled with HER when
    ``hindsight_k > 0``); below another subgoal level it pursues that level's subgoal for
    ``horizon`` of its own subgoals. Its transitions go through ``subgoal_transitions``.

    ``reward`` (top level): ``env`` learns from the env reward, ``goal`` from the goal reward
    HAC gives every level (``task.goal.not_reached`` per env step, ``task.goal.reached`` on
    reaching the env goal within ``task.goal.tolerance``), for tasks whose env reward is not
    that sparse goal reward (e.g. MountainCar's). ``value_range: [low, high]`` bounds its
    Q-values, as HAC does. ``hindsight_scope: subgoal`` (below the top) relabels with goals of
    the same attempt at the subgoal above only (``HindsightGoals(scope=...)``).
    ``pre_tanh_penalty`` (TD3): weight of the penalty that keeps the actor off its tanh bounds
    (:class:`~torchrl_hier.levels.PreTanhPenaltyTD3Loss`; 0, the default: none)."""
    where = ctx.where
    if ctx.lowest:
        raise ConfigError(f"{where} is a subgoal level: it emits subgoals, so it cannot be the lowest level.")
    task = ctx.task
    space = goal_space(task, where, relative=bool(relative))
    algorithm = check_algorithm(where, algorithm, space.spec, ("td3", "sac"))
    ex = exploration_settings(exploration)
    gamma = float(gamma)
    tolerance = goal_tolerance(task, where, tolerance)
    norm = goal_norm(task)
    if reward not in ("env", "goal"):
        raise ConfigError(f"{where}.reward={reward!r}; choose env or goal.")
    if hindsight_scope not in SCOPES or (hindsight_scope != "episode" and ctx.above is None):
        raise ConfigError(
            f"{where}.hindsight_scope={hindsight_scope!r}; choose one of {list(SCOPES)} "
            "('subgoal' only below another subgoal level: the top level pursues the env goal)."
        )
    own_goal_space, goals, env_goal_reward = None, None, None
    k = int(hindsight_k)
    if ctx.above is not None:
        if ctx.above.emits != SUBGOALS:
            raise ConfigError(f"{where} is a subgoal level below the top, so it needs a subgoal level above it.")
        own_goal_space = goal_space(task, where, relative=False)
        goals = HindsightGoals(
            GoalReward(own_goal_space, tolerance, goal=GoalSlot.parent(own_goal_space.dim), norm=norm),
            gamma=gamma, strategy=hindsight_strategy, k=k, level=ctx.name,
            scope=hindsight_scope,
        )
    elif task["goal"].get("desired_indices") is not None:
        # the top level pursues the env's goal: relabel it with achieved positions, with the
        # env's own sparse reward (task.goal.reached / not_reached)
        env_goal_reward = GoalReward(
            goal_space(task, where), goal_tolerance(task, where),
            goal=GoalSlot.observation(tuple(task["goal"]["desired_indices"])),
            reached=float(task["goal"].get("reached", 1.0)),
            not_reached=float(task["goal"].get("not_reached", 0.0)),
            norm=norm,
        )
        if k > 0:
            goals = HindsightGoals(
                env_goal_reward, gamma=gamma, strategy=hindsight_strategy, k=k, level=ctx.name
            )
    if reward == "goal" and env_goal_reward is None:
        raise ConfigError(
            f"{where}.reward=goal rewards the top level for reaching the env goal, but "
            + ("it is not the top level." if ctx.above is not None
               else "the task's goal block has no desired_indices (where the goal sits in "
               "the observation).")
        )
    level, loss = subgoal_level(
        ctx.name, ctx.obs_dim, space, algorithm=algorithm,
        test_probability=float(test_probability), goal_space=own_goal_space,
        tolerance=tolerance if own_goal_space is not None else None,
        horizon=None if own_goal_space is None else int(horizon), norm=norm,
        reward=env_goal_reward if reward == "goal" else None,
        hidden=tuple(hidden), gamma=gamma, noise_std=ex["noise_std"],
        annealing_num_steps=ex["annealing_num_steps"],
        random_probability=ex["random_probability"],
        value_range=value_range_setting(value_range, where),
        pre_tanh_penalty=pre_tanh_penalty_setting(pre_tanh_penalty, where, algorithm),
        device=ctx.device,
    )
    process = functools.partial(
        subgoal_transitions, space=space, tolerance=tolerance,
        penalty=None if penalty is None else float(penalty), goals=goals, norm=norm,
        level=ctx.name,
    )
    return LevelParts(level, loss, process=process, episodic=True, emits=SUBGOALS)


def planned_subgoal_from_config(
    ctx: LevelContext,
    *,
    subgoal_cells: int = 3,
    reach_steps: int = 3,
    reliability: float | None = 0.2,
    refresh: int = 10,
    cell: float | None = None,
    test_probability: float = 0.3,
    gamma: float = 0.99,
    exploration: Mapping[str, Any] | None = None,
) -> LevelParts:
    """A planning top level (config family ``planned_subgoal``, no learner of its own):
    graph-based subgoal selection (:func:`planned_subgoal_level`) over a
    :class:`~torchrl_hier.levels.ReachabilityMemory` that the goal-conditioned level below
    fills with its episodes. Its subgoals are the cells within ``subgoal_cells`` cells of the
    current one (a relative lattice of ``2 * subgoal_cells + 1`` points per component) that
    were reached within ``reach_steps`` env steps; ``cell`` is the size of a cell in goal units
    (default: twice ``task.goal.tolerance``, as on GridMaze, where that tolerance is half a
    cell). ``reliability``: step size of each subgoal's success estimate (paths cost the
    expected number of attempts; ``null``: hops). Needs a task whose goal block has
    ``desired_indices`` (the env goal inside the observation)."""
    where = ctx.where
    if ctx.above is not None or ctx.lowest:
        raise ConfigError(
            f"{where} is a planned subgoal level: it plans towards the env goal, so it must be "
            "the top level, with a goal-conditioned level below it."
        )
    task = ctx.task
    goal_space(task, where)  # checks the goal block
    goal = task["goal"]
    if goal.get("desired_indices") is None:
        raise ConfigError(
            f"{where} plans towards the env goal, but task {task['name']!r} has no "
            "task.goal.desired_indices (where the goal sits in the observation)."
        )
    tolerance = goal_tolerance(task, where)
    if not isinstance(tolerance, float):
        raise ConfigError(f"{where} needs one goal tolerance (a number) for its cells, got {tolerance}.")
    cell = 2.0 * tolerance if cell is None else float(cell)
    _check_positive_int(ctx.name, "subgoal_cells", subgoal_cells)
    n = int(subgoal_cells)
    space = SubgoalSpace(tuple(goal["indices"]), -n * cell, n * cell, relative=True,
                         resolution=2 * n + 1)
    try:
        memory = ReachabilityMemory(
            space, goal["low"], goal["high"], steps=int(reach_steps), cell=cell,
            tolerance=tolerance, norm=goal_norm(task),
            reliability=None if reliability is None else float(reliability),
            refresh=int(refresh), device=ctx.device,
        )
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from err
    ex = exploration_settings(exploration)
    level = planned_subgoal_level(
        ctx.name, ctx.obs_dim, memory, tuple(goal["desired_indices"]),
        test_probability=float(test_probability), eps_init=ex["eps_init"],
        eps_end=ex["eps_end"], annealing_num_steps=ex["annealing_num_steps"],
        norm=goal_norm(task), gamma=float(gamma), device=ctx.device,
    )
    return LevelParts(level, None, frozen=True, emits=SUBGOALS, reachability=memory)


class _FeedReachability:
    """A goal-conditioned level's processing that first records its whole episodes in the
    reachability memory of the subgoal level above."""

    def __init__(self, memory: ReachabilityMemory, achieved: Callable[[Tensor], Tensor],
                 process: Callable[[TensorDictBase], TensorDictBase]):
        self.memory, self.achieved, self.process = memory, achieved, process

    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        self.memory.update(td, self.achieved)
        return self.process(td)


def _without_env_goal(where: str, task: Mapping[str, Any], obs_dim: int) -> tuple[int, ...]:
    """The observation components that are not the env goal (``task.goal.desired_indices``)."""
    goal = task["goal"]
    desired = goal.get("desired_indices")
    if desired is None:
        raise ConfigError(
            f"{where}.observation=state drops the env goal from the observation, but task "
            f"{task['name']!r} has no task.goal.desired_indices; use 'full' or 'achieved'."
        )
    drop = {int(i) % obs_dim for i in desired}
    if drop & {int(i) % obs_dim for i in goal["indices"]}:
        raise ConfigError(
            f"{where}.observation=state: task.goal.indices {list(goal['indices'])} overlap "
            f"the env goal's task.goal.desired_indices {list(desired)}."
        )
    return tuple(i for i in range(obs_dim) if i not in drop)


def goal_conditioned_from_config(
    ctx: LevelContext,
    *,
    algorithm: str | None = "auto",
    observation: str = "full",
    horizon: int | None = None,
    tolerance: Tolerance | None = None,
    reached: float = 0.0,
    not_reached: float = -1.0,
    hindsight_k: int = 4,
    hindsight_strategy: str = "future",
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    exploration: Mapping[str, Any] | None = None,
    value_range: Sequence[float] | None = None,
    hindsight_scope: str = "episode",
    pre_tanh_penalty: float = 0.0,
) -> LevelParts:
    """The lowest level of a subgoal hierarchy (config family ``goal_conditioned``): acts in
    the env to reach the subgoal above within ``horizon`` steps, rewarded ``not_reached`` per
    step and ``reached`` on reaching it, with hindsight goals (``HindsightGoals``).
    ``observation: achieved`` shows it only its achieved goal (e.g. its position), ``state`` the
    observation without the env goal (``task.goal.desired_indices``), ``full`` all of it;
    ``value_range: [low, high]`` bounds its Q-values (HAC: ``[-horizon, 0]``);
    ``hindsight_scope: subgoal`` relabels with goals reached while pursuing the same subgoal
    only, as HAC does (``episode``: anywhere later in the episode); ``pre_tanh_penalty`` (TD3)
    keeps the actor off its tanh bounds (:class:`~torchrl_hier.levels.PreTanhPenaltyTD3Loss`;
    0, the default: none)."""
    where = ctx.where
    if ctx.above is None or ctx.above.emits != SUBGOALS:
        raise ConfigError(f"{where} is goal-conditioned, so it needs a subgoal level right above it.")
    if not ctx.lowest:
        raise ConfigError(
            f"{where} is goal-conditioned, which must be the lowest level; a middle level "
            "pursuing subgoals is a subgoal level below another subgoal level."
        )
    task, env_spec = ctx.task, ctx.env_spec
    space = goal_space(task, where)
    algorithm = check_algorithm(where, algorithm, env_spec, algorithms(env_spec))
    ex = exploration_settings(exploration)
    gamma = float(gamma)
    reached, not_reached = float(reached), float(not_reached)
    norm = goal_norm(task)
    tolerance = goal_tolerance(task, where, tolerance)
    obs_dim, obs_map, obs_shape, own_space = ctx.obs_dim, None, None, space
    if hindsight_scope not in SCOPES:
        raise ConfigError(f"{where}.hindsight_scope={hindsight_scope!r}; choose one of {list(SCOPES)}.")
    if observation == "achieved":
        # the level sees only its achieved goal (e.g. its position): what it needs to reach a
        # subgoal, and it generalises across env goals it does not pursue
        obs_map, obs_shape = space.achieved, (space.dim,)
        own_space = SubgoalSpace(tuple(range(space.dim)), space.low, space.high)
        obs_dim = space.dim
    elif observation == "state":
        # the observation without the env goal: all it needs to move (e.g. position and
        # velocity under force control), still free of the goal it does not pursue
        keep = _without_env_goal(where, task, ctx.obs_dim)
        obs_map = functools.partial(
            torch.index_select, dim=-1, index=torch.tensor(keep, device=ctx.device)
        )
        obs_dim, obs_shape = len(keep), (len(keep),)
        own_space = SubgoalSpace(
            tuple(keep.index(i % ctx.obs_dim) for i in space.indices), space.low, space.high
        )
    elif observation != "full":
        raise ConfigError(
            f"{where}.observation={observation!r}; choose 'full', 'achieved' or 'state'."
        )
    level, loss = goal_conditioned_level(
        ctx.name, obs_dim, env_spec, own_space, tolerance=tolerance,
        horizon=None if horizon is None else int(horizon),
        algorithm=algorithm, reached=reached, not_reached=not_reached, norm=norm,
        hidden=tuple(hidden), gamma=gamma, eps_init=ex["eps_init"], eps_end=ex["eps_end"],
        annealing_num_steps=ex["annealing_num_steps"], noise_std=ex["noise_std"],
        value_range=value_range_setting(value_range, where),
        random_probability=ex["random_probability"],
        pre_tanh_penalty=pre_tanh_penalty_setting(pre_tanh_penalty, where, algorithm),
        obs_map=obs_map, obs_shape=obs_shape, lowest=True, device=ctx.device,
    )
    goals = HindsightGoals(
        GoalReward(own_space, tolerance, reached=reached, not_reached=not_reached, norm=norm),
        gamma=gamma, strategy=hindsight_strategy, k=int(hindsight_k), level=ctx.name,
        scope=hindsight_scope,
    )
    memory = ctx.above.reachability
    process = goals if memory is None else _FeedReachability(memory, own_space.achieved, goals)
    return LevelParts(level, loss, process=process, episodic=True)
