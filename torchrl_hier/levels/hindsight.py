"""Hindsight for goal-conditioned and subgoal levels, as HAC does it, on transition TensorDicts.

All functions take and return flat TensorDicts in the format of ``Hierarchy.transitions``
(``observation``, ``parent_action``, ``action``, ``steps_to_next_obs``, ``next/{observation,
parent_action, reward, done, terminated, truncated}``) and are applied before a learner's
``extend``:

- :class:`EpisodeBuffer` / :class:`LevelEpisodes` hold a level's transitions per env instance
  until the episode ends, and release whole episodes, in time order, with an ``"episode"`` id:
  relabelling with future goals needs the rest of the episode, which a collector batch cut
  anywhere does not hold.
- :class:`HindsightGoals`: hindsight goal relabelling (HER; ``"future"``, ``"final"`` or
  ``"episode"`` goals, ``k`` relabels per transition), recomputing the goal reward and marking
  reaching the goal as terminal.
- :func:`hindsight_actions`: a subgoal level's subgoal replaced by what the level below actually
  achieved at the end of the transition.
- :func:`subgoal_test_penalties`: tested subgoals that were not reached, with the penalty reward
  (e.g. ``-H``) and marked terminal.
- :func:`subgoal_transitions`: the whole HAC pipeline for a subgoal level's learner.

torchrl's ``HERReplayBuffer`` relabels at sample time in a 1-D storage where each episode is
contiguous, with goals in their own ``"desired_goal"``/``"achieved_goal"`` entries. A level's
transitions interleave env instances and cross collector batches, and its goals are parts of
``observation`` or ``parent_action``, so relabelling happens here, before ``extend``, into an
ordinary replay buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import Tensor

from torchrl_hier.control import Tolerance, check_tolerance, within_tolerance
from torchrl_hier.hierarchy import Hierarchy
from torchrl_hier.level import ACTION, OBSERVATION, PARENT_ACTION
from torchrl_hier.levels.goals import GoalReward, SubgoalSpace
from torchrl_hier.transitions import level_completions

__all__ = [
    "EPISODE_KEY",
    "STRATEGIES",
    "SCOPES",
    "EpisodeBuffer",
    "LevelEpisodes",
    "stream_ids",
    "episode_bounds",
    "subgoal_attempts",
    "HindsightGoals",
    "hindsight_actions",
    "subgoal_test_penalties",
    "subgoal_learner_frame",
    "subgoal_transitions",
]

#: The entry holding each transition's episode id (unique per :class:`EpisodeBuffer`).
EPISODE_KEY = "episode"
#: Goal-selection strategies of :class:`HindsightGoals`.
STRATEGIES = ("future", "final", "episode")
#: Where :class:`HindsightGoals` draws goals from: the whole episode, or only the same subgoal
#: attempt (HAC's relabelling of a goal-conditioned level).
SCOPES = ("episode", "subgoal")

_STREAM, _ORDER = "_stream", "_order"


def stream_ids(batch: TensorDictBase) -> Tensor:
    """The env instance of every entry of a collected batch, shape ``batch.batch_size``.

    Collectors and ``env.rollout`` put time in the last batch dim, so every leading index is one
    env instance ("stream"); a batch with a single batch dim is one stream. Streams must keep
    their index from one batch to the next (true for a collector over a fixed env).
    """
    shape = batch.batch_size
    if len(shape) <= 1:
        return torch.zeros(shape, dtype=torch.long, device=batch.device)
    leading = shape[:-1]
    ids = torch.arange(leading.numel(), device=batch.device).reshape(leading)
    return ids.unsqueeze(-1).expand(shape)


class EpisodeBuffer:
    """Holds one level's transitions per stream until their episode ends.

    :meth:`add` takes transitions in collection order (the rows of ``Hierarchy.transitions``)
    with the stream of each row, and returns the transitions of every episode that ended,
    grouped by episode and in time order, with an int64 ``"episode"`` id. An episode ends at a
    transition with ``("next", "done")``; every level completes one there, so each level sees
    the same episodes. Unfinished episodes wait for the next call (or :meth:`flush`).
    """

    def __init__(self, episode_key: str = EPISODE_KEY):
        self.episode_key = episode_key
        self._pending: TensorDictBase | None = None
        self._next_order = 0
        self._next_episode = 0

    def __len__(self) -> int:
        return 0 if self._pending is None else self._pending.shape[0]

    def add(self, transitions: TensorDictBase, streams: Tensor) -> TensorDictBase:
        if transitions.batch_dims != 1:
            raise ValueError(
                "EpisodeBuffer.add expects flat transitions (one batch dim), got batch size "
                f"{tuple(transitions.batch_size)}."
            )
        if streams.shape != transitions.batch_size:
            raise ValueError(
                f"EpisodeBuffer.add: {tuple(streams.shape)} stream ids for "
                f"{transitions.shape[0]} transitions; pass one per row."
            )
        if ("next", "done") not in transitions.keys(True):
            raise KeyError("EpisodeBuffer needs ('next', 'done') in the transitions to find episode ends.")
        n = transitions.shape[0]
        new = transitions.clone(False)
        new.set(_STREAM, streams.to(torch.long))
        new.set(_ORDER, torch.arange(self._next_order, self._next_order + n, device=streams.device))
        self._next_order += n
        data = new if self._pending is None else torch.cat([self._pending, new])
        stream, order = data.get(_STREAM), data.get(_ORDER)
        data = data[torch.argsort(stream * (self._next_order + 1) + order)]
        stream = data.get(_STREAM)
        done = data.get(("next", "done")).reshape(-1)
        starts = torch.ones_like(done)
        if done.numel() > 1:
            starts[1:] = (stream[1:] != stream[:-1]) | done[:-1]
        local = torch.cumsum(starts.long(), 0) - 1
        n_local = int(local[-1]) + 1 if local.numel() else 0
        ended = torch.zeros(n_local, dtype=torch.long, device=done.device)
        ended.scatter_reduce_(0, local, done.long(), reduce="amax")
        ended_rows = ended.bool()[local]
        ids = torch.cumsum(ended, 0) - 1 + self._next_episode
        self._next_episode += int(ended.sum())
        out = data[ended_rows]
        out.set(self.episode_key, ids[local[ended_rows]])
        self._pending = data[~ended_rows]
        return out.exclude(_STREAM, _ORDER)

    def flush(self) -> TensorDictBase | None:
        """Releases the unfinished episodes (grouped, in time order, with ids) and empties."""
        if self._pending is None or self._pending.shape[0] == 0:
            self._pending = None
            return None
        data = self._pending
        stream = data.get(_STREAM)
        starts = torch.ones_like(stream, dtype=torch.bool)
        starts[1:] = stream[1:] != stream[:-1]
        local = torch.cumsum(starts.long(), 0) - 1
        data.set(self.episode_key, local + self._next_episode)
        self._next_episode += int(local[-1]) + 1
        self._pending = None
        return data.exclude(_STREAM, _ORDER)

    def state_dict(self) -> dict[str, Any]:
        """The unfinished episodes and the order/episode counters: what a resumed run needs
        to release the same episodes, with the same ids, as an uninterrupted one."""
        pending = None if self._pending is None else self._pending.clone()
        return {
            "pending": pending, "next_order": self._next_order, "next_episode": self._next_episode
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device | None = None) -> None:
        """Restores :meth:`state_dict`; the unfinished episodes go to ``device`` if given."""
        pending = state["pending"]
        if pending is not None and device is not None:
            pending = pending.to(device)
        self._pending = pending
        self._next_order = int(state["next_order"])
        self._next_episode = int(state["next_episode"])


class LevelEpisodes:
    """One :class:`EpisodeBuffer` per level of a hierarchy, fed with collected batches.

    For example::

        episodes = LevelEpisodes(hierarchy)
        for batch in collector:
            for name, data in episodes.add(batch).items():   # whole episodes per level
                learners[name].extend(process[name](data))
    """

    def __init__(self, hierarchy: Hierarchy, levels: Iterable[str] | None = None):
        self.hierarchy = hierarchy
        names = hierarchy.names
        levels = list(names if levels is None else levels)
        unknown = [name for name in levels if name not in names]
        if unknown:
            raise KeyError(f"LevelEpisodes: no levels {unknown} in the hierarchy (it has {names}).")
        self.buffers = {name: EpisodeBuffer() for name in levels}

    def add(self, batch: TensorDictBase) -> dict[str, TensorDictBase]:
        transitions = self.hierarchy.transitions(batch)
        completed = level_completions(batch, self.hierarchy.keys)
        streams = stream_ids(batch)
        names = self.hierarchy.names
        return {
            name: buffer.add(transitions[name], streams[completed[..., names.index(name)]])
            for name, buffer in self.buffers.items()
        }

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Each level's :meth:`EpisodeBuffer.state_dict`."""
        return {name: buffer.state_dict() for name, buffer in self.buffers.items()}

    def load_state_dict(
        self, state: Mapping[str, Mapping[str, Any]], device: torch.device | None = None
    ) -> None:
        """Restores :meth:`state_dict`; raises ``KeyError`` if it is for other levels."""
        if set(state) != set(self.buffers):
            raise KeyError(
                f"The saved episode buffers are for levels {sorted(state)}, these are for "
                f"{sorted(self.buffers)}."
            )
        for name, buffer in self.buffers.items():
            buffer.load_state_dict(state[name], device)


