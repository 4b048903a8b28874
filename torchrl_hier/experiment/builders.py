"""Builds an experiment from a config: the task env, the hierarchy's levels and their learners,
the per-level transition pipeline (hindsight where a level needs it) and the collector.

Used by :mod:`torchrl_hier.train` and :mod:`torchrl_hier.evaluate`, and usable on its own with
any ``DictConfig``/dict shaped like ``torchrl_hier/conf``::

    exp = build_experiment(cfg)              # env, hierarchy, learners, pipeline
    collector = make_collector(cfg, exp, total_frames=100_000)
    for batch in collector:
        data = exp.pipeline(batch)           # {level: transitions ready for its learner}
        exp.anneal(exp.counts(batch, data))  # exploration schedules, in each level's steps
        exp.learners.extend(data)
        exp.learners.update()

A hierarchy config lists its levels, highest first, as a mapping ``name -> level config``; each
level has a ``kind`` (:data:`KINDS`), an ``algorithm`` and its learner settings. A config with
``kind: ham`` builds a HAM instead (the Taxi machines of :mod:`torchrl_hier.ham.taxi`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector
from torchrl.data import Bounded, Categorical, OneHot, TensorSpec
from torchrl.envs import Compose, EnvBase, RewardSum, Transform, TransformedEnv
from torchrl.objectives import LossModule

from torchrl_hier.collectors import MultiSyncCollector
from torchrl_hier.control import Timeout
from torchrl_hier.envs import make_env
from torchrl_hier.hierarchy import Hierarchy, usable_device
from torchrl_hier.learning import HierarchyLearner, LevelLearner, OnPolicyLearner
from torchrl_hier.level import Level
from torchrl_hier.levels import (
    GoalReward,
    GoalSlot,
    HindsightGoals,
    LevelEpisodes,
    SubgoalSpace,
    actor_critic_head,
    anneal_exploration,
    dqn_head,
    goal_conditioned_level,
    option_conditioned_level,
    option_level,
    option_spec,
    subgoal_level,
    subgoal_transitions,
)
from torchrl_hier.levels import ON_POLICY_ALGORITHMS, on_policy_level
from torchrl_hier.transitions import level_trajectories, level_transitions

__all__ = [
    "KINDS",
    "COLLECTORS",
    "Experiment",
    "TransitionPipeline",
    "ConfigError",
    "resolve_device",
    "make_task_env",
    "build_levels",
    "build_experiment",
    "compile_learners",
    "make_collector",
    "episode_stats",
    "taxi_env",
]

#: Level kinds a hierarchy config may use.
KINDS = ("flat", "option", "option_conditioned", "subgoal", "goal_conditioned")
#: Collector names (``collector.name``): TorchRL's ``Collector`` (ex-``SyncDataCollector``),
#: ``MultiSyncCollector`` (ex-``MultiSyncDataCollector``) and ``RayCollector``.
COLLECTORS = ("sync", "multi_sync", "ray")
#: The entry where the env's episode return is summed (TorchRL's ``RewardSum``).
EPISODE_RETURN = "episode_reward"
SUCCESS = "is_success"


class ConfigError(ValueError):
    """A config value that cannot work; the message names the config key and how to fix it."""


# ----------------------------------------------------------------------------- devices
def resolve_device(spec: str | torch.device) -> torch.device:
    """The torch device ``spec`` names, checked to exist on this machine (before any work)."""
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(
            f"device={spec!r} is not a device torch knows ({err}). Use device=cpu, device=cuda "
            "or device=cuda:<index>."
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        try:
            return usable_device(device)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device={spec!r} but MPS is not available here. Use device=cpu.")
        return device
    raise ConfigError(
        f"device={spec!r}: device type {device.type!r} is not supported here; use cpu or cuda."
    )


# ----------------------------------------------------------------------------- task
def _container(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def make_task_env(
    task: Mapping[str, Any], n_envs: int, device: torch.device | str, seed: int
) -> EnvBase:
    """The task ``task.name`` (built-in name or gymnasium id) with ``n_envs`` instances."""
    kwargs = dict(_container(task.get("kwargs")) or {})
    if not (isinstance(n_envs, int) and n_envs >= 1):
        raise ConfigError(f"task.n_envs must be a positive int, got {n_envs!r}.")
    factory = task.get("factory")
    if factory:
        return _import(factory, "task.factory")(
            batch_size=torch.Size([n_envs]), device=torch.device(device), seed=seed, **kwargs
        )
    try:
        return make_env(task["name"], batch_size=[n_envs], device=device, seed=seed, **kwargs)
    except TypeError as err:
        raise ConfigError(
            f"task.kwargs={kwargs} do not fit task {task['name']!r}: {err}. Fix or remove them."
        ) from err


def _import(path: str, key: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function."""
    import importlib

    module, _, attr = str(path).partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"{key}={path!r} is not an importable 'module:function': {err}") from err


