"""Per-level semi-MDP transitions out of a collected batch, in TorchRL keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from tensordict import TensorDict, TensorDictBase

from torchrl_hier._passes import (
    COMPLETED,
    RETURN,
    STEPS,
    EnvKeys,
    pending_action_key,
    start_observation_key,
)
from torchrl_hier.level import ACTION, OBSERVATION, PARENT_ACTION, Level

STEPS_TO_NEXT_OBS = "steps_to_next_obs"


def level_transitions(
    batch: TensorDictBase,
    levels: Sequence[Level],
    keys: EnvKeys,
    names: Sequence[str] | None = None,
) -> dict[str, TensorDict]:
    """Each level's completed transitions in ``batch`` (any batch shape, e.g. ``[envs, time]``);
    only those of the levels in ``names`` when given.

    A level's transitions are flat TensorDicts holding ``observation``, ``parent_action``
    (below the top), ``action``, ``steps_to_next_obs`` (τ), and under ``"next"``:
    ``observation``, ``parent_action``, ``reward`` (``sum_k gamma**k r_k``), ``done``,
    ``terminated`` and ``truncated``. Rows keep the order of ``batch`` flattened.
    """
    next_batch = batch.get("next")
    if COMPLETED not in next_batch.keys(True):
        raise KeyError(
            f"The batch has no ('next', {COMPLETED!r}): it was not collected in an env "
            "transformed by this hierarchy's transform."
        )
    completed = next_batch.get(COMPLETED)
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
        else:
            observation = batch.get(start_observation_key(level.name))
            action = batch.get(pending_action_key(level.name))
        data = {
            OBSERVATION: observation,
            ACTION: action,
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
        # Transitions are data: a rollout run with grad enabled must not leak its graph.
        out[level.name] = level_batch[completed[..., i]].detach()
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
