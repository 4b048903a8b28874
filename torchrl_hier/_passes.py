"""The forward and backward passes of a hierarchy, on a few stacked tensors.

This is the one home of the hierarchy semantics (DESIGN.md §2). The math runs on
:class:`HierarchyState` (plain tensors, batched over env instances, O(levels) tensor ops per step
and no host sync): :func:`choose_actions` is the forward pass, :func:`complete_transitions` the
backward pass. The TorchRL policy and env transform (:mod:`torchrl_hier.hierarchy`) read and
write the state as TensorDict entries around them (:func:`forward_pass`, :func:`backward_pass`);
the LayeredRL-style manual loop (:mod:`torchrl_hier.layered`) keeps the tensors and builds
TensorDicts only for the level policies and when transitions are consumed.

State carried in the env TensorDict (``n`` levels, batch shape ``B``):

- ``("hier", "completed")`` bool ``[*B, n]``: level ``i`` completed a transition at the last
  step, and therefore chooses a new action at the next one. Completion is a suffix (if level
  ``i`` completed, so did every level below it); at reset all levels count as completed, so
  the top level acts first.
- ``("hier", "steps")`` int64 ``[*B, n]``: env steps in the level's running transition (τ).
- ``("hier", "return")`` float ``[*B, n]``: ``sum_k gamma**k r_k`` over those steps.
- ``("hier", "count")`` int64 ``[*B, n]``: transitions the level completed since it took
  control (what :class:`~torchrl_hier.control.Timeout` counts).
- ``("hier", f"{name}_action")`` and ``("hier", f"{name}_observation")`` for every level but
  the lowest: its pending action and its observation when it chose that action.
- ``("hier", f"{name}_{record}")`` for every record of such a level (:attr:`Level.records`,
  e.g. the sample log-prob of its choice), kept from the choice on like the pending action.
  The lowest level's records are written into the env TensorDict itself, beside the action.

All entries are leaves of the one ``"hier"`` TensorDict: TorchRL's per-step cost (``step_mdp``,
resets, collector storage) grows with every carried entry and every nested TensorDict.

``steps`` and ``return`` are kept as they were at a completion (so a batch shows τ and R of
completed transitions in ``("next", "hier", ...)``) and restart lazily on the next step
(:func:`torchrl_hier.smdp.accumulate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import Tensor

from torchrl_hier.control import LevelStep
from torchrl_hier.level import ACTION, OBSERVATION, PARENT_ACTION, Level
from torchrl_hier.smdp import RETURN as RETURN_ENTRY
from torchrl_hier.smdp import STEPS as STEPS_ENTRY
from torchrl_hier.smdp import accumulate, masked_where

STATE = "hier"
COMPLETED = (STATE, "completed")
STEPS = (STATE, STEPS_ENTRY)
RETURN = (STATE, RETURN_ENTRY)
COUNT = (STATE, "count")


def pending_action_entry(name: str) -> str:
    """The entry of ``"hier"`` holding level ``name``'s pending action."""
    return f"{name}_{ACTION}"


def start_observation_entry(name: str) -> str:
    """The entry of ``"hier"`` holding level ``name``'s observation when it chose."""
    return f"{name}_{OBSERVATION}"


def pending_action_key(name: str) -> tuple[str, str]:
    return (STATE, pending_action_entry(name))


def start_observation_key(name: str) -> tuple[str, str]:
    return (STATE, start_observation_entry(name))


def record_entry(name: str, record: str) -> str:
    """The entry of ``"hier"`` holding what level ``name``'s running choice recorded."""
    return f"{name}_{record}"


def record_key(name: str, record: str) -> tuple[str, str]:
    return (STATE, record_entry(name, record))


def carried_entries(levels: Sequence[Level]) -> list[str]:
    """The ``"hier"`` entries of ``levels`` (those above the lowest): pending action, start
    observation and records of each."""
    return [
        entry
        for level in levels
        for entry in (
            pending_action_entry(level.name),
            start_observation_entry(level.name),
            *(record_entry(level.name, record) for record in level.records),
        )
    ]


@dataclass(frozen=True)
class EnvKeys:
    """Where the passes read and write the env's entries."""

    observation: NestedKey = "observation"
    action: NestedKey = "action"
    reward: NestedKey = "reward"
    done: NestedKey = "done"
    terminated: NestedKey = "terminated"
    truncated: NestedKey = "truncated"