def _spec_dim(env: EnvBase, key: str = "observation") -> int:
    spec = env.observation_spec.get(key, None)
    if spec is None:
        raise ConfigError(
            f"The task has no {key!r} entry (it has {sorted(map(str, env.observation_spec.keys(True, True)))}); "
            "hierarchies here read a flat 'observation'."
        )
    shape = spec.shape[len(env.batch_size):]
    if len(shape) != 1:
        raise ConfigError(
            f"The task's {key!r} has shape {tuple(shape)}; the ready-made levels need a flat "
            "vector observation. Flatten it with a transform (e.g. FlattenObservation)."
        )
    return int(shape[0])


def _goal_space(task: Mapping[str, Any], where: str, relative: bool = False) -> SubgoalSpace:
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


def _norm(task: Mapping[str, Any]) -> float:
    """The distance norm of goal checks (``task.goal.norm``: 2, or ``.inf`` for "same cell")."""
    return float(task["goal"].get("norm", 2.0))


def _as_list(value: Any, goal: Mapping[str, Any]) -> list[float]:
    n = len(goal["indices"])
    value = _container(value)
    return list(value) if isinstance(value, (list, tuple)) else [float(value)] * n


# ----------------------------------------------------------------------------- levels
@dataclass
class LevelParts:
    """One built level: its :class:`Level`, its loss, and how its transitions are prepared."""

    level: Level
    loss: LossModule
    config: Mapping[str, Any]
    process: Callable[[TensorDictBase], TensorDictBase] | None = None
    episodic: bool = False
    on_policy: bool = False  # learns from its trajectories (algorithm ppo / a2c)


def _hidden(lcfg: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(h) for h in _container(lcfg.get("hidden", (64, 64))))


def _explore(lcfg: Mapping[str, Any]) -> dict[str, Any]:
    ex = dict(_container(lcfg.get("exploration")) or {})
    return {
        "eps_init": float(ex.get("eps_init", 1.0)),
        "eps_end": float(ex.get("eps_end", 0.05)),
        "annealing_num_steps": int(ex.get("annealing_num_steps", 10_000)),
        "noise_std": float(ex.get("noise_std", 0.1)),
    }


def _check_algorithm(
    name: str, algorithm: str | None, spec: TensorSpec, options: tuple[str, ...]
) -> str:
    """The level's algorithm (``auto``/None: the first of ``options``), checked to fit."""
    if algorithm in (None, "auto"):
        return options[0]
    if algorithm not in options:
        kind = "discrete" if isinstance(spec, (Categorical, OneHot)) else "continuous"
        raise ConfigError(
            f"hierarchy.levels.{name}.algorithm={algorithm!r} does not fit its {kind} actions "
            f"({type(spec).__name__}); choose one of {list(options)} (or auto)."
        )
    return algorithm


def _algorithms(spec: TensorSpec, option_level: bool = False) -> tuple[str, ...]:
    if isinstance(spec, (Categorical, OneHot)):
        return (("dqn", "sac") if option_level else ("dqn",)) + ON_POLICY_ALGORITHMS
    if isinstance(spec, Bounded):
        return ("td3", "sac") + ON_POLICY_ALGORITHMS
    raise ConfigError(
        f"The task's action spec {type(spec).__name__} is neither discrete (Categorical/OneHot) "
        "nor Bounded; the ready-made levels cannot act in it."
    )


def _env_goal_hindsight(part: LevelParts, task: Mapping[str, Any]) -> LevelParts:
    """HER on the env's own goal for a level rewarded by the env (``hindsight_k > 0`` on a
    task with a ``goal`` block): copies of its transitions with the goal in the observation
    replaced by positions reached later, rewarded and terminated as the env would have."""
    k = int(part.config.get("hindsight_k", 0) or 0)
    goal = task.get("goal")
    if k <= 0 or goal is None or goal.get("desired_indices") is None:
        return part
    name = part.level.name
    reward = GoalReward(
        _goal_space(task, f"hierarchy.levels.{name}"), float(goal["tolerance"]),
        goal=GoalSlot.observation(tuple(goal["desired_indices"])),
        reached=float(goal.get("reached", 1.0)), not_reached=float(goal.get("not_reached", 0.0)),
        norm=_norm(task),
    )
    part.process = HindsightGoals(
        reward, gamma=part.level.gamma, k=k,
        strategy=part.config.get("hindsight_strategy", "future"), level=name,
    )
    part.episodic = True
    return part


