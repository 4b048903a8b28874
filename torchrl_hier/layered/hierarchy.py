"""LayeredRL's ``Hierarchy`` API (``get_action`` / ``process_transition`` on a vector env), run
by the engine's passes: the per-instance state is the engine's
:class:`~torchrl_hier._passes.HierarchyState` (a few stacked tensors), the forward pass is
:func:`~torchrl_hier._passes.choose_actions`, the backward pass
:func:`~torchrl_hier._passes.complete_transitions` and the transitions
:func:`torchrl_hier.transitions.level_transitions`, exactly as in a TorchRL collector with
``hierarchy.transform``. TensorDicts are built only for the level policies and when transitions
are read (by a level's learner, or by the caller of :meth:`Hierarchy.process_transition`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_hier._passes import (
    STATE,
    HierarchyState,
    choose_actions,
    complete_transitions,
    level_steps,
)
from torchrl_hier.hierarchy import Hierarchy as EngineHierarchy
from torchrl_hier.hierarchy import usable_device
from torchrl_hier.layered._specs import (
    EnvSpecs,
    SpecEnv,
    check_uniform_sampling,
    env_specs,
)
from torchrl_hier.learning import LevelLearner
from torchrl_hier.level import Level
from torchrl_hier.levels import anneal_exploration, random_level
from torchrl_hier.transitions import LazyTransitions, level_trajectories, level_transitions

__all__ = ["Hierarchy", "RandomHierarchy"]

_CHECKPOINT_VERSION = 2


class Hierarchy:
    """A stack of :class:`torchrl_hier.Level` s, highest first, driven step by step as in
    LayeredRL::

        hierarchy.reset()
        action = hierarchy.get_action(obs)                       # forward pass
        obs_next, rew, terminated, truncated, info = env.step(action.cpu().numpy())
        hierarchy.process_transition(obs_next_transition, rew, terminated, truncated)
        hierarchy.learn()                                        # each level's learner

    Args:
        levels: the levels, highest first.
        env: a ``gymnasium.vector.VectorEnv`` or a TorchRL ``EnvBase`` with batch size ``[n]``;
            only its spaces/specs and number of instances are read.
        env_obs_maps: one entry per level: a map from the env observation to the level's
            observation (``None`` keeps the level's own ``obs_map``, identity by default).
        mapped_env_obs_shapes: one entry per level: the mapped observation's shape; a negative
            int ``-k`` (or ``(-k,)``) means "``k`` fewer entries in the last dim".
        keep_params: keep the levels' parameters as they are. ``False`` (LayeredRL's default)
            initialises them for this env: lazy modules are materialised and every submodule
            with ``reset_parameters`` is re-initialised (target networks of the learners are
            re-synchronised). ``True`` is only valid for levels whose parameters are all
            initialised.
        device: where the hierarchy state lives and the level policies run.
        writer: a TensorBoard ``SummaryWriter`` (anything with ``add_scalar``); :meth:`learn`
            logs each level's losses to it.
        learners: ``{level name: torchrl_hier.learning.LevelLearner}`` (or a
            ``HierarchyLearner``). :meth:`process_transition` hands each level's completed
            transitions to its learner (in training mode); levels without one do not learn.
        observation_key: for a TorchRL env, the observation entry that ``obs`` holds.

    Reward functions and return-control rules of the levels see the observation, reward and
    done flags that :meth:`process_transition` receives, and no other env entries.
    """

    def __init__(
        self,
        levels: Sequence[Level],
        env: Any,
        env_obs_maps: Sequence[Callable[[Tensor], Tensor] | None] | None = None,
        mapped_env_obs_shapes: Sequence[int | tuple[int, ...] | None] | None = None,
        keep_params: bool = False,
        device: torch.device | str = torch.device("cpu"),
        writer: Any | None = None,
        learners: Mapping[str, LevelLearner] | None = None,
        observation_key="observation",
    ):
        levels = list(levels)
        if not levels:
            raise ValueError("A hierarchy needs at least one level; got an empty list.")
        for level in levels:
            if not isinstance(level, Level):
                raise TypeError(
                    f"Levels must be torchrl_hier.Level, got {type(level).__name__}."
                )
        self.env = env
        self.device = usable_device(device)
        self.writer = writer
        self.observation_key = observation_key
        self._specs: EnvSpecs = env_specs(env, observation_key)
        self.levels = _apply_obs_maps(levels, env_obs_maps, mapped_env_obs_shapes)
        if keep_params:
            _check_initialised(self.levels)
        self.training = True
        self.n_total_env_steps = 0
        self._state: HierarchyState | None = None
        self._acting: _Acting | None = None
        self._build(self._specs.n_envs)
        self._counter = _TransitionCounter(len(self.levels), self.n_env_instances, self.device)
        self.learners = self._check_learners(learners)
        self._levels_by_name = {level.name: level for level in self.levels}
        # Each learner's transition count when its level's exploration was last annealed
        # (one dict, shared with copies, which share the learners and the exploration modules).
        self._annealed_at: dict[str, int] = {name: 0 for name in self.learners}
        if not keep_params:
            self._init_params()

    # ----------------------------------------------------------------------------- set-up
    def _build(self, n: int) -> None:
        """(Re)builds the engine hierarchy for ``n`` instances: validates the levels (a dry run
        that also materialises lazy modules) and caches the initial state and discounts."""
        self.engine = EngineHierarchy(self.levels, SpecEnv(self._specs, n, self.device), device=self.device)
        self.keys = self.engine.keys
        transform = self.engine.transform
        self._gammas = transform.gammas.to(self.device)
        self._batch_size = torch.Size([n])
        self._upper = self.levels[:-1]
        self._initial = HierarchyState.from_entries(
            transform.initial_state(self._batch_size, self.device), self._upper
        )
        self.n_env_instances = n

    def _check_learners(self, learners: Mapping[str, LevelLearner] | None) -> dict[str, LevelLearner]:
        if learners is None:
            return {}
        if not isinstance(learners, Mapping):
            raise TypeError(
                "learners must map level names to LevelLearner, e.g. {'primitive': "
                f"LevelLearner(loss, level=level)}}; got {type(learners).__name__}."
            )
        names = self.names
        unknown = sorted(set(learners) - set(names))
        if unknown:
            raise KeyError(f"learners has entries for unknown levels {unknown} (levels: {names}).")
        out = {}
        for i, level in enumerate(self.levels):
            learner = learners.get(level.name)
            if learner is None:
                continue
            if not isinstance(learner, LevelLearner):
                raise TypeError(
                    f"The learner of level {level.name!r} must be a LevelLearner, got "
                    f"{type(learner).__name__}."
                )
            if learner.level is not None and learner.level.policy is not level.policy:
                raise ValueError(
                    f"The learner given for level {level.name!r} was built for level "
                    f"{learner.level.name!r}, whose policy is another module."
                )
            if not math.isclose(learner.gamma, level.gamma):
                raise ValueError(
                    f"The learner of level {level.name!r} bootstraps with gamma={learner.gamma} "
                    f"but the level accumulates its reward with gamma={level.gamma}; make them "
                    "equal (LevelLearner(loss, level=level) takes the level's)."
                )
            learner.check_level_keys(
                has_parent=i > 0, name=f"level {level.name!r}", records=level.records
            )
            out[level.name] = learner
        return out

    def _init_params(self) -> None:
        """LayeredRL's ``keep_params=False``: (re-)initialise every level's parameters."""
        for level in self.levels:
            for module in level.policy.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset) and not _has_uninitialised(module):
                    reset()
        for learner in self.learners.values():
            if learner.target_updater is not None:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Updated already initialized")
                    learner.target_updater.init_()

    @property
    def names(self) -> list[str]:
        return [level.name for level in self.levels]

    # ----------------------------------------------------------------------------- stepping
    def reset(self) -> None:
        """Starts a session: the highest level is active for every env instance.

        Call it once at the beginning, not at episode ends (:meth:`process_transition` handles
        those, as the env's autoreset does)."""
        self._state = self._initial.clone()
        self._acting = None

    def get_action(self, obs: Tensor | np.ndarray) -> Tensor:
        """The env action for ``obs`` (shape ``[n_env_instances, *obs_shape]``): every level at
        or below the active one chooses, the others keep their pending action. Runs without
        gradient tracking (as a TorchRL collector does), exploring in training mode and
        deterministic (``ExplorationType.DETERMINISTIC``) in eval mode."""
        if self._state is None:
            raise RuntimeError(
                "get_action() was called before reset(): call hierarchy.reset() once at the "
                "start of the session (after env.reset())."
            )
        if self._acting is not None:
            raise RuntimeError(
                "get_action() was called twice without process_transition() in between: the "
                "hierarchy expects get_action, env.step, process_transition, in that order."
            )
        obs = self._as_observation(obs, "obs")
        self._sync_mode()
        exploration = ExplorationType.RANDOM if self.training else ExplorationType.DETERMINISTIC
        with torch.no_grad(), set_exploration_type(exploration):
            action, state, records = choose_actions(
                self.levels, obs, self._state, self._batch_size, self.device
            )
        self._acting = _Acting(obs, action, state, records)
        return action

    def process_transition(
        self,
        obs_next: Tensor | np.ndarray,
        rew: Tensor | np.ndarray,
        terminated: Tensor | np.ndarray,
        truncated: Tensor | np.ndarray,
    ) -> Mapping[str, TensorDict]:
        """Runs the backward pass for the last :meth:`get_action`'s env step.

        ``obs_next`` must be the observation the step reached: at an episode end, the *final*
        observation (gymnasium 1.x: ``info["final_obs"]``), not the reset one. Returns each
        level's completed transitions as a mapping ``{name: TensorDict}`` (the same as
        ``torchrl_hier.Hierarchy.transitions``) that extracts a level's transitions only when
        it is read; in training mode those of levels with a learner are handed to it.
        Instances whose episode ended restart with the top level.
        """
        acting = self._acting
        if acting is None:
            if self._state is None:
                raise RuntimeError(
                    "process_transition() was called before reset() and get_action()."
                )
            raise RuntimeError(
                "process_transition() was called without a preceding get_action(): the "
                "hierarchy expects get_action, env.step, process_transition, in that order."
            )
        obs_next = self._as_observation(obs_next, "obs_next")
        rew = self._as_flag_like(rew, "rew", self._specs.reward_dtype)
        # Flags that live on the host tell for free whether any episode ended.
        any_done = _any_on_host(terminated, truncated)
        terminated = self._as_flags(terminated, "terminated")
        truncated = self._as_flags(truncated, "truncated")
        done = terminated | truncated
        done_flat = done.reshape(self._batch_size)
        step = _Step(obs_next, rew, done, terminated, truncated)
        with torch.no_grad():
            infos = level_steps(
                self.levels,
                acting.state,
                observation=acting.observation,
                action=acting.action,
                next_observation=obs_next,
                env_reward=rew.reshape(self._batch_size),
                root=lambda: self._root_tensordict(acting),
                next=lambda: self._next_tensordict(step),
            )
            new = complete_transitions(
                self.levels, acting.state, infos, done_flat, self._gammas
            )
        self._counter.add(new.completed)
        transitions = LazyTransitions(
            lambda names: self._extract(acting, step, new, names), self.names
        )
        if self.training and self.learners:
            off_policy = [name for name, learner in self.learners.items() if not learner.on_policy]
            transitions.extract(off_policy)
            for name in off_policy:
                self.learners[name].extend(transitions[name])
            on_policy = [name for name in self.learners if name not in off_policy]
            if on_policy:
                # one env step of each level, masked where it completed: the learner joins
                # the steps into the level's trajectories
                for name, data in self._extract(acting, step, new, on_policy, steps=True).items():
                    self.learners[name].extend(data)
        if any_done is False:
            self._state = new
        else:
            self._state = self._initial.where(done_flat, new)
        self._acting = None
        self.n_total_env_steps += self.n_env_instances
        return transitions

    @property
    def n_transitions(self) -> dict[str, int]:
        """Transitions each level completed so far (reading it syncs with the device)."""
        return dict(zip(self.names, self._counter.totals()))

    def _root_tensordict(self, acting: _Acting) -> TensorDict:
        """The env TensorDict at t (observation, action, hierarchy state), as a collector has it."""
        return TensorDict(
            {
                self.keys.observation: acting.observation,
                self.keys.action: acting.action,
                **acting.records,
                STATE: acting.state.to_tensordict(self._upper, self._batch_size),
            },
            batch_size=self._batch_size,
            device=self.device,
        )

    def _next_tensordict(self, step: _Step) -> TensorDict:
        return TensorDict(
            {
                self.keys.observation: step.observation,
                self.keys.reward: step.reward,
                self.keys.done: step.done,
                self.keys.terminated: step.terminated,
                self.keys.truncated: step.truncated,
            },
            batch_size=self._batch_size,
            device=self.device,
        )

    def _extract(
        self, acting: _Acting, step: _Step, new: HierarchyState, names: Sequence[str],
        steps: bool = False,
    ) -> dict[str, TensorDict]:
        """The named levels' transitions completed at this step, or with ``steps`` this step
        as ``[n, 1]`` unpacked trajectories (for on-policy learners)."""
        root = self._root_tensordict(acting)
        next_td = self._next_tensordict(step)
        next_td.set(STATE, new.to_tensordict(self._upper, self._batch_size))
        root.set("next", next_td)
        if steps:
            return level_trajectories(root.unsqueeze(-1), self.levels, self.keys, names, pack=False)
        return level_transitions(root, self.levels, self.keys, names=names)

    def learn(self) -> dict[str, dict[str, float]]:
        """Calls each level's learner (the gradient steps its update ratio owes) and anneals
        that level's exploration (``EGreedyModule``, ``AdditiveGaussianModule``) by the
        transitions it received since the last call, so its schedule counts the level's own
        transitions; returns ``{level name: mean losses}`` for levels that stepped and logs
        them to ``writer``."""
        if not self.training:
            raise RuntimeError(
                "learn() was called in eval mode; call hierarchy.train() first (eval mode feeds "
                "no transitions to the learners)."
            )
        self._sync_mode()
        logs = {}
        for name, learner in self.learners.items():
            new = learner.n_transitions - self._annealed_at.get(name, 0)
            if new > 0:
                anneal_exploration(self._levels_by_name[name].policy, frames=new)
                self._annealed_at[name] = learner.n_transitions
            out = learner.update()
            if out:
                logs[name] = out
                if self.writer is not None:
                    for key, value in out.items():
                        self.writer.add_scalar(f"{name}/{key}", value, self.n_total_env_steps)
        return logs

    # ----------------------------------------------------------------------------- modes, copies
    def train(self) -> Hierarchy:
        """Training mode: stochastic (exploring) actions, transitions go to the learners."""
        self.training = True
        self._sync_mode()
        return self

    def eval(self) -> Hierarchy:
        """Evaluation mode: deterministic actions, no transitions to the learners, no learning."""
        self.training = False
        self._sync_mode()
        return self

    def _sync_mode(self) -> None:
        # Copies share modules, so each hierarchy re-asserts its own mode before acting.
        for level in self.levels:
            if level.policy.training != self.training:
                level.policy.train(self.training)

    def get_copy(self) -> Hierarchy:
        """A copy sharing the levels' networks and learners, with fresh per-instance state.

        Use it for evaluation rollouts (``copy.eval()``) without touching this hierarchy's
        in-flight episodes. Learning through the copy (``copy.train(); copy.learn()``) is
        allowed but discouraged: it updates the shared networks and feeds the shared replay
        buffers with the copy's transitions.
        """
        other = copy.copy(self)
        other._counter = _TransitionCounter(len(self.levels), self.n_env_instances, self.device)
        other.n_total_env_steps = 0
        other.reset()
        return other

    def set_n_env_instances(self, n_env_instances: int, propagate_to_levels: bool = True) -> None:
        """Resizes the hierarchy for ``n_env_instances`` env instances.

        The per-instance state restarts (as after :meth:`reset`, if it had been reset). With
        ``propagate_to_levels``, modules of the level policies that define
        ``set_n_env_instances(n)`` (e.g. ones keeping per-instance memory) are told too.
        """
        if not isinstance(n_env_instances, int) or n_env_instances < 1:
            raise ValueError(f"n_env_instances must be a positive int, got {n_env_instances!r}.")
        was_reset = self._state is not None
        self._build(n_env_instances)
        self._counter.resize(n_env_instances)
        if propagate_to_levels:
            for level in self.levels:
                for module in level.policy.modules():
                    resize = getattr(module, "set_n_env_instances", None)
                    if callable(resize):
                        resize(n_env_instances)
        self._state = self._initial.clone() if was_reset else None
        self._acting = None

    # ----------------------------------------------------------------------------- checkpoints
    def save(self, path: str | os.PathLike, include_buffers: bool = False, rng: bool = True) -> None:
        """Saves the level parameters, the learners (losses, target networks, optimizers, and
        replay buffers if ``include_buffers``), the in-flight per-instance state and, if
        ``rng``, torch's global RNG state, so that :meth:`load` resumes mid-episode with the
        same next actions."""
        checkpoint = {
            "version": _CHECKPOINT_VERSION,
            "levels": {level.name: level.policy.state_dict() for level in self.levels},
            "learners": {
                name: learner.state_dict(include_buffer=include_buffers)
                for name, learner in self.learners.items()
            },
            "n_env_instances": self.n_env_instances,
            "state": None if self._state is None else self._state_dict(self._state),
            "acting": None if self._acting is None else self._acting_dict(self._acting),
            "training": self.training,
            "n_total_env_steps": self.n_total_env_steps,
            "n_transitions": dict(self.n_transitions),
            "annealed_at": dict(self._annealed_at),
        }
        if rng:
            checkpoint["rng"] = {"cpu": torch.get_rng_state()}
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(checkpoint, path)

    def load(self, path: str | os.PathLike) -> None:
        """Restores what :meth:`save` wrote (into a hierarchy built with the same levels).

        The checkpoint is unpickled (replay buffers and optimizer states are not plain
        tensors): load only files you trust."""
        checkpoint = torch.load(path, map_location=self.device, weights_only=False)
        if not isinstance(checkpoint, dict) or checkpoint.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(
                f"{path!s} is not a checkpoint written by torchrl_hier.layered.Hierarchy.save "
                f"(version {_CHECKPOINT_VERSION})."
            )
        if sorted(checkpoint["levels"]) != sorted(self.names):
            raise KeyError(
                f"The checkpoint holds levels {sorted(checkpoint['levels'])}, this hierarchy has "
                f"{sorted(self.names)}."
            )
        if sorted(checkpoint["learners"]) != sorted(self.learners):
            raise KeyError(
                f"The checkpoint holds learners for {sorted(checkpoint['learners'])}, this "
                f"hierarchy has learners for {sorted(self.learners)}."
            )
        for level in self.levels:
            level.policy.load_state_dict(checkpoint["levels"][level.name])
        for name, learner in self.learners.items():
            learner.load_state_dict(checkpoint["learners"][name])
        n = checkpoint["n_env_instances"]
        if n != self.n_env_instances:
            self.set_n_env_instances(n)
        self._state = self._state_from(checkpoint["state"])
        self._acting = self._acting_from(checkpoint["acting"])
        self.training = checkpoint["training"]
        self._sync_mode()
        self.n_total_env_steps = checkpoint["n_total_env_steps"]
        self._annealed_at.clear()
        self._annealed_at.update(checkpoint["annealed_at"])
        counts = checkpoint["n_transitions"]
        self._counter = _TransitionCounter(
            len(self.levels), self.n_env_instances, self.device, [counts[name] for name in self.names]
        )
        rng = checkpoint.get("rng")
        if rng is not None:
            torch.set_rng_state(rng["cpu"].cpu())
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])

    def _state_dict(self, state: HierarchyState) -> dict:
        return state.to_tensordict(self._upper, self._batch_size).to_dict()

    def _state_from(self, data: dict | None) -> HierarchyState | None:
        td = _from_dict(data, self._batch_size, self.device)
        return None if td is None else HierarchyState.from_entries(td, self._upper)

    def _acting_dict(self, acting: _Acting) -> dict:
        return {
            "observation": acting.observation,
            "action": acting.action,
            "state": self._state_dict(acting.state),
            "records": dict(acting.records),
        }

    def _acting_from(self, data: dict | None) -> _Acting | None:
        if data is None:
            return None
        return _Acting(
            data["observation"].to(self.device),
            data["action"].to(self.device),
            self._state_from(data["state"]),
            {key: value.to(self.device) for key, value in data.get("records", {}).items()},
        )

    # ----------------------------------------------------------------------------- input checks
    def _as_observation(self, obs: Tensor | np.ndarray, what: str) -> Tensor:
        spec = self._specs.observation
        expected = (self.n_env_instances, *spec.shape)
        tensor = _to_tensor(obs, what, self.device, spec.dtype)
        if tuple(tensor.shape) != expected:
            raise ValueError(
                f"{what} has shape {tuple(tensor.shape)}, expected {expected}: "
                f"n_env_instances={self.n_env_instances} x the observation shape "
                f"{tuple(spec.shape)}."
            )
        return tensor

    def _as_flag_like(self, value: Tensor | np.ndarray, what: str, dtype: torch.dtype) -> Tensor:
        n = self.n_env_instances
        tensor = _to_tensor(value, what, self.device, dtype)
        if tuple(tensor.shape) not in ((n,), (n, 1)):
            raise ValueError(
                f"{what} has shape {tuple(tensor.shape)}, expected ({n},) or ({n}, 1): one "
                f"value per env instance (n_env_instances={n})."
            )
        return tensor.reshape(n, 1)

    def _as_flags(self, value: Tensor | np.ndarray, what: str) -> Tensor:
        """Boolean flags (or 0/1 integers); anything else is most likely swapped arguments."""
        if not isinstance(value, (Tensor, np.ndarray)):
            value = np.asarray(value)
        dtype = value.dtype
        if isinstance(value, Tensor):
            is_bool = dtype == torch.bool
            is_int = not (is_bool or dtype.is_floating_point or dtype.is_complex)
        else:
            is_bool, is_int = dtype.kind == "b", dtype.kind in "iu"
        if not (is_bool or is_int):
            raise TypeError(
                f"{what} must hold booleans (or 0/1 integers), got dtype {dtype}. "
                "process_transition takes (obs_next, rew, terminated, truncated) in that order, "
                "as env.step returns them; check that reward and flags are not swapped."
            )
        if is_int and isinstance(value, np.ndarray) and not np.isin(value, (0, 1)).all():
            raise ValueError(f"{what} holds integers other than 0 and 1: {np.unique(value)}.")
        return self._as_flag_like(value, what, torch.bool)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(levels={self.names}, n_env_instances={self.n_env_instances}, "
            f"device={self.device}, training={self.training}, learners={sorted(self.learners)})"
        )


