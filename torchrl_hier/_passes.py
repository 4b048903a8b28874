"""The forward and backward passes of a hierarchy, as functions on TensorDicts.

This is the one home of the hierarchy semantics (DESIGN.md §2). The policy
(:class:`~torchrl_hier.hierarchy.HierarchyPolicy`), the env transform
(:class:`~torchrl_hier.hierarchy.HierarchyTransform`) and the LayeredRL-style manual-loop API
all call these functions. Everything is batched over env instances: the work per step is
O(levels) tensor ops, with no host sync.

State carried in the env TensorDict (``n`` levels, batch shape ``B``):

- ``("hier", "completed")`` bool ``[*B, n]``: level ``i`` completed a transition at the last
  step, and therefore chooses a new action at the next one. Completion is a suffix (if level
  ``i`` completed, so did every level below it); at reset all levels count as completed, so
  the top level acts first.
- ``("hier", "steps")`` int64 ``[*B, n]``: env steps in the level's running transition (τ).
- ``("hier", "return")`` float ``[*B, n]``: ``sum_k gamma**k r_k`` over those steps.
- ``("hier", "count")`` int64 ``[*B, n]``: transitions the level completed since it took
  control (what :class:`~torchrl_hier.control.Timeout` counts).
- ``("hier", name, "action")`` and ``("hier", name, "observation")`` for every level but the
  lowest: its pending action and its observation when it chose that action.

``steps`` and ``return`` are kept as they were at a completion (so a batch shows τ and R of
completed transitions in ``("next", "hier", ...)``) and restart lazily on the next step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import Tensor

from torchrl_hier.control import LevelStep
from torchrl_hier.level import ACTION, OBSERVATION, PARENT_ACTION, Level

STATE = "hier"
COMPLETED = (STATE, "completed")
STEPS = (STATE, "steps")
RETURN = (STATE, "return")
COUNT = (STATE, "count")


def pending_action_key(name: str) -> tuple[str, str, str]:
    return (STATE, name, ACTION)


def start_observation_key(name: str) -> tuple[str, str, str]:
    return (STATE, name, OBSERVATION)


@dataclass(frozen=True)
class EnvKeys:
    """Where the passes read and write the env's entries."""

    observation: NestedKey = "observation"
    action: NestedKey = "action"
    reward: NestedKey = "reward"
    done: NestedKey = "done"
    terminated: NestedKey = "terminated"
    truncated: NestedKey = "truncated"


def _where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """``torch.where`` with a batch mask broadcast over the trailing dims of ``new``."""
    return torch.where(mask.reshape(mask.shape + (1,) * (new.ndim - mask.ndim)), new, old)


def _missing_state_error(key: NestedKey) -> KeyError:
    return KeyError(
        f"The hierarchy state {key!r} is not in the TensorDict. Run the policy in an env that "
        "carries it: TransformedEnv(env, hierarchy.transform)."
    )


def level_input(level_obs: Tensor, parent_action: Tensor | None, batch_size) -> TensorDict:
    """The TensorDict a level's policy reads."""
    data = {OBSERVATION: level_obs}
    if parent_action is not None:
        data[PARENT_ACTION] = parent_action
    return TensorDict(data, batch_size=batch_size)


def forward_pass(td: TensorDictBase, levels: Sequence[Level], keys: EnvKeys) -> TensorDictBase:
    """Descends the hierarchy: every level at or below the active one chooses a new action.

    Writes the env action and the pending actions / start observations of the higher levels.
    """
    completed = td.get(COMPLETED, None)
    if completed is None:
        raise _missing_state_error(COMPLETED)
    obs = td.get(keys.observation)
    lowest = len(levels) - 1
    parent_action = None
    for i, level in enumerate(levels):
        level_obs = level.map_observation(obs)
        out = level.policy(level_input(level_obs, parent_action, td.batch_size))
        new_action = out.get(ACTION, None)
        if new_action is None:
            raise KeyError(
                f"Level {level.name!r}: its policy did not write {ACTION!r} (it wrote "
                f"{sorted(map(str, out.keys(True, True)))}). Set the policy's out_keys so that "
                f"it writes {ACTION!r}."
            )
        if i == lowest:
            td.set(keys.action, new_action)
            break
        choose = completed[..., i]
        action = _where(choose, new_action, td.get(pending_action_key(level.name)))
        start_key = start_observation_key(level.name)
        td.set(pending_action_key(level.name), action)
        td.set(start_key, _where(choose, level_obs, td.get(start_key)))
        parent_action = action
    return td