def _on_policy(
    name: str, lcfg: Mapping[str, Any], task: Mapping[str, Any], obs_dim: int, spec: TensorSpec,
    algorithm: str, device, **kwargs: Any,
) -> LevelParts:
    """An on-policy level (:func:`on_policy_level`, ``algorithm`` ppo or a2c), learning from its
    own trajectories."""
    if int(lcfg.get("hindsight_k", 0) or 0) > 0 and task.get("goal") is not None:
        raise ConfigError(
            f"hierarchy.levels.{name}.algorithm={algorithm!r} learns on-policy from its own "
            "trajectories, but hindsight_k > 0 asks for relabelled (off-policy) copies of its "
            f"transitions: set hierarchy.levels.{name}.hindsight_k=0."
        )
    level, loss = on_policy_level(
        name, obs_dim, spec, algorithm=algorithm, hidden=_hidden(lcfg),
        gamma=float(lcfg.get("gamma", 0.99)),
        clip_epsilon=float(lcfg.get("clip_epsilon", 0.2)),
        entropy_coeff=float(lcfg.get("entropy_coeff", 0.01)),
        critic_coeff=float(lcfg.get("critic_coeff", 0.5)), device=device, **kwargs,
    )
    return LevelParts(level, loss, lcfg, on_policy=True)


def _flat_level(name, lcfg, task, obs_dim, env_spec, device) -> LevelParts:
    algorithm = _check_algorithm(name, lcfg.get("algorithm"), env_spec, _algorithms(env_spec))
    if algorithm in ON_POLICY_ALGORITHMS:
        return _on_policy(name, lcfg, task, obs_dim, env_spec, algorithm, device)
    ex = _explore(lcfg)
    gamma = float(lcfg.get("gamma", 0.99))
    if algorithm == "dqn":
        policy, _, loss = dqn_head(
            obs_dim, env_spec, hidden=_hidden(lcfg), gamma=gamma, eps_init=ex["eps_init"],
            eps_end=ex["eps_end"], annealing_num_steps=ex["annealing_num_steps"], device=device,
        )
    else:
        policy, _, loss = actor_critic_head(
            obs_dim, env_spec, algorithm=algorithm, hidden=_hidden(lcfg), gamma=gamma,
            noise_std=ex["noise_std"], annealing_num_steps=ex["annealing_num_steps"],
            device=device,
        )
    return LevelParts(Level(name, policy, gamma=gamma), loss, lcfg)


def build_levels(
    hierarchy_cfg: Mapping[str, Any],
    task: Mapping[str, Any],
    env: EnvBase,
    device: torch.device,
) -> list[LevelParts]:
    """The levels of ``hierarchy_cfg.levels`` (highest first), with their losses and
    transition processing, for ``env`` (which must be the untransformed task env)."""
    levels_cfg = hierarchy_cfg.get("levels")
    if not levels_cfg:
        raise ConfigError("hierarchy.levels is empty; a hierarchy needs at least one level.")
    names = list(levels_cfg.keys())
    obs_dim = _spec_dim(env)
    env_spec = env.full_action_spec_unbatched[env.action_key]
    parts: list[LevelParts] = []
    n = len(names)
    for i, name in enumerate(names):
        lcfg = levels_cfg[name]
        kind = lcfg.get("kind")
        where = f"hierarchy.levels.{name}"
        if kind not in KINDS:
            raise ConfigError(f"{where}.kind={kind!r} is not a level kind; choose one of {list(KINDS)}.")
        lowest = i == n - 1
        parent = parts[-1] if parts else None
        parent_kind = None if parent is None else parent.config.get("kind")
        ex = _explore(lcfg)
        gamma = float(lcfg.get("gamma", 0.99))
        algorithm = lcfg.get("algorithm")
        if kind == "flat":
            if n != 1:
                raise ConfigError(f"{where}.kind='flat' is for a one-level hierarchy; this one has {n}.")
            parts.append(_env_goal_hindsight(_flat_level(name, lcfg, task, obs_dim, env_spec, device), task))
        elif kind == "option":
            if lowest:
                raise ConfigError(f"{where}.kind='option' emits options, so it cannot be the lowest level.")
            if parent is not None:
                raise ConfigError(
                    f"{where}.kind='option' must be the top level; below another level use "
                    "kind='option_conditioned' with n_options."
                )
            n_options = int(lcfg.get("n_options", 4))
            spec = option_spec(n_options)
            algorithm = _check_algorithm(name, algorithm, spec, _algorithms(spec, option_level=True))
            if algorithm in ON_POLICY_ALGORITHMS:
                parts.append(_on_policy(name, lcfg, task, obs_dim, spec, algorithm, device, lowest=False))
                continue
            level, loss = option_level(
                name, obs_dim, n_options, algorithm=algorithm, hidden=_hidden(lcfg), gamma=gamma,
                eps_init=ex["eps_init"], eps_end=ex["eps_end"],
                annealing_num_steps=ex["annealing_num_steps"], device=device,
            )
            parts.append(_env_goal_hindsight(LevelParts(level, loss, lcfg), task))
        elif kind == "option_conditioned":
            if parent_kind not in ("option", "option_conditioned"):
                raise ConfigError(
                    f"{where}.kind='option_conditioned' needs an option level above it "
                    f"(kind 'option' or 'option_conditioned'), got {parent_kind!r}."
                )
            parent_options = parent.level.action_spec.space.n
            spec = env_spec if lowest else option_spec(int(lcfg.get("n_options", 4)))
            algorithm = _check_algorithm(name, algorithm, spec, _algorithms(spec))
            timeout = lcfg.get("timeout", 8)
            if algorithm in ON_POLICY_ALGORITHMS:
                if timeout is None:
                    raise ConfigError(
                        f"{where}.timeout=null: an on-policy option-conditioned level ends its "
                        "options by timeout; give it a number of its steps."
                    )
                parts.append(_on_policy(
                    name, lcfg, task, obs_dim, spec, algorithm, device, parent_dim=parent_options,
                    lowest=lowest, control=Timeout(int(timeout)),
                ))
                continue
            level, loss = option_conditioned_level(
                name, obs_dim, parent_options, spec, algorithm=algorithm,
                timeout=None if timeout is None else int(timeout), hidden=_hidden(lcfg),
                gamma=gamma, eps_init=ex["eps_init"], eps_end=ex["eps_end"],
                annealing_num_steps=ex["annealing_num_steps"], noise_std=ex["noise_std"],
                lowest=lowest, device=device,
            )
            parts.append(_env_goal_hindsight(LevelParts(level, loss, lcfg), task))
        elif kind == "subgoal":
            parts.append(_subgoal(name, lcfg, task, env, obs_dim, parent, lowest, device))
        else:  # goal_conditioned
            parts.append(_goal_conditioned(name, lcfg, task, env, obs_dim, env_spec, parent, lowest, device))
    return parts


