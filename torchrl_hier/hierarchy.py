"""Hierarchy: validates a stack of levels and builds its TorchRL policy and env transform."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.data import Binary, Composite, TensorSpec, Unbounded
from torchrl.envs import EnvBase, Transform

from torchrl_hier._carried import CarriedState
from torchrl_hier._passes import (
    STATE,
    EnvKeys,
    HierarchyState,
    backward_pass,
    env_level_steps,
    forward_pass,
    level_input,
    pending_action_entry,
    pending_action_key,
    record_entry,
    record_key,
    start_observation_entry,
    start_observation_key,
    written_action,
    written_records,
)
from torchrl_hier.collectors import reports_worker_errors
from torchrl_hier.control import Always
from torchrl_hier.level import OBSERVATION, PARENT_ACTION, Level
from torchrl_hier.smdp import accumulator_specs
from torchrl_hier.transitions import level_trajectories, level_transitions

__all__ = ["Hierarchy", "HierarchyPolicy", "HierarchyTransform"]


class HierarchyPolicy(TensorDictModuleBase):
    """The forward pass as a TorchRL policy: reads the observation and hierarchy state, writes
    the env action (with the lowest level's records) and the higher levels' pending actions."""

    def __init__(self, levels: Sequence[Level], keys: EnvKeys):
        super().__init__()
        self.levels = list(levels)
        self.keys = keys
        self.level_policies = nn.ModuleList(level.policy for level in levels)
        carried = [
            key
            for level in levels[:-1]
            for key in (
                pending_action_key(level.name),
                start_observation_key(level.name),
                *(record_key(level.name, record) for record in level.records),
            )
        ]
        # The whole state goes in: the policy passes it through to the transform.
        stats = [(STATE, name) for name in ("completed", "steps", "return", "count")]
        self.in_keys = [keys.observation, *stats, *carried]
        self.out_keys = [keys.action, *levels[-1].records, *carried]

    @reports_worker_errors
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return forward_pass(tensordict, self.levels, self.keys)


class HierarchyTransform(Transform):
    """The backward pass as an env transform: after each env step it decides which levels
    completed a transition, accumulates each level's discounted reward and τ, and carries the
    hierarchy state (declared in the observation spec, initialised on reset)."""

    def __init__(
        self,
        levels: Sequence[Level],
        keys: EnvKeys,
        level_specs: dict[str, tuple[TensorSpec, TensorSpec, dict[str, TensorSpec]]],
        reward_dtype: torch.dtype = torch.float32,
    ):
        super().__init__(in_keys=[], out_keys=[])
        self.levels = list(levels)
        self.keys = keys
        self.level_specs = level_specs
        self.reward_dtype = reward_dtype
        self.register_buffer("gammas", torch.tensor([level.gamma for level in levels]))
        # At an episode start every level counts as completed, so the top level chooses first.
        self.carried = CarriedState(
            STATE, self.state_spec, lambda state: state.get("completed").fill_(True)
        )

    def state_spec(self, batch_size: torch.Size, device: torch.device | None) -> Composite:
        """Spec of the ``"hier"`` entries for the given env batch shape."""
        n = len(self.levels)
        shape = (*batch_size, n)
        per_level = {}
        for name, (action, obs, records) in self.level_specs.items():
            per_level[pending_action_entry(name)] = Unbounded(
                (*batch_size, *action.shape), dtype=action.dtype
            )
            per_level[start_observation_entry(name)] = Unbounded(
                (*batch_size, *obs.shape), dtype=obs.dtype
            )
            for record, spec in records.items():
                per_level[record_entry(name, record)] = Unbounded(
                    (*batch_size, *spec.shape), dtype=spec.dtype
                )
        return Composite(
            {
                "completed": Binary(n, shape=shape, dtype=torch.bool),
                **accumulator_specs(batch_size, n, self.reward_dtype),
                "count": Unbounded(shape, dtype=torch.int64),
                **per_level,
            },
            shape=batch_size,
            device=device,
        )

    def initial_state(self, batch_size: torch.Size, device: torch.device | None) -> TensorDictBase:
        """The ``"hier"`` entries at the start of an episode (a fresh copy)."""
        return self.carried.initial(batch_size, device)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        return self.carried.declare(observation_spec)

    def transform_input_spec(self, input_spec: Composite) -> Composite:
        # Declared as env state too (as TensorDictPrimer does), so batched envs such as
        # ParallelEnv send the policy-written pending actions to their workers.
        if input_spec["full_state_spec"] is None:
            input_spec["full_state_spec"] = Composite(
                shape=input_spec.shape, device=input_spec.device
            )
        self.carried.declare(input_spec["full_state_spec"])
        return input_spec

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase):
        return self.carried.reset(tensordict_reset)

    @reports_worker_errors
    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase):
        return backward_pass(tensordict, next_tensordict, self.levels, self.keys, self.gammas)

    def inv(self, tensordict: TensorDictBase) -> TensorDictBase:
        # Nothing to invert, and the backward pass never writes into its input: skip the
        # defensive shallow copy Transform.inv makes on every env step.
        return tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise RuntimeError(
            "HierarchyTransform works inside an env (TransformedEnv(env, hierarchy.transform)); "
            "it has no meaning on replay-buffer data. Use hierarchy.transitions(batch)."
        )


class Hierarchy:
    """A stack of levels, highest first, over a TorchRL env.

    Exposes :attr:`policy` (the forward pass, a ``TensorDictModule``), :attr:`transform`
    (the backward pass, an env ``Transform``; a new one each access, since a transform
    belongs to one env) and :meth:`transitions` (each level's SMDP transitions in a batch).

    Args:
        levels: the levels, highest first.
        env: the env the hierarchy acts in (not yet transformed by it); used for its specs.
        observation_key: the env observation every level's obs map reads.
        device: where the level policies run; defaults to the env's device (or cpu).
    """

    def __init__(
        self,
        levels: Sequence[Level],
        env: EnvBase,
        *,
        observation_key="observation",
        device: torch.device | str | None = None,
    ):
        levels = list(levels)
        if not levels:
            raise ValueError("A hierarchy needs at least one level; got an empty list.")
        for level in levels:
            if not isinstance(level, Level):
                raise TypeError(f"Levels must be torchrl_hier.Level, got {type(level).__name__}.")
        names = [level.name for level in levels]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"Level names must be unique; duplicated: {duplicates}.")
        if not isinstance(env, EnvBase):
            raise TypeError(
                f"Hierarchy needs a TorchRL env (torchrl.envs.EnvBase), got {type(env).__name__}. "
                "Wrap a gymnasium env with torchrl.envs.GymWrapper(env) or build it with "
                "GymEnv(name); for LayeredRL-style code on a gymnasium vector env, use "
                "torchrl_hier.layered.Hierarchy."
            )
        top = levels[0]
        if not isinstance(top.control, Always):
            warnings.warn(
                f"Level {top.name!r} is the top level, so its return-control rule "
                f"{top.control!r} is never consulted: there is no level above to hand control "
                "to (the top level chooses again whenever the level below hands control back, "
                "and at episode starts). Leave the top level's control at its default, or add "
                "a level above it.",
                UserWarning,
                stacklevel=2,
            )
        self.levels = levels
        self.env = env
        self.device = usable_device(device if device is not None else (env.device or "cpu"))
        self.keys = EnvKeys(
            observation=observation_key,
            action=env.action_key,
            reward=env.reward_key,
            done=_done_key(env, "done"),
            terminated=_done_key(env, "terminated"),
            truncated=_done_key(env, "truncated"),
        )
        self._check_devices()
        with torch.random.fork_rng(devices=[]):  # dry runs leave the user's RNG untouched
            self.level_specs = self._check_levels()
            self._check_rules()
        self.policy = HierarchyPolicy(levels, self.keys)

    @property
    def transform(self) -> HierarchyTransform:
        return HierarchyTransform(
            self.levels,
            self.keys,
            self.level_specs,
            reward_dtype=self.env.full_reward_spec[self.keys.reward].dtype,
        )

    @property
    def names(self) -> list[str]:
        return [level.name for level in self.levels]

    def transitions(self, batch: TensorDictBase) -> dict[str, TensorDict]:
        """Each level's completed semi-MDP transitions in ``batch``, keyed by level name."""
        return level_transitions(batch, self.levels, self.keys)

    def trajectories(self, batch: TensorDictBase) -> dict[str, TensorDict]:
        """Each level's completed transitions in ``batch`` (time last, as collectors give it)
        as ``[instances, T_level]`` trajectories in time order, with a ``"mask"`` of the
        entries that hold one: what GAE and on-policy learners read
        (:func:`~torchrl_hier.transitions.level_trajectories`)."""
        return level_trajectories(batch, self.levels, self.keys)

    def _check_devices(self) -> None:
        for level in self.levels:
            tensors = [*level.policy.parameters(), *level.policy.buffers()]
            for tensor in tensors:
                if tensor.device != self.device:
                    raise ValueError(
                        f"Level {level.name!r}: its policy has tensors on {tensor.device} but "
                        f"the hierarchy runs on {self.device}. Move it with "
                        f"level.policy.to({str(self.device)!r}) or pass device={str(tensor.device)!r}."
                    )

    def _check_levels(self) -> dict[str, tuple[TensorSpec, TensorSpec, dict[str, TensorSpec]]]:
        """Dry-runs every level on spec-shaped data; returns (action spec, observation spec,
        record specs) of each level above the lowest, for the transform's state spec."""
        env = self.env
        obs_spec = env.observation_spec.get(self.keys.observation, None)
        if obs_spec is None:
            raise KeyError(
                f"The env has no observation {self.keys.observation!r} (it has "
                f"{list(env.observation_spec.keys(True, True))}); pass observation_key=."
            )
        batch_size = env.batch_size
        env_action_spec = env.full_action_spec[self.keys.action]
        obs = obs_spec.zero().to(self.device)
        parent_action, parent = None, None
        level_specs = {}
        lowest = len(self.levels) - 1
        for i, level in enumerate(self.levels):
            level_obs = _mapped_observation(level, obs, obs_spec, batch_size)
            if i == lowest:
                action_spec = env_action_spec
                unbatched = env.full_action_spec_unbatched[self.keys.action]
                if level.action_spec is not None and not _same_spec(level.action_spec, unbatched):
                    raise ValueError(
                        f"Level {level.name!r} is the lowest level, so it emits the env action, "
                        f"but its action_spec {_describe(level.action_spec)} differs from the env's "
                        f"{_describe(unbatched)} (one instance's: env.action_spec_unbatched). "
                        "Leave action_spec=None to use the env's."
                    )
            elif level.action_spec is None:
                raise ValueError(
                    f"Level {level.name!r} is above the lowest level, so it needs an action_spec "
                    "(the spec of the abstract action it hands to the level below)."
                )
            else:
                action_spec = level.action_spec
            try:
                with torch.no_grad():
                    out = level.policy(level_input(level_obs, parent_action, batch_size))
            except Exception as err:
                where = (
                    f" with the action of level {parent.name!r} ({_describe(parent.action_spec)}) "
                    "as its 'parent_action'"
                    if parent is not None
                    else ""
                )
                fix = (
                    "Make the spec of the level above match what this policy reads, or fix this "
                    "policy's in_keys/input size."
                    if parent is not None
                    else "It is the top level: it reads only 'observation' (its mapped env "
                    "observation) and there is no 'parent_action', since no level is above it. "
                    "Fix this policy's in_keys/input size."
                )
                offered = [OBSERVATION] if parent is None else [OBSERVATION, PARENT_ACTION]
                reads = getattr(level.policy, "in_keys", None)
                reads_hint = f" It reads {list(reads)}; a level's policy gets {offered}." if reads else ""
                raise ValueError(
                    f"Level {level.name!r}: its policy failed on its observation of shape "
                    f"{tuple(level_obs.shape)}{where}: {str(err).rstrip('.')}.{reads_hint} {fix}"
                ) from err
            action = written_action(level, out)
            records = written_records(level, out)
            expected = action_spec.zero(batch_size) if i < lowest else action_spec.zero()
            if action.shape != expected.shape or action.dtype != expected.dtype:
                raise ValueError(
                    f"Level {level.name!r}: its policy wrote an action of shape "
                    f"{tuple(action.shape)} and dtype {action.dtype}, but its action spec "
                    f"({_describe(action_spec)}) gives shape {tuple(expected.shape)} and dtype "
                    f"{expected.dtype}. Make the policy's output match the spec, or the spec "
                    "match the policy."
                )
            if action.device != self.device:
                raise ValueError(
                    f"Level {level.name!r}: its policy wrote its action on {action.device} but the "
                    f"hierarchy runs on {self.device}. Move the policy (and its buffers) to "
                    f"{self.device}."
                )
            if i == lowest and not action_spec.is_in(action.to(action_spec.device)):
                raise ValueError(
                    f"Level {level.name!r}: on a dry run its policy wrote env actions outside "
                    f"the env's action spec {_describe(action_spec)}, e.g. {action.reshape(-1)[:4].tolist()}. "
                    "Make the policy's output fit the spec (e.g. as many Q-values as actions)."
                )
            for record, value in records.items():
                if tuple(value.shape[: len(batch_size)]) != tuple(batch_size):
                    raise ValueError(
                        f"Level {level.name!r}: its policy wrote the record {record!r} with shape "
                        f"{tuple(value.shape)}, which does not start with the env batch shape "
                        f"{tuple(batch_size)}: a choice records one value per env instance."
                    )
            if i < lowest:
                level_specs[level.name] = (
                    Unbounded(action.shape[len(batch_size):], dtype=action.dtype),
                    Unbounded(level_obs.shape[len(batch_size):], dtype=level_obs.dtype),
                    {
                        record: Unbounded(value.shape[len(batch_size):], dtype=value.dtype)
                        for record, value in records.items()
                    },
                )
            parent_action, parent = action, level
        return level_specs


    def _check_rules(self) -> None:
        """Dry-runs each level's reward and return-control rule on one fake step, so a rule
        that does not fit the env fails here, naming its level, rather than mid-rollout."""
        env, keys = self.env, self.keys
        batch_size = env.batch_size
        transform = self.transform
        td = env.full_observation_spec.zero().to(self.device)
        td.set(STATE, transform.initial_state(batch_size, self.device))
        with torch.no_grad():
            forward_pass(td, self.levels, keys)
        next_td = env.full_observation_spec.zero().to(self.device)
        next_td.update(env.full_reward_spec.zero().to(self.device))
        next_td.update(env.full_done_spec.zero().to(self.device))
        state = HierarchyState.read(td, self.levels[:-1])
        steps = env_level_steps(td, next_td, self.levels, keys, state)
        for level, step in zip(self.levels, steps):
            step.count = torch.ones(batch_size, dtype=torch.int64, device=self.device)
            checks = [("reward", level.reward)] if level.reward is not None else []
            if step.index > 0:
                checks.append(("control", level.control))
            for what, rule in checks:
                try:
                    out = rule(step)
                except Exception as err:
                    raise ValueError(
                        f"Level {level.name!r}: its {what} rule failed on a dry-run step: {err}"
                    ) from err
                if out.shape not in (batch_size, (*batch_size, 1)):
                    raise ValueError(
                        f"Level {level.name!r}: its {what} rule returned shape "
                        f"{tuple(out.shape)}; it must return one value per env instance, shape "
                        f"{tuple(batch_size)}."
                    )


def usable_device(spec: torch.device | str) -> torch.device:
    """``torch.device(spec)``, refusing a CUDA device this machine does not have."""
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={str(spec)!r} but this machine has no usable CUDA GPU "
                "(torch.cuda.is_available() is False). Use device='cpu'."
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device={str(spec)!r} but this machine has {count} CUDA device(s) "
                f"(cuda:0 .. cuda:{count - 1})."
            )
    return device


def _done_key(env: EnvBase, name: str):
    for key in env.done_keys:
        if (key if isinstance(key, str) else key[-1]) == name:
            return key
    return name


def _same_spec(spec: TensorSpec, env_spec: TensorSpec) -> bool:
    return spec.to(env_spec.device) == env_spec


def _describe(spec: TensorSpec) -> str:
    return f"{type(spec).__name__}(shape={tuple(spec.shape)}, dtype={spec.dtype})"


def _mapped_observation(level: Level, obs, obs_spec: TensorSpec, batch_size: torch.Size):
    """Applies the level's obs map and checks the result against its declared shape."""
    try:
        level_obs = level.map_observation(obs)
    except Exception as err:
        raise ValueError(
            f"Level {level.name!r}: its obs_map failed on an env observation of shape "
            f"{tuple(obs.shape)}: {err}"
        ) from err
    env_shape = tuple(obs_spec.shape[len(batch_size):])
    declared = level.obs_shape
    if declared is None:
        if level.obs_map is None:
            return level_obs
        expected = None
    elif isinstance(declared, int) and declared < 0:
        if not env_shape:
            raise ValueError(
                f"Level {level.name!r}: obs_shape={declared} removes entries from the last dim, "
                "but the env observation is a scalar."
            )
        expected = (*env_shape[:-1], env_shape[-1] + declared)
    elif isinstance(declared, int):
        expected = (declared,)
    else:
        expected = tuple(declared)
    got = tuple(level_obs.shape[len(batch_size):])
    if tuple(level_obs.shape[: len(batch_size)]) != tuple(batch_size):
        raise ValueError(
            f"Level {level.name!r}: its obs_map changed the batch dims: env observation of shape "
            f"{tuple(obs.shape)} became {tuple(level_obs.shape)}. Maps must act on trailing dims "
            "(e.g. obs[..., 2:])."
        )
    if expected is not None and got != expected:
        raise ValueError(
            f"Level {level.name!r}: its obs_map outputs per-instance shape {got}, but "
            f"obs_shape={declared!r} declares {expected}. Fix the map or the declared shape."
        )
    return level_obs