def episode_bounds(episode: Tensor) -> tuple[Tensor, Tensor]:
    """First and last row of each row's episode, for rows grouped by episode id.

    Raises if an episode's rows are not contiguous (use :class:`EpisodeBuffer` to group them).
    """
    episode = episode.reshape(-1)
    n = episode.numel()
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=episode.device)
        return empty, empty
    starts = torch.ones(n, dtype=torch.bool, device=episode.device)
    starts[1:] = episode[1:] != episode[:-1]
    run = torch.cumsum(starts.long(), 0) - 1
    n_runs = int(run[-1]) + 1
    if n_runs != torch.unique(episode).numel():
        raise ValueError(
            "Hindsight relabelling needs each episode's transitions contiguous and in time order, "
            "but some episode ids appear in separate runs. Group them with EpisodeBuffer "
            "(or LevelEpisodes) first."
        )
    index = torch.arange(n, device=episode.device)
    first = torch.zeros(n_runs, dtype=torch.long, device=episode.device)
    last = torch.zeros(n_runs, dtype=torch.long, device=episode.device)
    first.scatter_reduce_(0, run, index, reduce="amin", include_self=False)
    last.scatter_reduce_(0, run, index, reduce="amax", include_self=False)
    return first[run], last[run]


def subgoal_attempts(
    td: TensorDictBase, episode_key: str = EPISODE_KEY, goal_dim: int | None = None
) -> Tensor:
    """Ids of the subgoal attempts in a goal-conditioned level's whole episodes (rows grouped
    by episode, in time order, as :class:`EpisodeBuffer` releases them): a new attempt starts
    with each episode and wherever the subgoal (the first ``goal_dim`` entries of
    ``"parent_action"``; all of them if ``None``) changes."""
    episode = td.get(episode_key).reshape(-1)
    subgoal = td.get(PARENT_ACTION)
    if goal_dim is not None:
        subgoal = subgoal[..., :goal_dim]
    start = torch.ones_like(episode, dtype=torch.bool)
    if episode.numel() > 1:
        start[1:] = (episode[1:] != episode[:-1]) | (subgoal[1:] != subgoal[:-1]).any(-1)
    return start.long().cumsum(0)