def level_steps(
    td: TensorDictBase, next_td: TensorDictBase, levels: Sequence[Level], keys: EnvKeys
) -> list[LevelStep]:
    """One :class:`LevelStep` per level: what its reward and control rules see."""
    obs = td.get(keys.observation)
    next_obs = next_td.get(keys.observation)
    env_reward = next_td.get(keys.reward).reshape(td.batch_size)
    steps = td.get(STEPS)
    lowest = len(levels) - 1
    out = []
    for i, level in enumerate(levels):
        if i == lowest:
            observation, action = level.map_observation(obs), td.get(keys.action)
        else:
            observation = td.get(start_observation_key(level.name))
            action = td.get(pending_action_key(level.name))
        out.append(
            LevelStep(
                index=i,
                name=level.name,
                observation=observation,
                action=action,
                parent_action=out[i - 1].action if i else None,
                next_observation=level.map_observation(next_obs),
                env_reward=env_reward,
                steps=steps[..., i],
                root=td,
                next=next_td,
            )
        )
    return out


def backward_pass(
    td: TensorDictBase,
    next_td: TensorDictBase,
    levels: Sequence[Level],
    keys: EnvKeys,
    gammas: Tensor,
) -> TensorDictBase:
    """Ascends the hierarchy after an env step and writes the new state into ``next_td``.

    ``gammas`` holds each level's discount, shape ``[n]``, on the env's device.
    """
    prev_completed = td.get(COMPLETED, None)
    if prev_completed is None:
        raise _missing_state_error(COMPLETED)
    n = len(levels)
    steps = torch.where(prev_completed, 0, td.get(STEPS)) + 1
    # A level takes control when its parent chooses, i.e. when the parent completed last step.
    took_control = torch.cat(
        [torch.zeros_like(prev_completed[..., :1]), prev_completed[..., :-1]], dim=-1
    )
    count = torch.where(took_control, 0, td.get(COUNT))
    done = next_td.get(keys.done).reshape(td.batch_size)

    steps_info = level_steps(td, next_td, levels, keys)
    rewards = torch.stack(
        [
            step.env_reward if level.reward is None else level.reward(step).reshape(done.shape)
            for level, step in zip(levels, steps_info)
        ],
        dim=-1,
    )
    ret = torch.where(prev_completed, 0, td.get(RETURN)) + gammas ** (steps - 1) * rewards

    completed = [done] * n
    completed[-1] = torch.ones_like(done)
    for i in range(n - 1, 0, -1):
        step = steps_info[i]
        step.count = count[..., i] + completed[i]
        hands_back = completed[i] & levels[i].control(step)
        completed[i - 1] = hands_back | done
    completed = torch.stack(completed, dim=-1)

    next_td.set(COMPLETED, completed)
    next_td.set(STEPS, steps)
    next_td.set(RETURN, ret.to(td.get(RETURN).dtype))
    next_td.set(COUNT, count + completed)
    for level in levels[:-1]:
        for key in (pending_action_key(level.name), start_observation_key(level.name)):
            next_td.set(key, td.get(key))
    return next_td


def reset_state(
    td_reset: TensorDictBase, initial_state: TensorDictBase, previous: TensorDictBase | None,
    reset: Tensor | None,
) -> TensorDictBase:
    """Writes the initial hierarchy state into ``td_reset`` for the instances being reset.

    ``initial_state`` holds the ``"hier"`` entries at their initial values (all levels completed,
    zeros elsewhere); instances not in ``reset`` keep their ``previous`` state.
    """
    state = initial_state
    if reset is not None and previous is not None and STATE in previous.keys():
        reset = reset.reshape(td_reset.batch_size)
        state = initial_state.where(reset, previous.get(STATE))
    td_reset.set(STATE, state)
    return td_reset
