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

The configs name their factories with Hydra's ``_target_``, and Hydra's ``instantiate`` binds
their config values (``_partial_: true``); this module calls the results with the run-time
objects. A hierarchy lists its levels, highest first, as a mapping ``name -> level config``:
each level's ``_target_`` is its family's factory (``LevelContext -> LevelParts``, e.g.
:func:`~torchrl_hier.levels.options.option_from_config`), and its ``learner`` block's the
learner's (:func:`~torchrl_hier.learning.from_config.learner_from_config`). A hierarchy with a
``_target_`` of its own builds the whole experiment (the Taxi HAM,
:func:`~torchrl_hier.ham.taxi.taxi_ham_from_config`). The task's ``_target_`` makes its env
(:func:`~torchrl_hier.envs.make_env`). Configs saved before ``_target_`` (with ``kind:`` and
``task.factory``) are translated by :func:`upgrade_config`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector
from torchrl.envs import Compose, EnvBase, RewardSum, Transform, TransformedEnv

from torchrl_hier.collectors import MultiSyncCollector
from torchrl_hier.errors import ConfigError
from torchrl_hier.hierarchy import Hierarchy, usable_device
from torchrl_hier.learning import HierarchyLearner
from torchrl_hier.levels import LevelEpisodes, anneal_exploration
from torchrl_hier.levels.from_config import LevelContext, LevelParts, as_container
from torchrl_hier.transitions import level_completions, level_trajectories, level_transitions

__all__ = [
    "LEGACY_LEVEL_TARGETS",
    "LEARNER_TARGET",
    "TASK_TARGET",
    "COLLECTORS",
    "Experiment",
    "TransitionPipeline",
    "ConfigError",
    "resolve_device",
    "upgrade_config",
    "configured",
    "make_task_env",
    "build_levels",
    "build_learner",
    "build_experiment",
    "compile_learners",
    "make_collector",
    "episode_stats",
]

#: Configs saved before ``_target_`` named a level's family with ``kind:``; the factory each
#: kind was (kept only to load and resume those checkpoints: new families need no entry).
LEGACY_LEVEL_TARGETS = {
    "flat": "torchrl_hier.levels.basic.flat_from_config",
    "option": "torchrl_hier.levels.options.option_from_config",
    "option_conditioned": "torchrl_hier.levels.options.option_conditioned_from_config",
    "subgoal": "torchrl_hier.levels.subgoals.subgoal_from_config",
    "goal_conditioned": "torchrl_hier.levels.subgoals.goal_conditioned_from_config",
}
#: The ready-made learner factory (a ``learner`` block's ``_target_``; the default of old configs).
LEARNER_TARGET = "torchrl_hier.learning.from_config.learner_from_config"
#: The env factory of the built-in and gymnasium tasks (the default of old task configs).
TASK_TARGET = "torchrl_hier.envs.make_env"
#: The Taxi HAM and its task: old configs' ``hierarchy.kind: ham`` and ``task.factory``.
HAM_TARGET = "torchrl_hier.ham.taxi.taxi_ham_from_config"
TAXI_TASK_TARGET = "torchrl_hier.ham.taxi.taxi_task"
_LEGACY_TASK_FACTORIES = {"torchrl_hier.experiment.builders:taxi_env": TAXI_TASK_TARGET}
#: Collector names (``collector.name``): TorchRL's ``Collector`` (ex-``SyncDataCollector``),
#: ``MultiSyncCollector`` (ex-``MultiSyncDataCollector``) and ``RayCollector``.
COLLECTORS = ("sync", "multi_sync", "ray")
#: The entry where the env's episode return is summed (TorchRL's ``RewardSum``).
EPISODE_RETURN = "episode_reward"
SUCCESS = "is_success"

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



# ----------------------------------------------------------------------------- configs
def upgrade_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the ``_target_`` of every factory: a copy, translated from the format of
    checkpoints saved before ``_target_`` (``kind:`` per level, ``hierarchy.kind: ham``,
    ``task.factory``, learner blocks without ``_target_``) by :data:`LEGACY_LEVEL_TARGETS`;
    a config that has them comes back equal."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(cfg, False)
    task, hierarchy = cfg.get("task"), cfg.get("hierarchy")
    if task is not None and "_target_" not in task:
        factory = task.pop("factory", None)
        task._target_ = _LEGACY_TASK_FACTORIES.get(factory, str(factory).replace(":", ".")) if factory else TASK_TARGET
    if hierarchy is None:
        return cfg
    if hierarchy.get("kind") == "ham" and "_target_" not in hierarchy:
        hierarchy.pop("kind")
        hierarchy._target_, hierarchy._partial_ = HAM_TARGET, True
    blocks = hierarchy.get("levels") or hierarchy.get("choice_points") or {}
    for name, block in blocks.items():
        kind = block.get("kind")
        # level blocks that name their factory may have no learner (frozen levels)
        untargeted = "_target_" not in block
        if untargeted and kind is not None:
            if kind not in LEGACY_LEVEL_TARGETS:
                raise ConfigError(
                    f"hierarchy.levels.{name}.kind={kind!r} is not a level kind of older configs "
                    f"({list(LEGACY_LEVEL_TARGETS)}); name its factory with _target_ instead."
                )
            block.pop("kind")
            block._target_, block._partial_ = LEGACY_LEVEL_TARGETS[kind], True
        learner = block.get("learner")
        if learner is None:
            if untargeted:
                block.learner = {"_target_": LEARNER_TARGET, "_partial_": True}
        elif "_target_" not in learner:
            learner._target_, learner._partial_ = LEARNER_TARGET, True
    return cfg