def _set_goal_outcome(
    td: TensorDictBase, reward: GoalReward, gamma: float, terminate: bool, level: str
) -> TensorDictBase:
    """Recomputes the goal reward of ``td`` and, if ``terminate``, marks reaching as terminal."""
    new_reward, reached = reward.transition(td, gamma, level)
    td.set(("next", "reward"), new_reward)
    if terminate:
        terminated = td.get(("next", "terminated"))
        terminated = terminated | reached.reshape(terminated.shape)
        td.set(("next", "terminated"), terminated)
        truncated = td.get(("next", "truncated"), None)
        done = terminated if truncated is None else terminated | truncated
        td.set(("next", "done"), done.reshape(td.get(("next", "done")).shape))
    return td


class HindsightGoals:
    """Hindsight goal relabelling (HER) for a goal-conditioned level.

    Each transition is kept and, for ``k`` goals drawn from its episode, copied with the goal
    replaced by an achieved goal (``reward.space.achieved`` of a ``("next", "observation")``):

    - ``"future"``: of a uniformly drawn transition of the same episode at or after it
      (HER's "future"; the transition's own end state included);
    - ``"final"``: of the episode's last transition (all ``k`` copies alike);
    - ``"episode"``: of a uniformly drawn transition of the same episode.

    The goal is written where ``reward.goal`` says (``parent_action`` or the ``observation``, at
    the root and under ``"next"``). The reward of every output row, originals included, is
    recomputed by ``reward.transition`` (so originals and copies agree), and when ``terminate``
    a transition that reaches its goal is marked terminated (HAC: the goal-conditioned value
    does not bootstrap past reaching its goal). ``k=0`` only recomputes rewards and termination.
    Rows must be grouped by ``"episode"`` in time order, as :class:`EpisodeBuffer` releases them.

    Args:
        reward: the level's :class:`GoalReward` (space, tolerance, goal slot, reward values).
        gamma: the level's discount (for rewards of transitions longer than one env step).
        strategy: ``"future"``, ``"final"`` or ``"episode"``.
        k: relabelled copies per transition.
        terminate: mark reaching the goal as terminal.
        scope: ``"episode"`` draws goals from the transition's episode; ``"subgoal"`` only from
            its subgoal attempt (:func:`subgoal_attempts`: the rows pursuing the same subgoal
            of the level above), as HAC relabels a goal-conditioned level, so it learns goals
            it can reach within its horizon.
        level: the level's name, for error messages.
    """

    def __init__(
        self,
        reward: GoalReward,
        *,
        gamma: float = 0.99,
        strategy: str = "future",
        k: int = 4,
        terminate: bool = True,
        episode_key: str = EPISODE_KEY,
        level: str = "this level",
        scope: str = "episode",
    ):
        if not isinstance(reward, GoalReward):
            raise TypeError(
                f"Level {level!r}: HindsightGoals needs the level's GoalReward, got "
                f"{type(reward).__name__}."
            )
        if strategy not in STRATEGIES:
            raise ValueError(
                f"Level {level!r}: unknown hindsight strategy {strategy!r}; choose one of "
                f"{list(STRATEGIES)}."
            )
        if scope not in SCOPES:
            raise ValueError(
                f"Level {level!r}: unknown hindsight scope {scope!r}; choose one of {list(SCOPES)}."
            )
        if scope == "subgoal" and reward.goal.key != PARENT_ACTION:
            raise ValueError(
                f"Level {level!r}: hindsight scope 'subgoal' needs a goal from the level above "
                f"(GoalSlot.parent), but its goal is read from {reward.goal.key!r}."
            )
        if not (isinstance(k, int) and k >= 0):
            raise ValueError(f"Level {level!r}: k (relabels per transition) must be an int >= 0, got {k!r}.")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"Level {level!r}: gamma must be in [0, 1], got {gamma}.")
        self.reward = reward
        self.gamma = float(gamma)
        self.strategy = strategy
        self.k = k
        self.terminate = terminate
        self.episode_key = episode_key
        self.level = level
        self.scope = scope

    def goal_sources(
        self, td: TensorDictBase, generator: torch.Generator | None = None
    ) -> Tensor:
        """Row indices ``[k, N]`` whose achieved goals relabel each row."""
        n = td.shape[0]
        episode = td.get(self.episode_key, None)
        if episode is None:
            raise KeyError(
                f"Level {self.level!r}: hindsight relabelling needs the {self.episode_key!r} "
                "entry (episode ids); get whole episodes from EpisodeBuffer/LevelEpisodes."
            )
        if self.scope == "subgoal":
            episode = subgoal_attempts(td, self.episode_key, self.reward.goal.dim)
        first, last = episode_bounds(episode)
        position = torch.arange(n, device=first.device)
        if self.strategy == "final":
            return last.expand(self.k, n)
        low = position if self.strategy == "future" else first
        span = (last - low + 1).to(torch.float64)
        u = torch.rand((self.k, n), generator=generator, dtype=torch.float64, device=first.device)
        offset = torch.minimum((u * span).long(), (last - low).expand(self.k, n))
        return low + offset

    def __call__(
        self, td: TensorDictBase, generator: torch.Generator | None = None
    ) -> TensorDictBase:
        if td.batch_dims != 1:
            raise ValueError(
                f"Level {self.level!r}: HindsightGoals expects flat transitions, got batch size "
                f"{tuple(td.batch_size)}."
            )
        out = td.clone()
        if self.k and td.shape[0]:
            sources = self.goal_sources(td, generator)
            achieved = self.reward.space.achieved(td.get(("next", OBSERVATION)))
            goals = achieved[sources.reshape(-1)]
            copies = td.unsqueeze(0).expand(self.k, td.shape[0]).reshape(-1).clone()
            self.reward.goal.write(copies, goals)
            out = torch.cat([out, copies])
        return _set_goal_outcome(out, self.reward, self.gamma, self.terminate, self.level)