@dataclass(frozen=True)
class HierarchyState:
    """The per-instance hierarchy state as stacked tensors (see the module docstring).

    ``actions`` and ``observations`` hold one tensor per level above the lowest, ``records``
    one ``{record: tensor}`` per level above the lowest (empty for levels without records).
    """

    completed: Tensor
    steps: Tensor
    returns: Tensor
    count: Tensor
    actions: tuple[Tensor, ...]
    observations: tuple[Tensor, ...]
    records: tuple[dict[str, Tensor], ...]

    @classmethod
    def read(cls, td: TensorDictBase, levels: Sequence[Level]) -> HierarchyState:
        """The state under ``"hier"`` in ``td``; ``levels``: the levels above the lowest."""
        state = _state(td)
        try:
            read = cls.from_entries(state, levels)
        except KeyError:
            read = None
        if read is None or read.completed.shape[-1] != len(levels) + 1:
            raise ValueError(
                f"The hierarchy state in the TensorDict does not belong to this hierarchy: "
                f"expected {len(levels) + 1} levels with entries {carried_entries(levels)}, found "
                f"{sorted(state.keys())}. Run each hierarchy's policy in an env transformed by "
                "that same hierarchy's transform."
            )
        return read

    @classmethod
    def from_entries(cls, state: TensorDictBase, levels: Sequence[Level]) -> HierarchyState:
        """The state from the ``"hier"`` entries themselves (see :meth:`to_tensordict`)."""
        return cls(
            completed=state.get("completed"),
            steps=state.get(STEPS_ENTRY),
            returns=state.get(RETURN_ENTRY),
            count=state.get("count"),
            actions=tuple(state.get(pending_action_entry(level.name)) for level in levels),
            observations=tuple(state.get(start_observation_entry(level.name)) for level in levels),
            records=tuple(
                {record: state.get(record_entry(level.name, record)) for record in level.records}
                for level in levels
            ),
        )

    def to_tensordict(self, levels: Sequence[Level], batch_size, device=None) -> TensorDict:
        """The ``"hier"`` entries as one TensorDict."""
        names = [level.name for level in levels]
        return built_tensordict(
            {
                "completed": self.completed,
                STEPS_ENTRY: self.steps,
                RETURN_ENTRY: self.returns,
                "count": self.count,
                **{pending_action_entry(name): action for name, action in zip(names, self.actions)},
                **{
                    start_observation_entry(name): observation
                    for name, observation in zip(names, self.observations)
                },
                **{
                    record_entry(name, record): value
                    for name, records in zip(names, self.records)
                    for record, value in records.items()
                },
            },
            batch_size,
            device,
        )

    def where(self, mask: Tensor, other: HierarchyState) -> HierarchyState:
        """This state where ``mask`` (batch-shaped), ``other`` elsewhere."""
        pick = lambda new, old: masked_where(mask, new, old)  # noqa: E731
        return HierarchyState(
            completed=pick(self.completed, other.completed),
            steps=pick(self.steps, other.steps),
            returns=pick(self.returns, other.returns),
            count=pick(self.count, other.count),
            actions=tuple(map(pick, self.actions, other.actions)),
            observations=tuple(map(pick, self.observations, other.observations)),
            records=tuple(
                {key: pick(value, old[key]) for key, value in new.items()}
                for new, old in zip(self.records, other.records)
            ),
        )

    def clone(self) -> HierarchyState:
        return HierarchyState(
            self.completed.clone(),
            self.steps.clone(),
            self.returns.clone(),
            self.count.clone(),
            tuple(t.clone() for t in self.actions),
            tuple(t.clone() for t in self.observations),
            tuple({key: t.clone() for key, t in records.items()} for records in self.records),
        )


def level_input(
    level_obs: Tensor, parent_action: Tensor | None, batch_size, device=None
) -> TensorDict:
    """The TensorDict a level's policy reads."""
    data = {OBSERVATION: level_obs}
    if parent_action is not None:
        data[PARENT_ACTION] = parent_action
    return built_tensordict(data, batch_size, device)


def built_tensordict(data: dict[str, Tensor], batch_size, device=None) -> TensorDict:
    """A TensorDict of tensors the passes built themselves, without TensorDict's per-entry
    checks (~3 us a call instead of ~15-25 us, paid per level per env step).

    Only for string-keyed tensors whose leading dims are ``batch_size`` and that live on
    ``device`` by construction: the hierarchy's dry run checks each level's observation map and
    action once, and what the policies write into these TensorDicts is still checked by
    ``set``. TorchRL's env wrappers build their step outputs this way too.
    """
    return TensorDict._new_unsafe(data, batch_size=torch.Size(batch_size), device=device)


