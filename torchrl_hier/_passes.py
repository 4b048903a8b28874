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
from functools import partial

import torch
import torch.nn.functional as F
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


def level_input(
    level_obs: Tensor, parent_action: Tensor | None, batch_size, device=None
) -> TensorDict:
    """The TensorDict a level's policy reads."""
    data = {OBSERVATION: level_obs}
    if parent_action is not None:
        data[PARENT_ACTION] = parent_action
    return TensorDict(data, batch_size=batch_size, device=device)


def _act(level: Level, level_obs: Tensor, parent_action: Tensor | None, td: TensorDictBase) -> Tensor:
    out = level.policy(level_input(level_obs, parent_action, td.batch_size, td.device))
    return written_action(level, out)


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


def _state(td: TensorDictBase) -> TensorDictBase:
    state = td.get(STATE, None)
    if state is None:
        raise KeyError(
            f"The hierarchy state {STATE!r} is not in the TensorDict. Run the policy in an env "
            "that carries it: TransformedEnv(env, hierarchy.transform)."
        )
    return state


def forward_pass(td: TensorDictBase, levels: Sequence[Level], keys: EnvKeys) -> TensorDictBase:
    """Descends the hierarchy: every level at or below the active one chooses a new action.

    Writes the env action and the pending actions / start observations of the higher levels.
    """
    state = _state(td)
    completed = state.get("completed")
    obs = td.get(keys.observation)
    parent_action = None
    for i, level in enumerate(levels[:-1]):
        level_obs = level.map_observation(obs)
        new_action = _act(level, level_obs, parent_action, td)
        choose = completed[..., i]
        carried = state.get(level.name)
        parent_action = _where(choose, new_action, carried.get(ACTION))
        carried.set(ACTION, parent_action)
        carried.set(OBSERVATION, _where(choose, level_obs, carried.get(OBSERVATION)))
    lowest = levels[-1]
    td.set(keys.action, _act(lowest, lowest.map_observation(obs), parent_action, td))
    return td


def level_steps(
    td: TensorDictBase, next_td: TensorDictBase, levels: Sequence[Level], keys: EnvKeys
) -> list[LevelStep]:
    """One :class:`LevelStep` per level: what its reward and control rules see."""
    state = _state(td)
    env_reward = next_td.get(keys.reward).reshape(td.batch_size)
    steps = state.get("steps")
    lowest = len(levels) - 1
    out: list[LevelStep] = []
    for i, level in enumerate(levels):
        if i == lowest:
            read_obs = partial(_mapped, level, td, keys.observation)
            read_action = partial(td.get, keys.action)
        else:
            read_obs = partial(state.get, (level.name, OBSERVATION))
            read_action = partial(state.get, (level.name, ACTION))
        out.append(
            LevelStep(
                index=i,
                name=level.name,
                root=td,
                next=next_td,
                read_observation=read_obs,
                read_next_observation=partial(_mapped, level, next_td, keys.observation),
                read_action=read_action,
                parent=out[i - 1] if i else None,
                env_reward=env_reward,
                steps=steps[..., i],
            )
        )
    return out


def _mapped(level: Level, td: TensorDictBase, key: NestedKey) -> Tensor:
    return level.map_observation(td.get(key))


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
    state = _state(td)
    prev_completed = state.get("completed")
    steps = state.get("steps").masked_fill(prev_completed, 0) + 1
    done = next_td.get(keys.done).reshape(td.batch_size)

    infos = level_steps(td, next_td, levels, keys)
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
    previous_return = state.get("return")
    returns = torch.addcmul(
        previous_return.masked_fill(prev_completed, 0), gammas.pow(steps - 1), rewards
    ).to(previous_return.dtype)

    # A level takes control when its parent chooses, i.e. when the parent completed last step.
    took_control = F.pad(prev_completed[..., :-1], (1, 0))
    count = state.get("count").masked_fill(took_control, 0)
    n = len(levels)
    completed = [done] * n
    completed[-1] = torch.ones_like(done)
    for i in range(n - 1, 0, -1):
        info = infos[i]
        info.count = count[..., i] + completed[i]
        completed[i - 1] = (completed[i] & levels[i].control(info)) | done
    completed = torch.stack(completed, dim=-1)

    carried = {level.name: state.get(level.name) for level in levels[:-1]}
    next_td.set(
        STATE,
        TensorDict(
            {
                "completed": completed,
                "steps": steps,
                "return": returns,
                "count": count + completed,
                **carried,
            },
            batch_size=next_td.batch_size,
            device=next_td.device,
        ),
    )
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