def _subgoal(name, lcfg, task, env, obs_dim, parent, lowest, device) -> LevelParts:
    where = f"hierarchy.levels.{name}"
    if lowest:
        raise ConfigError(f"{where}.kind='subgoal' emits subgoals, so it cannot be the lowest level.")
    space = _goal_space(task, where, relative=bool(lcfg.get("relative", False)))
    algorithm = _check_algorithm(name, lcfg.get("algorithm"), space.spec, ("td3", "sac"))
    ex = _explore(lcfg)
    gamma = float(lcfg.get("gamma", 0.99))
    tolerance = float(lcfg.get("tolerance", task["goal"]["tolerance"]))
    norm = _norm(task)
    goal_space, goals = None, None
    k = int(lcfg.get("hindsight_k", 4))
    strategy = lcfg.get("hindsight_strategy", "future")
    if parent is not None:
        if parent.config.get("kind") != "subgoal":
            raise ConfigError(f"{where}.kind='subgoal' below the top needs a subgoal level above it.")
        goal_space = _goal_space(task, where, relative=False)
        goals = HindsightGoals(
            GoalReward(goal_space, tolerance, goal=GoalSlot.parent(goal_space.dim), norm=norm),
            gamma=gamma, strategy=strategy, k=k, level=name,
        )
    elif task["goal"].get("desired_indices") is not None and k > 0:
        # the top level pursues the env's goal: relabel it with achieved positions, with the
        # env's own sparse reward (task.goal.reached / not_reached)
        desired = tuple(task["goal"]["desired_indices"])
        goals = HindsightGoals(
            GoalReward(
                _goal_space(task, where), float(task["goal"]["tolerance"]),
                goal=GoalSlot.observation(desired),
                reached=float(task["goal"].get("reached", 1.0)),
                not_reached=float(task["goal"].get("not_reached", 0.0)),
                norm=norm,
            ),
            gamma=gamma, strategy=strategy, k=k, level=name,
        )
    level, loss = subgoal_level(
        name, obs_dim, space, algorithm=algorithm,
        test_probability=float(lcfg.get("test_probability", 0.3)), goal_space=goal_space,
        tolerance=tolerance if goal_space is not None else None,
        horizon=None if goal_space is None else int(lcfg.get("horizon", 8)), norm=norm,
        hidden=_hidden(lcfg), gamma=gamma, noise_std=ex["noise_std"],
        annealing_num_steps=ex["annealing_num_steps"], device=device,
    )
    penalty = lcfg.get("penalty")
    process = functools.partial(
        subgoal_transitions, space=space, tolerance=tolerance,
        penalty=None if penalty is None else float(penalty), goals=goals, norm=norm, level=name,
    )
    return LevelParts(level, loss, lcfg, process=process, episodic=True)