def written_action(level: Level, out: TensorDictBase) -> Tensor:
    """The action a level's policy wrote, or an error saying how to make it write one."""
    action = out.get(ACTION, None)
    if action is None:
        raise KeyError(
            f"Level {level.name!r}: its policy did not write {ACTION!r} (it wrote "
            f"{sorted(map(str, out.keys(True, True)))}). Set the policy's out_keys so that "
            f"it writes {ACTION!r}."
        )
    return action


def written_records(level: Level, out: TensorDictBase) -> dict[str, Tensor]:
    """The records (:attr:`Level.records`) a level's policy wrote, or an error naming them."""
    records = {record: out.get(record, None) for record in level.records}
    missing = [record for record, value in records.items() if value is None]
    if missing:
        raise KeyError(
            f"Level {level.name!r} records {list(level.records)}, but its policy did not write "
            f"{missing} (it wrote {sorted(map(str, out.keys(True, True)))}). Make the policy "
            "write them (e.g. ProbabilisticActor(..., return_log_prob=True) for "
            "'action_log_prob') or drop them from the level's records."
        )
    return records


def _act(
    level: Level, level_obs: Tensor, parent_action: Tensor | None, batch_size, device
) -> tuple[Tensor, dict[str, Tensor]]:
    out = level.policy(level_input(level_obs, parent_action, batch_size, device))
    action = written_action(level, out)
    return action, (written_records(level, out) if level.records else {})


def _state(td: TensorDictBase) -> TensorDictBase:
    state = td.get(STATE, None)
    if state is None:
        raise KeyError(
            f"The hierarchy state {STATE!r} is not in the TensorDict. Run the policy in an env "
            "that carries it: TransformedEnv(env, hierarchy.transform)."
        )
    return state


# ----------------------------------------------------------------------------- the math
def choose_actions(
    levels: Sequence[Level], observation: Tensor, state: HierarchyState, batch_size, device=None
) -> tuple[Tensor, HierarchyState, dict[str, Tensor]]:
    """The forward pass: every level at or below the active one chooses a new action.

    Returns the env action, the state with the higher levels' pending actions, start
    observations and records updated, and the lowest level's records.
    """
    actions, observations, records = [], [], []
    parent_action = None
    for i, level in enumerate(levels[:-1]):
        level_obs = level.map_observation(observation)
        new_action, new_records = _act(level, level_obs, parent_action, batch_size, device)
        choose = state.completed[..., i]
        parent_action = masked_where(choose, new_action, state.actions[i])
        actions.append(parent_action)
        observations.append(masked_where(choose, level_obs, state.observations[i]))
        old = state.records[i]
        records.append({key: masked_where(choose, value, old[key]) for key, value in new_records.items()})
    lowest = levels[-1]
    env_action, lowest_records = _act(
        lowest, lowest.map_observation(observation), parent_action, batch_size, device
    )
    return env_action, HierarchyState(
        state.completed, state.steps, state.returns, state.count, tuple(actions),
        tuple(observations), tuple(records),
    ), lowest_records


def level_steps(
    levels: Sequence[Level],
    state: HierarchyState,
    observation: Tensor,
    action: Tensor | Callable[[], Tensor],
    next_observation: Tensor,
    env_reward: Tensor,
    root: TensorDictBase | Callable[[], TensorDictBase],
    next: TensorDictBase | Callable[[], TensorDictBase],
) -> list[LevelStep]:
    """One :class:`LevelStep` per level (what its reward and control rules see), after the
    forward pass produced ``state`` and the env stepped from ``observation`` to
    ``next_observation``. ``root``/``next`` (the env TensorDicts at t and t+1) and the env
    ``action`` may be zero-argument callables, built only if a rule reads them."""
    lowest = len(levels) - 1
    out: list[LevelStep] = []
    for i, level in enumerate(levels):
        if i == lowest:
            read_obs = _lazy_map(level, observation)
            read_action = action if callable(action) else _constant(action)
        else:
            read_obs = _constant(state.observations[i])
            read_action = _constant(state.actions[i])
        out.append(
            LevelStep(
                index=i,
                name=level.name,
                root=root,
                next=next,
                read_observation=read_obs,
                read_next_observation=_lazy_map(level, next_observation),
                read_action=read_action,
                parent=out[i - 1] if i else None,
                env_reward=env_reward,
                steps=state.steps[..., i],
            )
        )
    return out