def _split(space: SubgoalSpace, action: Tensor, level: str) -> tuple[Tensor, Tensor | None]:
    dim = space.dim
    if action.shape[-1] == dim + 1:
        return action[..., :dim], action[..., dim] > 0.5
    if action.shape[-1] == dim:
        return action, None
    raise ValueError(
        f"Level {level!r}: its actions have {action.shape[-1]} entries, but its SubgoalSpace has "
        f"{dim} components (plus an optional test flag)."
    )


def hindsight_actions(
    td: TensorDictBase, space: SubgoalSpace, level: str = "this level"
) -> TensorDictBase:
    """HAC's hindsight action transitions: each subgoal (the absolute target in ``"action"``)
    is replaced by the goal the level below actually achieved at the end of the transition,
    ``space.achieved(("next", "observation"))``, clamped to the space's bounds (in its frame).
    A test flag after the subgoal is kept."""
    out = td.clone()
    action = td.get(ACTION)
    _, flag = _split(space, action, level)
    observation = td.get(OBSERVATION)
    achieved = space.achieved(td.get(("next", OBSERVATION)))
    target = space.to_absolute(space.clamp(space.to_relative(achieved, observation)), observation)
    new = action.clone()
    new[..., : space.dim] = target.to(action.dtype)
    out.set(ACTION, new)
    return out