def _goal_conditioned(name, lcfg, task, env, obs_dim, env_spec, parent, lowest, device) -> LevelParts:
    where = f"hierarchy.levels.{name}"
    if parent is None or parent.config.get("kind") != "subgoal":
        raise ConfigError(f"{where}.kind='goal_conditioned' needs a subgoal level right above it.")
    if not lowest:
        raise ConfigError(
            f"{where}.kind='goal_conditioned' must be the lowest level; a middle level pursuing "
            "subgoals is kind='subgoal' below another subgoal level."
        )
    goal_space = _goal_space(task, where)
    algorithm = _check_algorithm(name, lcfg.get("algorithm"), env_spec, _algorithms(env_spec))
    ex = _explore(lcfg)
    gamma = float(lcfg.get("gamma", 0.99))
    tolerance = float(lcfg.get("tolerance", task["goal"]["tolerance"]))
    reached, not_reached = float(lcfg.get("reached", 0.0)), float(lcfg.get("not_reached", -1.0))
    norm = _norm(task)
    observation = lcfg.get("observation", "full")
    obs_map, obs_shape, own_space = None, None, goal_space
    if observation == "achieved":
        # the level sees only its achieved goal (e.g. its position): what it needs to reach a
        # subgoal, and it generalises across env goals it does not pursue
        obs_map, obs_shape = goal_space.achieved, (goal_space.dim,)
        own_space = SubgoalSpace(tuple(range(goal_space.dim)), goal_space.low, goal_space.high)
        obs_dim = goal_space.dim
    elif observation != "full":
        raise ConfigError(f"{where}.observation={observation!r}; choose 'full' or 'achieved'.")
    level, loss = goal_conditioned_level(
        name, obs_dim, env_spec, own_space, tolerance=tolerance,
        horizon=None if lcfg.get("horizon") is None else int(lcfg["horizon"]),
        algorithm=algorithm, reached=reached, not_reached=not_reached, norm=norm,
        hidden=_hidden(lcfg), gamma=gamma, eps_init=ex["eps_init"], eps_end=ex["eps_end"],
        annealing_num_steps=ex["annealing_num_steps"], noise_std=ex["noise_std"],
        obs_map=obs_map, obs_shape=obs_shape, lowest=True, device=device,
    )
    goals = HindsightGoals(
        GoalReward(own_space, tolerance, reached=reached, not_reached=not_reached, norm=norm),
        gamma=gamma, strategy=lcfg.get("hindsight_strategy", "future"),
        k=int(lcfg.get("hindsight_k", 4)), level=name,
    )
    return LevelParts(level, loss, lcfg, process=goals, episodic=True)


# ----------------------------------------------------------------------------- learners
_LEARNER_KEYS = (
    "lr", "batch_size", "buffer_size", "warmup", "update_ratio", "target_update", "tau",
    "period", "max_grad_norm", "optimizer", "compile",
)
_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
#: ``compile: auto`` compiles the lowest level's learner in runs of at least this many
#: frames: a compiled gradient step is ~2x faster on small networks, but its warm-up (~10-40 s
#: per learner on CPU) only pays off over thousands of steps, which higher levels (one
#: transition per many env steps) do not take.
COMPILE_AUTO_MIN_FRAMES = 50_000


def compile_learners(cfg: Mapping[str, Any], lowest: bool = True) -> bool:
    """Whether a learner ``torch.compile``s its gradient steps, from the config's ``compile``:
    ``true``, ``false``, or ``auto`` (the ``lowest`` level's learner, in runs of
    ``total_frames >= COMPILE_AUTO_MIN_FRAMES``). A level's ``learner.compile`` overrides it."""
    value = cfg.get("compile", False)
    if value == "auto":
        return lowest and int(cfg.get("total_frames", 0)) >= COMPILE_AUTO_MIN_FRAMES
    if isinstance(value, bool):
        return value
    raise ConfigError(f"compile={value!r}; choose true, false or auto.")


#: Learner settings of on-policy levels (:class:`OnPolicyLearner`).
_ON_POLICY_LEARNER_KEYS = (
    "lr", "batch_size", "epochs", "lmbda", "min_transitions", "max_grad_norm", "optimizer",
    "compile",
)


