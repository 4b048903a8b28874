"""Per-choice-point semi-MDP transitions out of a collected batch, in TorchRL keys.

A transition of choice point ``c`` runs from one choice of ``c`` to the next choice of ``c`` by
the same env instance, or to the episode's end. It completes in one of three places of the
batch, all read with tensor ops (no loop over instances or steps):

1. at step ``t`` where the instance makes its first choice of ``c`` in that step, if a choice
   of ``c`` was pending: start = the carried last choice, reward/τ = the carried accumulators;
2. at step ``t`` between two choices of ``c`` made in the same step (no env step between
   them): τ = 0, reward 0, both joint states share the observation;
3. at an episode end (``("next", "done")``) while a choice is pending: reward/τ from the
   accumulators after the step, next observation = the final one, and, since no next choice
   exists, next stack/args = those of the last choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tensordict import TensorDict, TensorDictBase

from torchrl_hier.ham import _keys as K

if TYPE_CHECKING:
    from torchrl_hier.ham.ham import HAM
    from torchrl_hier.ham.machines import ChoicePoint

__all__ = ["ham_transitions"]


def ham_transitions(batch: TensorDictBase, ham: HAM) -> dict[str, TensorDict]:
    """Each choice point's completed transitions in ``batch`` (any batch shape).

    Returns flat TensorDicts keyed by choice-point name with ``observation``, ``stack``,
    ``args`` (with an args spec), ``action`` (the choice), ``steps_to_next_obs`` (τ, ``[N, 1]``)
    and under ``"next"``: ``observation``, ``stack``, ``args``, ``reward``
    (``sum_k gamma**k r_k``, ``[N, 1]``), ``done``, ``terminated``, ``truncated``. Rows are in
    the order of ``batch`` flattened (choices of one step in the order they were made). These
    are what ``DQNLoss`` and the value estimators read (they use ``gamma**steps_to_next_obs``).
    """
    if K.STATE not in batch.keys() or ("next", K.STATE) not in batch.keys(True):
        raise KeyError(
            f"The batch has no {K.STATE!r} state: collect it in TransformedEnv(env, "
            "ham.transform) with ham.policy."
        )
    flat = batch.reshape(-1)
    nxt = flat.get("next")
    state, next_state = flat.get(K.STATE), nxt.get(K.STATE)
    observation, next_observation = flat.get(ham.observation_key), nxt.get(ham.observation_key)
    n_rows = flat.shape[0]
    flags = {name: nxt.get(key).reshape(n_rows, 1) for name, key in ham.done_keys.items() if key in nxt.keys(True)}
    done = flags["done"].reshape(n_rows)
    k_max = ham.max_choices_per_step
    rows = torch.arange(n_rows, device=done.device)
    out = {}
    for i, (name, point) in enumerate(ham.choice_points.items()):
        if (name, K.EVENT_STACK) not in state.keys(True):
            raise KeyError(
                f"The batch has no choice events of {name!r}: it was not collected with this "
                "HAM's policy."
            )
        parts = [
            _at_choice(point, state, observation, rows, i, flags),
            _within_step(point, state, observation, rows, k_max, flags),
            _at_episode_end(point, next_state, next_observation, done, rows, i, k_max, flags),
        ]
        order = torch.cat([p.pop("_order") for p in parts])
        merged = torch.cat(parts)
        out[name] = merged[order.argsort(stable=True)]
    return out


def _make(point: ChoicePoint, order, obs, stack, args, choice, tau, next_obs, next_stack, next_args,
          reward, flags) -> TensorDict:
    m = order.shape[0]
    data = {
        "_order": order,
        K.OBSERVATION: obs,
        K.STACK: stack,
        K.ACTION: choice,
        K.STEPS_TO_NEXT_OBS: tau.reshape(m, 1),
        "next": {K.OBSERVATION: next_obs, K.STACK: next_stack, "reward": reward.reshape(m, 1), **flags},
    }
    if point.args_spec is not None:
        data[K.ARGS] = args
        data["next"][K.ARGS] = next_args
    return TensorDict(data, batch_size=[m])


def _false_flags(flags: dict, m: int) -> dict:
    return {name: torch.zeros(m, 1, dtype=value.dtype, device=value.device) for name, value in flags.items()}


def _at_choice(point, state, observation, rows, i, flags) -> TensorDict:
    count = state.get((point.name, K.N))
    mask = (count > 0) & state.get("pending")[:, i]
    idx = rows[mask]
    carried = state.get(point.name)[idx]
    events = state.get(point.name)
    return _make(
        point,
        idx * (events.get(K.EVENT_STACK).shape[1] + 1),
        carried.get(K.OBSERVATION),
        carried.get(K.STACK),
        carried.get(K.ARGS, None),
        carried.get(K.CHOICE),
        state.get("steps")[idx, i],
        point.map_observation(observation[idx]),
        events.get(K.EVENT_STACK)[idx, 0],
        events.get(K.EVENT_ARGS)[idx, 0] if point.args_spec is not None else None,
        state.get("return")[idx, i],
        _false_flags(flags, idx.shape[0]),
    )


def _within_step(point, state, observation, rows, k_max, flags) -> TensorDict:
    events = state.get(point.name)
    count = events.get(K.N)
    later = torch.arange(1, k_max, device=count.device)
    idx, slot = (count[:, None] > later).nonzero(as_tuple=True)
    slot = slot + 1
    m = idx.shape[0]
    ev_stack, ev_choice = events.get(K.EVENT_STACK), events.get(K.EVENT_CHOICE)
    ev_args = events.get(K.EVENT_ARGS) if point.args_spec is not None else None
    obs = point.map_observation(observation[idx])
    returns = state.get("return")
    return _make(
        point,
        idx * (k_max + 1) + slot,
        obs,
        ev_stack[idx, slot - 1],
        ev_args[idx, slot - 1] if ev_args is not None else None,
        ev_choice[idx, slot - 1],
        torch.zeros(m, dtype=torch.int64, device=idx.device),
        obs.clone(),
        ev_stack[idx, slot],
        ev_args[idx, slot] if ev_args is not None else None,
        torch.zeros(m, dtype=returns.dtype, device=idx.device),
        _false_flags(flags, m),
    )


def _at_episode_end(point, next_state, next_observation, done, rows, i, k_max, flags) -> TensorDict:
    mask = done & next_state.get("pending")[:, i]
    idx = rows[mask]
    carried = next_state.get(point.name)[idx]
    stack, args = carried.get(K.STACK), carried.get(K.ARGS, None)
    return _make(
        point,
        idx * (k_max + 1) + k_max,
        carried.get(K.OBSERVATION),
        stack,
        args,
        carried.get(K.CHOICE),
        next_state.get("steps")[idx, i],
        point.map_observation(next_observation[idx]),
        stack.clone(),
        args.clone() if args is not None else None,
        next_state.get("return")[idx, i],
        {name: value[idx] for name, value in flags.items()},
    )