def subgoal_test_penalties(
    td: TensorDictBase,
    space: SubgoalSpace,
    *,
    tolerance: Tolerance,
    penalty: float,
    norm: float = 2.0,
    level: str = "this level",
) -> TensorDictBase:
    """HAC's subgoal-testing transitions: the tested subgoals (test flag set) that the level
    below did not reach within ``tolerance``, keeping their original action, with reward
    ``penalty`` (HAC uses ``-H``) and marked terminal. Transitions cut by the episode's end
    (done) are not penalised: the subgoal did not get its full horizon."""
    tolerance = check_tolerance(tolerance, f"Level {level!r}")
    subgoal, tested = _split(space, td.get(ACTION), level)
    if tested is None:
        raise ValueError(
            f"Level {level!r}: its actions carry no test flag, so no subgoal was tested; build "
            "it with subgoal_level(...) or skip subgoal_test_penalties."
        )
    achieved = space.achieved(td.get(("next", OBSERVATION)))
    missed = ~within_tolerance(achieved, subgoal, tolerance, norm)
    done = td.get(("next", "done")).reshape(missed.shape)
    out = td[tested & missed & ~done].clone()
    reward = out.get(("next", "reward"))
    out.set(("next", "reward"), torch.full_like(reward, penalty))
    for key in ("terminated", "done"):
        flag = out.get(("next", key))
        out.set(("next", key), torch.ones_like(flag))
    return out


def subgoal_learner_frame(
    td: TensorDictBase, space: SubgoalSpace, level: str = "this level"
) -> TensorDictBase:
    """The subgoal in ``"action"`` as the level's actor emits it: the test flag dropped and,
    for a relative space, the displacement from the achieved goal of ``"observation"``; for a
    lattice space (``resolution``), the one-hot (int64) of the nearest lattice point, as a
    DQN subgoal level picks it."""
    subgoal, _ = _split(space, td.get(ACTION), level)
    out = td.clone(False)
    subgoal = space.to_relative(subgoal, td.get(OBSERVATION))
    if space.resolution is not None:
        subgoal = torch.nn.functional.one_hot(space.lattice_index(subgoal), space.n_points)
    out.set(ACTION, subgoal)
    return out


def subgoal_transitions(
    td: TensorDictBase,
    space: SubgoalSpace,
    *,
    tolerance: Tolerance,
    penalty: float | None = None,
    hindsight_action: bool = True,
    goals: HindsightGoals | None = None,
    norm: float = 2.0,
    generator: torch.Generator | None = None,
    level: str = "this level",
) -> TensorDictBase:
    """A subgoal level's transitions made ready for its loss, as HAC makes them.

    1. hindsight actions (:func:`hindsight_actions`) when ``hindsight_action``;
    2. hindsight goals on those (``goals``, e.g. the env goal in the observation), if given;
    3. plus the failed subgoal tests with ``penalty`` (:func:`subgoal_test_penalties`), unless
       ``penalty`` is None;
    4. the subgoal in the actor's frame, test flag dropped (:func:`subgoal_learner_frame`).

    ``td`` holds whole episodes (from :class:`EpisodeBuffer`) when ``goals`` is given.
    """
    parts = []
    main = hindsight_actions(td, space, level) if hindsight_action else td.clone()
    if goals is not None:
        main = goals(main, generator)
    parts.append(main)
    if penalty is not None:
        penalties = subgoal_test_penalties(
            td, space, tolerance=tolerance, penalty=penalty, norm=norm, level=level
        )
        if penalties.shape[0]:
            parts.append(penalties.select(*main.keys(True, True)))
    out = torch.cat(parts) if len(parts) > 1 else parts[0]
    return subgoal_learner_frame(out, space, level)