def _learner(
    name: str, loss: LossModule, lcfg: Mapping[str, Any], storage_device: torch.device,
    where: str, compile: bool = False, on_policy: bool = False, **kwargs: Any,
) -> LevelLearner:
    settings = dict(_container(lcfg.get("learner")) or {})
    valid = _ON_POLICY_LEARNER_KEYS if on_policy else _LEARNER_KEYS
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        kind = f"an on-policy ({lcfg.get('algorithm')}) " if on_policy else ""
        raise ConfigError(
            f"{where}.{name}.learner has unknown keys {unknown} for {kind}level; valid: "
            f"{list(valid)}."
        )
    optimizer = settings.pop("optimizer", "adam")
    if optimizer not in _OPTIMIZERS:
        raise ConfigError(
            f"{where}.{name}.learner.optimizer={optimizer!r}; choose one of {list(_OPTIMIZERS)}."
        )
    compile = settings.pop("compile", compile)
    if not isinstance(compile, bool):
        raise ConfigError(f"{where}.{name}.learner.compile={compile!r}; choose true or false.")
    lr = float(settings.pop("lr", 1e-3))
    learner = OnPolicyLearner if on_policy else LevelLearner
    return learner(
        loss, device=storage_device, compile=compile,
        optimizer=functools.partial(_OPTIMIZERS[optimizer], lr=lr), **settings, **kwargs,
    )