class RandomHierarchy(Hierarchy):
    """One level acting uniformly at random in the env's finite action space (Discrete,
    MultiDiscrete, MultiBinary, or a Box with finite bounds); draws from torch's global RNG."""

    def __init__(self, env: Any, device: torch.device | str = torch.device("cpu"), **kwargs: Any):
        device = usable_device(device)
        specs = env_specs(env, kwargs.get("observation_key", "observation"))
        check_uniform_sampling(specs.action)
        level = random_level("random", specs.action.to(device), lowest=True)
        super().__init__([level], env, keep_params=True, device=device, **kwargs)


# --------------------------------------------------------------------------------- helpers
class _TransitionCounter:
    """Completed transitions per level: added per instance each step (an elementwise in-place
    add, cheaper than a reduction per step), summed over instances when read."""

    def __init__(
        self, n_levels: int, n_instances: int, device: torch.device, start: Sequence[int] | None = None
    ):
        self._folded = list(start) if start is not None else [0] * n_levels
        self._per_instance = torch.zeros(n_instances, n_levels, dtype=torch.int64, device=device)

    def add(self, completed: Tensor) -> None:
        self._per_instance += completed

    def totals(self) -> list[int]:
        return [a + b for a, b in zip(self._folded, self._per_instance.sum(0).tolist())]

    def resize(self, n_instances: int) -> None:
        self._folded = self.totals()
        self._per_instance = self._per_instance.new_zeros(n_instances, len(self._folded))


