"""Per-level semi-MDP transitions out of a collected batch, in TorchRL keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor

from torchrl_hier._passes import (
    COMPLETED,
    RETURN,
    STEPS,
    EnvKeys,
    pending_action_key,
    record_key,
    start_observation_key,
)
from torchrl_hier.level import ACTION, OBSERVATION, PARENT_ACTION, Level

STEPS_TO_NEXT_OBS = "steps_to_next_obs"
#: The entry of a level's trajectories saying which entries hold a transition.
TRAJECTORY_MASK = "mask"


def level_transitions(
    batch: TensorDictBase,
    levels: Sequence[Level],
    keys: EnvKeys,
    names: Sequence[str] | None = None,
) -> dict[str, TensorDict]:
    """Each level's completed transitions in ``batch`` (any batch shape, e.g. ``[envs, time]``);
    only those of the levels in ``names`` when given.

    A level's transitions are flat TensorDicts holding ``observation``, ``parent_action``
    (below the top), ``action``, the level's records (:attr:`Level.records`, e.g.
    ``action_log_prob``), ``steps_to_next_obs`` (τ), and under ``"next"``: ``observation``,
    ``parent_action``, ``reward`` (``sum_k gamma**k r_k``), ``done``, ``terminated`` and
    ``truncated``. Rows keep the order of ``batch`` flattened.

    An episode end (``("next", "done")``) completes every level's transition, also one that
    a transform after the hierarchy's ended (e.g. the ``StepCounter`` of
    ``Collector(max_frames_per_traj=...)``), where ``("next", "hier", "completed")`` does not
    show it.
    """
    # Transitions are data: a rollout run with grad enabled must not leak its graph.
    return {
        name: level_batch[completed].detach()
        for name, (level_batch, completed) in _level_batches(batch, levels, keys, names).items()
    }


def level_trajectories(
    batch: TensorDictBase,
    levels: Sequence[Level],
    keys: EnvKeys,
    names: Sequence[str] | None = None,
    pack: bool = True,
) -> dict[str, TensorDict]:
    """Each level's completed transitions in ``batch`` as trajectories, in TorchRL's layout.

    ``batch`` has time as its last dim (``[*B, T]``, as ``Collector`` and ``env.rollout``
    give it). A level's trajectories have shape ``[N, T_level]`` (``N``: the ``*B`` env
    instances flattened): row ``n`` holds instance ``n``'s transitions (the entries of
    :func:`level_transitions`) in time order, packed to the front, and
    ``TRAJECTORY_MASK`` (bool ``[N, T_level]``) says which entries hold one. So
    ``torchrl.objectives.value.GAE`` runs over each row's semi-MDP steps, discounting by
    ``gamma**steps_to_next_obs``. A transition still running at the end of ``batch`` is in
    none of its rows: it completes, with what its choice recorded, in a later batch.
    With ``pack=False`` the rows keep one entry per env step (``[N, T]``) and the mask says
    where the level completed a transition (how a step-by-step loop hands them over).
    """
    if batch.ndim == 0:
        raise ValueError("level_trajectories needs a batch with a time dim, got a 0-d TensorDict.")
    flat = batch.reshape(-1, batch.shape[-1]) if batch.ndim > 1 else batch.unsqueeze(0)
    _check_time_last(flat, keys)
    out = {}
    for name, (level_batch, completed) in _level_batches(flat, levels, keys, names).items():
        if pack:
            out[name] = pack_trajectories(level_batch.detach(), completed)
        else:
            out[name] = level_batch.detach().set(TRAJECTORY_MASK, completed)
    return out


def _check_time_last(flat: TensorDictBase, keys: EnvKeys) -> None:
    """Refuses a ``[N, T]`` batch whose rows are not each one instance's consecutive steps
    (e.g. a flattened or transposed collector batch): along a row, every level's τ restarts
    at 1 after it completed a transition (or the episode ended) and grows by 1 otherwise.
    Padding that ``split_trajs`` marks in ``("collector", "mask")`` is not checked. One host
    sync per batch."""
    if flat.shape[-1] < 2:
        return
    steps = flat.get(("next", *STEPS))
    completed = level_completions(flat, keys)
    consistent = steps[:, 1:] == torch.where(completed[:, :-1], 1, steps[:, :-1] + 1)
    valid = flat.get(("collector", "mask"), None)
    if valid is not None:
        both = (valid[:, 1:] & valid[:, :-1]).reshape(*consistent.shape[:-1], 1)
        consistent = consistent | ~both
    if not bool(consistent.all()):
        raise ValueError(
            "The batch's last dim is not time: along it, the levels' step counts "
            "(('next', 'hier', 'steps')) do not follow one instance's consecutive steps. Pass "
            "the batch as the Collector or env.rollout gives it ([*env_batch, T], time last), "
            "not flattened, transposed or shuffled."
        )


def pack_trajectories(data: TensorDictBase, valid: Tensor) -> TensorDict:
    """``data`` (``[N, T]``) with each row's ``valid`` entries moved to its front, in order, and
    the rows cut to the longest count; ``TRAJECTORY_MASK`` marks the entries kept.

    Packing trajectories that are already packed (or their concatenation along time, each
    with its own mask) gives the packed union: how chunks of one run are joined."""
    if data.ndim != 2 or valid.shape != data.shape:
        raise ValueError(
            f"pack_trajectories takes [N, T] data with an [N, T] mask, got {tuple(data.shape)} "
            f"and {tuple(valid.shape)}."
        )
    counts = valid.sum(-1)
    length = int(counts.max()) if counts.numel() else 0  # one host sync per batch and level
    order = torch.argsort((~valid).to(torch.uint8), dim=-1, stable=True)[:, :length]
    rows = torch.arange(data.shape[0], device=valid.device).unsqueeze(-1)
    packed = data.exclude(TRAJECTORY_MASK)[rows, order]
    positions = torch.arange(length, device=valid.device)
    packed.set(TRAJECTORY_MASK, positions < counts.unsqueeze(-1))
    return packed


def level_completions(batch: TensorDictBase, keys: EnvKeys) -> Tensor:
    """Where each level completed a transition in ``batch``: bool ``[*batch, n_levels]``.

    ``("next", "hier", "completed")``, or'ed with the episode ends (``("next", done)``). The
    backward pass already completes every level at the ends it sees; a transform after the
    hierarchy's (a ``StepCounter`` appended later, e.g. by
    ``Collector(max_frames_per_traj=...)``) ends episodes it does not see."""
    next_batch = batch.get("next")
    if COMPLETED not in next_batch.keys(True):
        raise KeyError(
            f"The batch has no ('next', {COMPLETED!r}): it was not collected in an env "
            "transformed by this hierarchy's transform."
        )
    completed = next_batch.get(COMPLETED)
    done = next_batch.get(keys.done, None)
    if done is None:
        return completed
    return completed | done.reshape(*completed.shape[:-1], 1)


def _level_batches(
    batch: TensorDictBase,
    levels: Sequence[Level],
    keys: EnvKeys,
    names: Sequence[str] | None,
) -> dict[str, tuple[TensorDict, Tensor]]:
    """Each level's view of every step of ``batch`` (shape of ``batch``) and where it
    completed a transition (bool, shape of ``batch``): the rows to keep."""
    next_batch = batch.get("next")
    completed = level_completions(batch, keys)
    steps = next_batch.get(STEPS)
    returns = next_batch.get(RETURN)
    done_flags = {
        name: next_batch.get(key)
        for name, key in (
            ("done", keys.done),
            ("terminated", keys.terminated),
            ("truncated", keys.truncated),
        )
        if key in next_batch.keys(True)
    }
    obs = batch.get(keys.observation)
    next_obs = next_batch.get(keys.observation)
    lowest = len(levels) - 1
    out = {}
    for i, level in enumerate(levels):
        if names is not None and level.name not in names:
            continue
        if i == lowest:
            observation, action = level.map_observation(obs), batch.get(keys.action)
            records = {record: batch.get(record) for record in level.records}
        else:
            observation = batch.get(start_observation_key(level.name))
            action = batch.get(pending_action_key(level.name))
            records = {record: batch.get(record_key(level.name, record)) for record in level.records}
        data = {
            OBSERVATION: observation,
            ACTION: action,
            **records,
            STEPS_TO_NEXT_OBS: steps[..., i : i + 1],
            "next": {
                OBSERVATION: level.map_observation(next_obs),
                "reward": returns[..., i : i + 1],
                **done_flags,
            },
        }
        if i:
            parent_action = batch.get(pending_action_key(levels[i - 1].name))
            data[PARENT_ACTION] = parent_action
            data["next"][PARENT_ACTION] = parent_action
        level_batch = TensorDict(data, batch_size=batch.batch_size, device=batch.device)
        out[level.name] = (level_batch, completed[..., i])
    return out


class LazyTransitions(Mapping[str, TensorDict]):
    """``{level name: transitions}`` that extracts a level's transitions when first read.

    ``extract(names)`` returns the transitions of the named levels; results are cached.
    """

    def __init__(self, extract: Callable[[Sequence[str]], dict[str, TensorDict]], names: Sequence[str]):
        self._extract = extract
        self._names = list(names)
        self._cache: dict[str, TensorDict] = {}

    def __getitem__(self, name: str) -> TensorDict:
        if name not in self._cache:
            if name not in self._names:
                raise KeyError(f"No level named {name!r} (levels: {self._names}).")
            self.extract([name])
        return self._cache[name]

    def extract(self, names: Sequence[str]) -> None:
        """Extracts the named levels' transitions now, in one pass."""
        missing = [name for name in names if name not in self._cache]
        if missing:
            self._cache.update(self._extract(missing))

    def values(self):
        self.extract(self._names)
        return super().values()

    def items(self):
        self.extract(self._names)
        return super().items()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(levels={self._names}, extracted={sorted(self._cache)})"