class TransitionPipeline:
    """A collected batch -> each level's transitions, ready for its learner.

    Levels without processing get their transitions (``hierarchy.transitions(batch)``) as
    they are; on-policy levels their trajectories (``hierarchy.trajectories(batch)``); levels
    with hindsight get whole episodes (held per env instance until they end,
    :class:`LevelEpisodes`) through their relabelling (:class:`HindsightGoals`,
    :func:`subgoal_transitions`).
    """

    def __init__(self, hierarchy: Hierarchy, parts: list[LevelParts]):
        self.hierarchy = hierarchy
        self.process = {p.level.name: p.process for p in parts}
        self.episodic = [p.level.name for p in parts if p.episodic]
        self.episodes = LevelEpisodes(hierarchy, self.episodic) if self.episodic else None
        self.on_policy = [p.level.name for p in parts if p.on_policy]
        self.direct = [p.level.name for p in parts if not (p.episodic or p.on_policy)]

    def __call__(self, batch: TensorDictBase) -> dict[str, TensorDictBase]:
        out: dict[str, TensorDictBase] = {}
        levels, keys = self.hierarchy.levels, self.hierarchy.keys
        if self.direct:
            out.update(level_transitions(batch, levels, keys, self.direct))
        if self.on_policy:
            out.update(level_trajectories(batch, levels, keys, self.on_policy))
        if self.episodes is not None:
            out.update(self.episodes.add(batch))
        for name, data in out.items():
            process = self.process[name]
            if process is not None and data.shape[0] > 0:
                out[name] = process(data)
        return {name: data for name, data in out.items() if data.shape[0] > 0}

    def state_dict(self) -> dict[str, Any]:
        """The episodes held for hindsight levels (for an exact resume)."""
        return {"episodes": None if self.episodes is None else self.episodes.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`, the held episodes on the hierarchy's device."""
        episodes = state["episodes"]
        if (episodes is None) != (self.episodes is None):
            raise KeyError(
                f"the saved pipeline {'holds no' if episodes is None else 'holds'} episodes for "
                f"hindsight levels; this run's hindsight levels are {self.episodic or 'none'}"
            )
        if self.episodes is not None:
            self.episodes.load_state_dict(episodes, self.hierarchy.device)


# ----------------------------------------------------------------------------- experiment
@dataclass
class Experiment:
    """Everything :mod:`torchrl_hier.train` and :mod:`torchrl_hier.evaluate` run, built from
    one config: a :class:`Hierarchy` of levels, or a HAM (``hierarchy.kind: ham``)."""

    cfg: DictConfig
    device: torch.device
    env: EnvBase
    learners: HierarchyLearner
    explorers: dict[str, torch.nn.Module]
    pipeline: Callable[[TensorDictBase], dict[str, TensorDictBase]]
    hierarchy: Hierarchy | None = None
    ham: Any = None
    parts: list[LevelParts] = field(default_factory=list)
    has_success: bool = False

    @property
    def names(self) -> list[str]:
        """Level names (highest first), or a HAM's choice points."""
        if self.hierarchy is not None:
            return self.hierarchy.names
        return list(self.ham.choice_points)

    @property
    def policy(self) -> TensorDictModuleBase:
        """The policy a collector runs (the hierarchy's forward pass, or the HAM's)."""
        return self.hierarchy.policy if self.hierarchy is not None else self.ham.policy

    def eval_policy(self) -> TensorDictModuleBase:
        """A policy for another env (a HAM's policy holds per-env machine state)."""
        return self.hierarchy.policy if self.hierarchy is not None else self.ham.make_policy()

    def env_transform(self) -> Transform:
        """The backward pass (hierarchy or HAM) plus an episode-return sum (new each call)."""
        agent = self.hierarchy if self.hierarchy is not None else self.ham
        return Compose(
            agent.transform,
            RewardSum(in_keys=[self.env.reward_key], out_keys=[EPISODE_RETURN]),
        )

    def counts(
        self, batch: TensorDictBase, data: Mapping[str, TensorDictBase]
    ) -> dict[str, int]:
        """New transitions per level in ``batch`` (before any hindsight relabelling)."""
        if self.hierarchy is None:
            return {name: int(data[name].shape[0]) if name in data else 0 for name in self.names}
        completed = batch.get(("next", "hier", "completed")).reshape(-1, len(self.names))
        return dict(zip(self.names, completed.sum(0).tolist()))

    def anneal(self, counts: Mapping[str, int]) -> None:
        """Steps each level's exploration schedule by its new transitions."""
        for name, module in self.explorers.items():
            n = counts.get(name, 0)
            if n:
                anneal_exploration(module, n)


def build_experiment(cfg: DictConfig, *, n_envs: int | None = None, seed: int | None = None) -> Experiment:
    """Env (``task.n_envs`` instances, or ``n_envs``), levels, hierarchy (or HAM), learners and
    transition pipeline."""
    device = resolve_device(cfg.device)
    seed = int(cfg.seed if seed is None else seed)
    env = make_task_env(cfg.task, int(n_envs or cfg.task.n_envs), device, seed)
    buffer_device = cfg.get("buffer_device")
    storage = device if buffer_device in (None, "same") else resolve_device(buffer_device)
    has_success = SUCCESS in env.observation_spec.keys()
    if cfg.hierarchy.get("kind") == "ham":
        return _build_ham_experiment(cfg, device, env, storage, has_success)
    parts = build_levels(cfg.hierarchy, cfg.task, env, device)
    hierarchy = Hierarchy([p.level for p in parts], env, device=device)
    learners = HierarchyLearner(
        {
            p.level.name: _learner(
                p.level.name, p.loss, p.config, storage, "hierarchy.levels",
                # minibatches of on-policy levels vary in size: compile them only when asked
                compile=compile_learners(cfg, lowest=i == len(parts) - 1 and not p.on_policy),
                on_policy=p.on_policy, level=p.level,
            )
            for i, p in enumerate(parts)
        },
        hierarchy=hierarchy,
    )
    return Experiment(
        cfg, device, env, learners, {p.level.name: p.level.policy for p in parts},
        TransitionPipeline(hierarchy, parts), hierarchy=hierarchy, parts=parts,
        has_success=has_success,
    )


# ----------------------------------------------------------------------------- HAMs
def taxi_env(batch_size: torch.Size, device: torch.device, seed: int | None = None) -> EnvBase:
    """``Taxi-v4`` instances as one batched TorchRL env for the Taxi HAM (CPU only)."""
    from torchrl_hier.ham.taxi import make_taxi_env

    if torch.device(device).type != "cpu":
        raise ConfigError("The Taxi task steps gymnasium envs on the CPU; use device=cpu.")
    if len(batch_size) != 1:
        raise ConfigError(f"The Taxi task takes a 1-D batch (task.n_envs), got {tuple(batch_size)}.")
    return make_taxi_env(int(batch_size[0]), seed=seed)


def _build_ham_experiment(cfg, device, env, storage, has_success) -> Experiment:
    """The Taxi HAM of :mod:`torchrl_hier.ham.taxi` (get/put/navigate machines; the ``nav``
    choice point learns the moves, ``task`` optionally the get/put choice), with tabular
    Q values learnt by ``DQNLoss`` (semi-MDP: it discounts by ``gamma**steps_to_next_obs``)."""
    from torchrl.objectives import DQNLoss, ValueEstimators

    from torchrl_hier.ham.taxi import N_STATES, q_table, taxi_ham

    hcfg = cfg.hierarchy
    where = "hierarchy.choice_points"
    if hcfg.get("machine") != "taxi":
        raise ConfigError(
            f"hierarchy.machine={hcfg.get('machine')!r}: the HAM configs know the 'taxi' machine "
            "(torchrl_hier.ham.taxi)."
        )
    if cfg.task.get("factory") != "torchrl_hier.experiment.builders:taxi_env":
        raise ConfigError(
            f"hierarchy=ham runs the Taxi HAM, which needs task=Taxi-v4 (got task {cfg.task.name!r})."
        )
    if device.type != "cpu":
        raise ConfigError("hierarchy=ham runs machine code per env instance on the CPU; use device=cpu.")
    points_cfg = hcfg.choice_points
    learn_task = bool(hcfg.get("learn_task", False))
    tables = {}
    for name, rows, actions, n_args in (("nav", N_STATES, 4, 4), ("task", 5, 2, None)):
        if name == "task" and not learn_task:
            continue
        pcfg = points_cfg[name]
        ex = _explore(pcfg)
        tables[name] = q_table(
            rows, actions, n_args, eps_init=ex["eps_init"], eps_end=ex["eps_end"],
            annealing_num_steps=ex["annealing_num_steps"],
        )
    gamma = float(points_cfg.nav.get("gamma", 0.99))
    ham = taxi_ham(env, tables["nav"].policy, tables["task"].policy if learn_task else None, gamma=gamma)
    learners = {}
    for name, table in tables.items():
        loss = DQNLoss(table.actor, action_space="categorical", delay_value=False, loss_function="l2")
        loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)
        learners[name] = _learner(
            name, loss, points_cfg[name], storage, where,
            compile=compile_learners(cfg, lowest=False), gamma=gamma,
        )

    def pipeline(batch: TensorDictBase) -> dict[str, TensorDictBase]:
        return {k: v for k, v in ham.transitions(batch).items() if v.shape[0] > 0}

    return Experiment(
        cfg, device, env, HierarchyLearner(learners),
        {name: table.policy for name, table in tables.items()}, pipeline, ham=ham,
        has_success=has_success,
    )


def _transformed_env(
    task: Mapping[str, Any], n_envs: int, device: str, seed: int, transform: Transform
) -> TransformedEnv:
    """A worker's env: the task plus the hierarchy transform (module-level, so picklable)."""
    return TransformedEnv(make_task_env(task, n_envs, device, seed), transform)


def _worker_env_factories(
    cfg: DictConfig, exp: Experiment, frames_per_batch: int, seed: int
) -> list[Callable[[], TransformedEnv]]:
    """One env factory per worker of a multi-process collector, each stepping
    ``task.n_envs / num_workers`` instances with its own seed and a copy of the transform."""
    ccfg = cfg.collector
    workers = int(ccfg.num_workers)
    if workers < 1:
        raise ConfigError(f"collector.num_workers must be >= 1, got {workers}.")
    n_envs = int(cfg.task.n_envs)
    if n_envs % workers:
        raise ConfigError(
            f"task.n_envs={n_envs} must be a multiple of collector.num_workers={workers} "
            "(each worker steps n_envs / num_workers instances)."
        )
    if frames_per_batch % workers:
        raise ConfigError(
            f"collector.frames_per_batch={frames_per_batch} must be a multiple of "
            f"collector.num_workers={workers}."
        )
    task = _container(cfg.task)
    return [
        functools.partial(
            _transformed_env, task, n_envs // workers, str(exp.device), seed + 10_007 * i,
            exp.env_transform(),
        )
        for i in range(workers)
    ]


def make_collector(
    cfg: DictConfig, exp: Experiment, total_frames: int, *, env_seed: int | None = None
) -> Collector | MultiSyncCollector:
    """``Collector`` (ex-``SyncDataCollector``), ``MultiSyncCollector``
    (ex-``MultiSyncDataCollector``; :mod:`torchrl_hier.collectors`' own, which raises a
    worker's error in the main process) or ``RayCollector`` running the hierarchy policy in the
    transformed task."""
    ccfg = cfg.collector
    name = ccfg.get("name")
    frames_per_batch = int(ccfg.frames_per_batch)
    if frames_per_batch < 1:
        raise ConfigError(f"collector.frames_per_batch must be positive, got {frames_per_batch}.")
    seed = int(cfg.seed if env_seed is None else env_seed)
    if name == "sync":
        if env_seed is not None:
            exp.env.set_seed(seed)
        env = TransformedEnv(exp.env, exp.env_transform())
        return Collector(
            env,
            exp.policy,
            frames_per_batch=frames_per_batch,
            total_frames=total_frames,
            device=exp.device,
            auto_register_policy_transforms=False,
        )
    if name in ("multi_sync", "ray"):
        factories = _worker_env_factories(cfg, exp, frames_per_batch, seed)
        if name == "ray":
            from torchrl_hier.experiment.ray_collector import make_ray_collector

            return make_ray_collector(
                ccfg, factories, exp.policy, frames_per_batch=frames_per_batch,
                total_frames=total_frames, device=exp.device,
            )
        return MultiSyncCollector(
            factories,
            exp.policy,
            frames_per_batch=frames_per_batch,
            total_frames=total_frames,
            device=exp.device,
            auto_register_policy_transforms=False,
        )
    raise ConfigError(f"collector.name={name!r} is not a collector; choose one of {list(COLLECTORS)}.")


def episode_stats(batch: TensorDictBase, has_success: bool) -> dict[str, torch.Tensor]:
    """Returns and successes of the episodes that ended in ``batch`` (1-D tensors)."""
    done = batch.get(("next", "done")).reshape(-1)
    out = {"return": batch.get(("next", EPISODE_RETURN)).reshape(-1)[done]}
    if has_success:
        out["success"] = batch.get(("next", SUCCESS)).reshape(-1)[done].float()
    return out