@dataclasses.dataclass(frozen=True)
class _Acting:
    """What :meth:`Hierarchy.get_action` leaves for :meth:`Hierarchy.process_transition`."""

    observation: Tensor
    action: Tensor
    state: HierarchyState
    records: dict[str, Tensor]  # the lowest level's (Level.records)


@dataclasses.dataclass(frozen=True)
class _Step:
    """The env step that :meth:`Hierarchy.process_transition` receives (``[n, 1]`` flags)."""

    observation: Tensor
    reward: Tensor
    done: Tensor
    terminated: Tensor
    truncated: Tensor


@functools.cache
def _numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    """numpy's spelling of a torch dtype, or ``None`` where numpy has none (e.g. bfloat16)."""
    try:
        return torch.empty((), dtype=dtype).numpy().dtype
    except TypeError:
        return None


def _to_tensor(value: Tensor | np.ndarray, what: str, device: torch.device, dtype: torch.dtype) -> Tensor:
    if isinstance(value, Tensor):
        return value if value.device == device and value.dtype == dtype else value.to(device, dtype)
    if isinstance(value, np.ndarray) and device.type == "cpu" and value.ndim:
        numpy_dtype = _numpy_dtype(dtype)
        if numpy_dtype is not None and value.dtype.kind in "biuf":
            # numpy's cast into a C-contiguous native array (a no-op for the usual input) and a
            # shared view: a third of torch.as_tensor's cost at these sizes, paid for every
            # input of every step; also takes the byte orders and negative strides that
            # torch.as_tensor rejects
            return torch.from_numpy(np.ascontiguousarray(value, dtype=numpy_dtype))
    try:
        return torch.as_tensor(np.asarray(value), dtype=dtype, device=device)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{what} must be a tensor or a numpy array, got {type(value).__name__}: {err}"
        ) from err