def configured(node: Mapping[str, Any], where: str, **instantiate_kwargs: Any) -> functools.partial:
    """The factory ``node['_target_']`` names with the node's values bound, by Hydra's
    ``instantiate(node, _partial_=True)``: to be called with the run-time objects. A missing
    or unimportable ``_target_`` and keys the factory does not take raise a
    :class:`ConfigError` naming ``where``."""
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if not target:
        raise ConfigError(
            f"{where} has no _target_: name the factory that builds it (e.g. "
            f"{LEGACY_LEVEL_TARGETS['option']})."
        )
    try:
        factory = instantiate(node, _partial_=True, **instantiate_kwargs)
    except InstantiationException as err:
        raise ConfigError(f"{where}._target_={target!r} cannot be built: {err}") from None
    parameters = inspect.signature(factory.func).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(factory.keywords) - set(parameters))
        if unknown:
            valid = sorted(
                k for k, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
            )
            raise ConfigError(
                f"{where} has unknown keys {unknown} for its factory {target}; valid: {valid}."
            )
    return factory


# ----------------------------------------------------------------------------- task
def make_task_env(
    task: Mapping[str, Any], n_envs: int, device: torch.device | str, seed: int
) -> EnvBase:
    """The task ``task.name`` with ``n_envs`` instances, made by the factory ``task._target_``
    (default :func:`~torchrl_hier.envs.make_env`: a built-in name or gymnasium id) from
    ``(name, batch_size=, device=, seed=, **task.kwargs)``."""
    if not (isinstance(n_envs, int) and n_envs >= 1):
        raise ConfigError(f"task.n_envs must be a positive int, got {n_envs!r}.")
    kwargs = dict(as_container(task.get("kwargs")) or {})
    node = {"_target_": task.get("_target_") or TASK_TARGET, "name": task["name"], **kwargs}
    factory = configured(node, "task")
    try:
        return factory(batch_size=torch.Size([n_envs]), device=torch.device(device), seed=seed)
    except TypeError as err:
        raise ConfigError(
            f"task.kwargs={kwargs} do not fit task {task['name']!r}: {err}. Fix or remove them."
        ) from err


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


# ----------------------------------------------------------------------------- levels
def build_levels(
    hierarchy_cfg: Mapping[str, Any],
    task: Mapping[str, Any],
    env: EnvBase,
    device: torch.device,
) -> list[LevelParts]:
    """The levels of ``hierarchy_cfg.levels`` (highest first), each built by its
    ``_target_`` factory from a :class:`~torchrl_hier.levels.from_config.LevelContext`, with
    their losses and transition processing, for ``env`` (the untransformed task env)."""
    levels_cfg = hierarchy_cfg.get("levels")
    if not levels_cfg:
        raise ConfigError("hierarchy.levels is empty; a hierarchy needs at least one level.")
    names = list(levels_cfg.keys())
    obs_dim = _spec_dim(env)
    env_spec = env.full_action_spec_unbatched[env.action_key]
    parts: list[LevelParts] = []
    for i, name in enumerate(names):
        where = f"hierarchy.levels.{name}"
        node = {k: v for k, v in levels_cfg[name].items() if k != "learner"}
        make = configured(node, where, _convert_="all")
        ctx = LevelContext(
            name=name, index=i, n_levels=len(names), task=task, env=env, obs_dim=obs_dim,
            env_spec=env_spec, device=device, above=parts[-1] if parts else None,
        )
        part = make(ctx)
        if not isinstance(part, LevelParts):
            raise ConfigError(
                f"{where}._target_={node['_target_']!r} returned {type(part).__name__}; a level "
                "factory returns LevelParts."
            )
        if part.frozen and levels_cfg[name].get("learner") is not None:
            raise ConfigError(
                f"{where} is frozen (its factory {node['_target_']} gives it no loss: another "
                f"level's loss trains it, or nothing does), but it has a learner block: remove "
                f"{where}.learner."
            )
        parts.append(part)
    return parts

# ----------------------------------------------------------------------------- learners
#: ``compile: auto`` compiles the lowest level's learner in runs of at least this many
#: frames: a compiled gradient step is ~2x faster on small networks, but its warm-up (~5-30 s
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