def env_level_steps(
    td: TensorDictBase,
    next_td: TensorDictBase,
    levels: Sequence[Level],
    keys: EnvKeys,
    state: HierarchyState,
) -> list[LevelStep]:
    """:func:`level_steps` of an env step given as its TensorDicts at t and t+1."""
    return level_steps(
        levels,
        state,
        observation=td.get(keys.observation),
        action=td.get(keys.action),
        next_observation=next_td.get(keys.observation),
        env_reward=next_td.get(keys.reward).reshape(td.batch_size),
        root=td,
        next=next_td,
    )


def _constant(value: Tensor) -> Callable[[], Tensor]:
    return lambda: value


def _lazy_map(level: Level, observation: Tensor) -> Callable[[], Tensor]:
    return lambda: level.map_observation(observation)


def complete_transitions(
    levels: Sequence[Level], state: HierarchyState, infos: list[LevelStep], done: Tensor, gammas: Tensor
) -> HierarchyState:
    """The backward pass: which levels completed a transition with this env step, and each
    level's accumulated τ, discounted reward and control count. ``done``: batch-shaped bool;
    ``gammas``: each level's discount, ``[n]``."""
    if all(level.reward is None for level in levels):
        rewards = infos[0].env_reward.unsqueeze(-1)
    else:
        rewards = torch.stack(
            [
                info.env_reward if level.reward is None else level.reward(info).reshape(done.shape)
                for level, info in zip(levels, infos)
            ],
            dim=-1,
        )
    prev_completed = state.completed
    steps, returns = accumulate(state.steps, state.returns, rewards, gammas, restart=prev_completed)

    n = len(levels)
    if n == 1:
        # The only level completes a transition with every env step and never hands control.
        completed = torch.ones_like(prev_completed)
        count = state.count
    else:
        # A level takes control when its parent chooses, i.e. when the parent completed last
        # step.
        took_control = F.pad(prev_completed[..., :-1], (1, 0))
        count = state.count.masked_fill(took_control, 0)
        completed = [done] * n
        completed[-1] = torch.ones_like(done)
        # The lowest level completes with every env step, so only its rule decides its parent.
        lowest = infos[-1]
        lowest.count = count[..., -1] + 1
        completed[-2] = levels[-1].control(lowest) | done
        for i in range(n - 2, 0, -1):
            info = infos[i]
            info.count = count[..., i] + completed[i]
            completed[i - 1] = (completed[i] & levels[i].control(info)) | done
        completed = torch.stack(completed, dim=-1)
    return HierarchyState(
        completed, steps, returns, count + completed, state.actions, state.observations,
        state.records,
    )


# ----------------------------------------------------------------------------- TensorDict side
def forward_pass(td: TensorDictBase, levels: Sequence[Level], keys: EnvKeys) -> TensorDictBase:
    """:func:`choose_actions` on an env TensorDict: writes the env action (and the lowest
    level's records) and the pending actions / start observations / records of the higher
    levels."""
    upper = levels[:-1]
    state = HierarchyState.read(td, upper)
    action, state, lowest_records = choose_actions(
        levels, td.get(keys.observation), state, td.batch_size, td.device
    )
    carried = _state(td)
    for level, pending, start, records in zip(upper, state.actions, state.observations, state.records):
        carried.set(pending_action_entry(level.name), pending)
        carried.set(start_observation_entry(level.name), start)
        for record, value in records.items():
            carried.set(record_entry(level.name, record), value)
    td.set(keys.action, action)
    for record, value in lowest_records.items():
        td.set(record, value)
    return td


def backward_pass(
    td: TensorDictBase,
    next_td: TensorDictBase,
    levels: Sequence[Level],
    keys: EnvKeys,
    gammas: Tensor,
) -> TensorDictBase:
    """:func:`complete_transitions` on env TensorDicts: writes the new state into ``next_td``."""
    upper = levels[:-1]
    state = HierarchyState.read(td, upper)
    infos = env_level_steps(td, next_td, levels, keys, state)
    done = next_td.get(keys.done).reshape(td.batch_size)
    new = complete_transitions(levels, state, infos, done, gammas)
    carried = _state(td)
    next_td.set(
        STATE,
        built_tensordict(
            {
                "completed": new.completed,
                STEPS_ENTRY: new.steps,
                RETURN_ENTRY: new.returns,
                "count": new.count,
                # The pending actions do not change in the backward pass: share their entries.
                **{entry: carried.get(entry) for entry in carried_entries(upper)},
            },
            next_td.batch_size,
            next_td.device,
        ),
    )
    return next_td