def _any_on_host(*flags: Tensor | np.ndarray) -> bool | None:
    """Whether any flag is set, if all are host data (numpy, cpu tensors); ``None`` otherwise
    (asking a device tensor would sync with the device)."""
    if not all(isinstance(f, np.ndarray) or (isinstance(f, Tensor) and f.device.type == "cpu") for f in flags):
        return None
    # np.count_nonzero: a fifth of ndarray.any()'s cost on a few flags
    return any(bool(np.count_nonzero(f) if isinstance(f, np.ndarray) else f.any()) for f in flags)


def _from_dict(data: dict | None, batch_size, device) -> TensorDictBase | None:
    if data is None:
        return None
    return TensorDict.from_dict(data, batch_size=batch_size, device=device, auto_batch_size=False)


def _has_uninitialised(module: nn.Module) -> bool:
    return any(
        nn.parameter.is_lazy(tensor)
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False))
    )


def _check_initialised(levels: Sequence[Level]) -> None:
    for level in levels:
        lazy = [
            name
            for name, tensor in (
                *level.policy.named_parameters(),
                *level.policy.named_buffers(),
            )
            if nn.parameter.is_lazy(tensor)
        ]
        if lazy:
            raise ValueError(
                f"keep_params=True, but level {level.name!r} has uninitialised (lazy) "
                f"parameters {lazy[:5]}{' ...' if len(lazy) > 5 else ''}: there are no "
                "parameters to keep. Pass keep_params=False so that the hierarchy initialises "
                "them, or run the level once (on a batch of observations) before."
            )