class TransitionPipeline:
    """A collected batch -> each level's transitions, ready for its learner.

    Levels without processing get their transitions (``hierarchy.transitions(batch)``) as
    they are; on-policy levels their trajectories (``hierarchy.trajectories(batch)``); levels
    with hindsight get whole episodes (held per env instance until they end,
    :class:`LevelEpisodes`) through their relabelling (:class:`HindsightGoals`,
    :func:`subgoal_transitions`); frozen levels (no learner) get nothing.
    """

    def __init__(self, hierarchy: Hierarchy, parts: list[LevelParts]):
        self.hierarchy = hierarchy
        parts = [p for p in parts if not p.frozen]
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


def build_learner(
    node: Mapping[str, Any] | None, where: str, loss: Any, storage: torch.device,
    compile_default: bool, **kwargs: Any,
) -> Any:
    """The learner the ``learner`` block ``node`` names with ``_target_``, for ``loss``, its
    buffers on ``storage``; ``kwargs`` (the level, ``on_policy``...) go to its factory."""
    if node is None:
        raise ConfigError(f"{where} is missing: give the level a learner block with a _target_.")
    make = configured(node, where)
    return make(loss, where=where, device=storage, compile_default=compile_default, **kwargs)


# ----------------------------------------------------------------------------- experiment
@dataclass
class Experiment:
    """Everything :mod:`torchrl_hier.train` and :mod:`torchrl_hier.evaluate` run, built from
    one config: a :class:`Hierarchy` of levels, or a HAM (``hierarchy=ham``)."""

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
    _task_envs: dict[int, EnvBase] = field(default_factory=dict, repr=False)

    def task_env(self, n_envs: int, seed: int) -> EnvBase:
        """The task with ``n_envs`` instances, seeded with ``seed``: built on the first call for
        that size, re-seeded (``set_seed``) on later ones, so every evaluation starts the
        episodes a fresh env of that seed would, without building its simulators again (a
        gymnasium-robotics task's take ~1 GB and seconds per 100 instances). :meth:`close`
        closes them."""
        env = self._task_envs.get(n_envs)
        if env is None:
            env = self._task_envs[n_envs] = make_task_env(self.cfg.task, n_envs, self.device, seed)
        else:
            env.set_seed(seed)
        return env

    def close(self) -> None:
        """Closes the envs :meth:`task_env` built (the training env is the collector's)."""
        for env in self._task_envs.values():
            env.close()
        self._task_envs.clear()

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
        completed = level_completions(batch, self.hierarchy.keys).reshape(-1, len(self.names))
        return dict(zip(self.names, completed.sum(0).tolist()))

    def anneal(self, counts: Mapping[str, int]) -> None:
        """Steps each level's exploration schedule by its new transitions."""
        for name, module in self.explorers.items():
            n = counts.get(name, 0)
            if n:
                anneal_exploration(module, n)


def build_experiment(cfg: DictConfig, *, n_envs: int | None = None, seed: int | None = None) -> Experiment:
    """Env (``task.n_envs`` instances, or ``n_envs``), levels, hierarchy (or the experiment a
    hierarchy's own ``_target_`` builds, e.g. a HAM), learners and transition pipeline. Old
    configs are translated first (:func:`upgrade_config`)."""
    cfg = upgrade_config(cfg)
    device = resolve_device(cfg.device)
    seed = int(cfg.seed if seed is None else seed)
    env = make_task_env(cfg.task, int(n_envs or cfg.task.n_envs), device, seed)
    buffer_device = cfg.get("buffer_device")
    storage = device if buffer_device in (None, "same") else resolve_device(buffer_device)
    has_success = SUCCESS in env.observation_spec.keys()
    if "_target_" in cfg.hierarchy:
        make = configured(cfg.hierarchy, "hierarchy", _recursive_=False)
        exp = make(cfg, device=device, env=env, storage=storage, has_success=has_success)
        if not isinstance(exp, Experiment):
            raise ConfigError(
                f"hierarchy._target_={cfg.hierarchy._target_!r} returned {type(exp).__name__}; a "
                "hierarchy factory returns an Experiment."
            )
        return exp
    parts = build_levels(cfg.hierarchy, cfg.task, env, device)
    hierarchy = Hierarchy([p.level for p in parts], env, device=device)
    learners = HierarchyLearner(
        {
            p.level.name: build_learner(
                cfg.hierarchy.levels[p.level.name].get("learner"),
                f"hierarchy.levels.{p.level.name}.learner", p.loss, storage,
                # minibatches of on-policy levels vary in size: compile them only when asked
                compile_default=compile_learners(cfg, lowest=i == len(parts) - 1 and not p.on_policy),
                on_policy=p.on_policy, level=p.level,
            )
            for i, p in enumerate(parts)
            if not p.frozen
        },
        hierarchy=hierarchy,
        frozen=[p.level.name for p in parts if p.frozen],
    )
    return Experiment(
        cfg, device, env, learners, {p.level.name: p.level.policy for p in parts},
        TransitionPipeline(hierarchy, parts), hierarchy=hierarchy, parts=parts,
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
    task = as_container(cfg.task)
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