def _apply_obs_maps(
    levels: list[Level],
    env_obs_maps: Sequence[Callable[[Tensor], Tensor] | None] | None,
    mapped_env_obs_shapes: Sequence[int | tuple[int, ...] | None] | None,
) -> list[Level]:
    """Levels with the given obs maps and shapes (new ``Level`` objects sharing the policies:
    the caller's levels are not modified)."""
    n = len(levels)
    for what, entries in (("env_obs_maps", env_obs_maps), ("mapped_env_obs_shapes", mapped_env_obs_shapes)):
        if entries is not None and len(entries) != n:
            raise ValueError(
                f"{what} must have one entry per level ({n}: {[level.name for level in levels]}), "
                f"got {len(entries)}. Use None for levels that see the env observation unchanged."
            )
    out = []
    for i, level in enumerate(levels):
        obs_map = None if env_obs_maps is None else env_obs_maps[i]
        shape = None if mapped_env_obs_shapes is None else mapped_env_obs_shapes[i]
        changes = {}
        if obs_map is not None:
            if not callable(obs_map):
                raise TypeError(
                    f"env_obs_maps[{i}] (level {level.name!r}) must be callable or None, got "
                    f"{type(obs_map).__name__}."
                )
            if level.obs_map is not None and level.obs_map is not obs_map:
                raise ValueError(
                    f"Level {level.name!r} already has an obs_map and env_obs_maps[{i}] gives "
                    "another one; set it in one place."
                )
            changes["obs_map"] = obs_map
        if shape is not None:
            if isinstance(shape, (tuple, list)) and len(shape) == 1 and shape[0] < 0:
                shape = int(shape[0])
            elif isinstance(shape, (tuple, list)):
                shape = tuple(int(s) for s in shape)
            elif not isinstance(shape, int):
                raise TypeError(
                    f"mapped_env_obs_shapes[{i}] (level {level.name!r}) must be an int, a tuple "
                    f"or None, got {type(shape).__name__}."
                )
            changes["obs_shape"] = shape
        out.append(dataclasses.replace(level, **changes) if changes else level)
    return out
