"""Adjacency-constrained subgoals (HRAC-style) for a lattice (DQN) subgoal level.

A subgoal level that proposes points the level below cannot reach within its horizon learns
from transitions that mostly say "missed" (the lower level reaches only part of its subgoals
behind walls and doors). HRAC (Zhang et al., 2020) restricts subgoals to the k-step
adjacency region of the current state, learnt from the agent's own trajectories. For
discrete (or discretised) positions that adjacency can be kept exactly as a table:

- :class:`ReachabilityMemory`: ``table[cell, point]`` is True once some collected trajectory
  went from ``cell`` to (within ``tolerance`` of) lattice subgoal ``point`` of a
  :class:`~torchrl_hier.levels.SubgoalSpace` in at most ``steps`` env steps. It is fed whole
  episodes of any level (``EpisodeBuffer``/``LevelEpisodes`` output; the lowest level's give
  every pair) and only grows;
- :class:`ReachableSubgoals`: writes the memory's mask of the current observation as
  ``"action_mask"``, which TorchRL's ``EGreedyModule`` reads so exploration draws only
  reachable subgoals;
- :class:`MaskedQValues`: wraps a Q-network so that unreachable subgoals get the value
  ``fill``: the greedy choice, and DQN's (double-DQN) bootstrap target, only range over
  reachable ones. It reads the memory, not a copy, so the loss's target network sees the same
  mask as the policy.

``subgoal_level(..., algorithm="dqn", reachability=memory)`` puts the two modules in place.
A cell no trajectory has left yet has every subgoal allowed (nothing is known there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor, nn

from torchrl_hier.level import OBSERVATION, PARENT_ACTION
from torchrl_hier.levels.goals import SubgoalSpace, goal_distance
from torchrl_hier.levels.hindsight import episode_bounds, subgoal_attempts

__all__ = [
    "ACTION_MASK",
    "ReachabilityMemory",
    "ReachableSubgoals",
    "MaskedQValues",
    "PlannedSubgoals",
]

#: The entry holding a level's mask of allowed (reachable) lattice subgoals.
ACTION_MASK = "action_mask"


class ReachabilityMemory(nn.Module):
    """Which lattice subgoals have been reached from which cell within ``steps`` env steps.

    An ``nn.Module`` whose buffers ``table`` and ``success`` are its state: the level modules
    that read it (:class:`ReachableSubgoals`, :class:`PlannedSubgoals`) hold it as a
    submodule, so it moves with ``.to(device)`` and is saved and restored with the policy's
    ``state_dict`` (checkpoints, resume).

    Args:
        space: the subgoal level's lattice space (``resolution`` set; absolute or relative).
        low, high: bounds of the achieved goal (scalars or one per component), e.g. ``0`` and
            ``18`` for the cells of a 19x19 grid whose coordinates are in cells.
        steps: k: a pair counts when the trajectory covers it in at most this many env steps
            (sum of ``steps_to_next_obs``); usually the horizon H of the level below.
        cell: the size of a cell of the table (positions are rounded to the nearest cell
            centre); 1 for integer grid coordinates.
        tolerance: the distance (in ``norm``) under which a position counts as reaching a
            lattice point; usually the lower level's goal tolerance.
        norm: the distance norm (2 or ``float("inf")``).
        reliability: if given, also estimate how often the level below reaches each subgoal
            from each cell (:meth:`record_outcomes`, a moving average with this step size) and
            let a chain of subgoals cost the expected number of attempts (:meth:`costs`);
            ``None``: every recorded subgoal costs one hop.
        refresh: with ``reliability``, recompute the path costs every ``refresh`` updates of
            the estimates (and whenever the table grows).
        device: where the table lives.
    """

    def __init__(
        self,
        space: SubgoalSpace,
        low: float | Sequence[float],
        high: float | Sequence[float],
        *,
        steps: int,
        cell: float = 1.0,
        tolerance: float = 0.5,
        norm: float = float("inf"),
        reliability: float | None = None,
        refresh: int = 10,
        device: torch.device | str | None = None,
    ):
        if reliability is not None and not 0.0 < reliability <= 1.0:
            raise ValueError(
                f"ReachabilityMemory: reliability (the step size of each subgoal's success "
                f"estimate) must be in (0, 1] or None, got {reliability!r}."
            )
        if not (isinstance(refresh, int) and refresh >= 1):
            raise ValueError(f"ReachabilityMemory: refresh must be a positive int, got {refresh!r}.")
        if not isinstance(space, SubgoalSpace) or space.resolution is None:
            raise ValueError(
                "ReachabilityMemory needs a lattice SubgoalSpace (resolution=...), got "
                f"{space!r}."
            )
        if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
            raise ValueError(f"ReachabilityMemory: steps must be a positive int, got {steps!r}.")
        if not (cell > 0 and tolerance > 0):
            raise ValueError(
                f"ReachabilityMemory: cell and tolerance must be > 0, got {cell} and {tolerance}."
            )
        super().__init__()
        self.space = space
        self.steps = steps
        self.cell = float(cell)
        self.tolerance = float(tolerance)
        self.norm = float(norm)
        dim = space.dim
        low = torch.as_tensor(low, dtype=torch.float32, device=device).expand(dim).clone()
        high = torch.as_tensor(high, dtype=torch.float32, device=device).expand(dim).clone()
        if not bool((low < high).all()):
            raise ValueError(
                f"ReachabilityMemory needs low < high, got {low.tolist()}, {high.tolist()}."
            )
        shape = ((high - low) / self.cell).round().long() + 1
        strides = torch.ones(dim, dtype=torch.long, device=device)
        for i in range(dim - 2, -1, -1):
            strides[i] = strides[i + 1] * shape[i + 1]
        # the layout of the table (rebuilt from the arguments, so not saved) ...
        self.register_buffer("low", low, persistent=False)
        self.register_buffer("shape", shape, persistent=False)
        self.register_buffer("strides", strides, persistent=False)
        self.register_buffer("points", space.lattice.to(device), persistent=False)
        # ... and what was learnt: the table and the success estimates
        self.register_buffer(
            "table", torch.zeros(int(shape.prod()), space.n_points, dtype=torch.bool, device=device)
        )
        self.reliability = reliability
        self.refresh = refresh
        #: estimated chance that the level below reaches each subgoal from each cell
        self.register_buffer("success", torch.ones_like(self.table, dtype=torch.float32))
        self._outcome_updates = 0
        self._distances: Tensor | None = None  # cached path costs, dropped when table grows
        self.register_load_state_dict_post_hook(lambda module, _: module._invalidate())

    def _invalidate(self) -> None:
        self._distances = None

    def _apply(self, fn, *args, **kwargs):
        self._invalidate()  # the cache is not a buffer: recompute it on the new device
        return super()._apply(fn, *args, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.table.device

    def cells(self, achieved: Tensor) -> Tensor:
        """The table row of each achieved goal ``[..., dim] -> [...]`` (clamped to the bounds)."""
        index = ((achieved.to(self.low) - self.low) / self.cell).round().long()
        index = torch.minimum(index.clamp_min(0), self.shape - 1)
        return (index * self.strides).sum(-1)

    def mask(self, observation: Tensor) -> Tensor:
        """The reachable lattice subgoals from each observation, bool ``[..., n_points]``
        (all of them where nothing was recorded yet)."""
        rows = self.table[self.cells(self.space.achieved(observation))]
        return rows | ~rows.any(-1, keepdim=True)

    @property
    def n_cells(self) -> int:
        return self.table.shape[0]

    def centres(self) -> Tensor:
        """The position of every cell's centre ``[n_cells, dim]`` (row-major)."""
        axes = [torch.arange(int(n), device=self.device) for n in self.shape]
        index = torch.cartesian_prod(*axes).reshape(-1, self.space.dim)
        return self.low + index.to(self.low) * self.cell

    def targets(self) -> Tensor:
        """The cell each lattice subgoal of each cell points at ``[n_cells, n_points]``
        (``-1`` where it falls outside the bounds)."""
        centres = self.centres()
        goal = centres.unsqueeze(1) + self.points if self.space.relative else (
            self.points.expand(self.n_cells, -1, -1))
        top = self.low + (self.shape - 1) * self.cell
        inside = ((goal >= self.low - self.cell / 2) & (goal <= top + self.cell / 2)).all(-1)
        return torch.where(inside, self.cells(goal), torch.full_like(inside, -1, dtype=torch.long))

    def costs(self) -> Tensor:
        """The cost of pursuing each lattice subgoal from each cell ``[n_cells, n_points]``:
        1 (a hop), or with ``reliability`` the expected number of attempts the level below
        needs, ``1 / success`` (success clamped to >= 0.05)."""
        if self.reliability is None:
            return torch.ones_like(self.success)
        return 1.0 / self.success.clamp_min(0.05)

    def distances(self) -> Tensor:
        """Costs ``[n_cells, n_cells]`` of the cheapest chains of recorded subgoals between
        cells (``inf`` where no chain is known), on the graph whose edges are the table's
        entries with :meth:`costs`: hop counts by a breadth-first search from every cell at
        once, or, with ``reliability``, Bellman-Ford. Cached until the table grows (or, with
        ``reliability``, every ``refresh`` outcome updates)."""
        if self._distances is not None:
            return self._distances
        n = self.n_cells
        targets = self.targets()
        edges = self.table & (targets >= 0) & (targets != torch.arange(n, device=self.device)[:, None])
        distance = torch.full((n, n), float("inf"), device=self.device)
        distance.fill_diagonal_(0.0)
        if self.reliability is None:
            rows, points = edges.nonzero(as_tuple=True)
            adjacency = torch.zeros(n, n, device=self.device)
            adjacency[rows, targets[rows, points]] = 1.0
            seen = distance == 0
            frontier = seen.clone()
            for hops in range(1, n):
                frontier = ((frontier.float() @ adjacency) > 0) & ~seen
                if not bool(frontier.any()):
                    break
                distance[frontier] = float(hops)
                seen |= frontier
        else:
            cost = torch.where(edges, self.costs(), torch.full_like(self.success, float("inf")))
            index = targets.clamp_min(0)
            for _ in range(n):
                through = (cost.unsqueeze(-1) + distance[index]).amin(1)  # [n, n]
                better = torch.minimum(distance, through)
                if torch.equal(better, distance):
                    break
                distance = better
        self._distances = distance
        return distance

    def record_outcomes(
        self,
        td: TensorDictBase,
        achieved: Callable[[Tensor], Tensor] | None = None,
        episode_key: str = "episode",
    ) -> None:
        """Updates, with ``reliability``, the success estimates from whole episodes of the
        goal-conditioned level below the subgoal level (rows grouped by ``episode_key`` in time
        order, its subgoal in the first entries of ``"parent_action"``): per subgoal attempt
        (:func:`~torchrl_hier.levels.subgoal_attempts`), whether the level reached the subgoal
        (within ``tolerance``), as an exponential moving average with step ``reliability`` per
        attempt. Attempts cut short by the episode's end without reaching are not counted."""
        if self.reliability is None:
            raise ValueError("ReachabilityMemory.record_outcomes needs reliability= set.")
        n = td.shape[0]
        if n == 0:
            return
        achieved = self.space.achieved if achieved is None else achieved
        dim = self.space.dim
        attempt = subgoal_attempts(td, episode_key, dim).to(self.device)
        first, last = episode_bounds(attempt)
        is_first = first == torch.arange(n, device=self.device)
        first, last = first[is_first], last[is_first]
        start = achieved(td.get(OBSERVATION).to(self.device))[first]
        goal = td.get(PARENT_ACTION)[..., :dim].to(self.device)[first]
        end = achieved(td.get(("next", OBSERVATION)).to(self.device))[last]
        reached = goal_distance(end, goal, self.norm) <= self.tolerance
        done = td.get(("next", "done")).reshape(-1).to(self.device)[last]
        keep = reached | ~done
        subgoal = goal - start if self.space.relative else goal
        flat = self.cells(start) * self.space.n_points + self.space.lattice_index(subgoal)
        flat, reached = flat[keep], reached[keep]
        count = torch.zeros(self.success.numel(), device=self.device)
        hits = torch.zeros_like(count)
        count.index_add_(0, flat, torch.ones_like(flat, dtype=count.dtype))
        hits.index_add_(0, flat, reached.to(count.dtype))
        seen = count > 0
        keep_old = (1.0 - self.reliability) ** count[seen]
        success = self.success.view(-1)
        success[seen] = keep_old * success[seen] + (1.0 - keep_old) * hits[seen] / count[seen]
        self._outcome_updates += 1
        if self._outcome_updates % self.refresh == 0:
            self._distances = None

    def add_pairs(self, start: Tensor, reached: Tensor) -> int:
        """Records that achieved goals ``reached`` ``[N, dim]`` were reached from achieved
        goals ``start`` within ``steps``; returns how many table entries were new. Pairs whose
        subgoal (``reached``, minus ``start`` for a relative space) is off the lattice (beyond
        ``tolerance`` of every point) are ignored."""
        if start.shape[0] == 0:
            return 0
        top = self.low + (self.shape - 1) * self.cell
        outside = (start < self.low - self.cell / 2) | (start > top + self.cell / 2)
        if bool(outside.any()):
            raise ValueError(
                f"ReachabilityMemory: achieved goals outside its bounds [{self.low.tolist()}, "
                f"{top.tolist()}], e.g. {start[outside.any(-1)][0].tolist()}; give low/high "
                "covering the positions (in the observation's units)."
            )
        subgoal = reached - start if self.space.relative else reached
        point = self.space.lattice_index(subgoal)
        near = goal_distance(self.points[point], subgoal, self.norm) <= self.tolerance
        rows, point = self.cells(start)[near], point[near]
        before = int(self.table.sum())
        self.table[rows, point] = True
        new = int(self.table.sum()) - before
        if new:
            self._distances = None
        return new

    def update(
        self,
        td: TensorDictBase,
        achieved: Callable[[Tensor], Tensor] | None = None,
        episode_key: str = "episode",
    ) -> int:
        """Records every pair of a level's whole episodes (rows grouped by ``episode_key`` in
        time order, as ``EpisodeBuffer`` releases them) that is at most ``steps`` env steps
        apart: the start observation of a row and the achieved goal at the end of the same or
        a later row of its episode. ``achieved`` maps that level's observation to the achieved
        goal (default ``space.achieved``); returns the number of new table entries. With
        ``reliability``, episodes of the goal-conditioned level below (with its
        ``"parent_action"``) also update the success estimates (:meth:`record_outcomes`)."""
        achieved = self.space.achieved if achieved is None else achieved
        if td.batch_dims != 1:
            raise ValueError(
                f"ReachabilityMemory.update expects flat transitions, got {tuple(td.batch_size)}."
            )
        n = td.shape[0]
        if n == 0:
            return 0
        episode = td.get(episode_key, None)
        if episode is None:
            raise KeyError(
                f"ReachabilityMemory.update needs the {episode_key!r} entry (whole episodes "
                "from EpisodeBuffer/LevelEpisodes)."
            )
        episode = episode.reshape(-1)
        obs = td.get(OBSERVATION).to(self.device)
        start = achieved(obs)
        reached = achieved(td.get(("next", OBSERVATION)).to(self.device))
        tau = td.get("steps_to_next_obs", None)
        tau = torch.ones(n, dtype=torch.long) if tau is None else tau.reshape(-1).long()
        tau = tau.to(self.device)
        end_time = tau.cumsum(0)
        start_time = end_time - tau
        episode = episode.to(self.device)
        new = 0
        for j in range(min(self.steps, n)):  # pairs (row i, end of row i + j)
            i = torch.arange(n - j, device=self.device)
            ok = (episode[i] == episode[i + j]) & (end_time[i + j] - start_time[i] <= self.steps)
            if not bool(ok.any()):
                break
            i = i[ok]
            new += self.add_pairs(start[i], reached[i + j])
        if self.reliability is not None and PARENT_ACTION in td.keys():
            self.record_outcomes(td, achieved, episode_key)
        return new


class ReachableSubgoals(TensorDictModuleBase):
    """Writes ``memory.mask(observation)`` as ``"action_mask"`` (for ``EGreedyModule``)."""

    def __init__(self, memory: ReachabilityMemory, in_key: str = OBSERVATION):
        super().__init__()
        self.memory = memory
        self.in_keys = [in_key]
        self.out_keys = [ACTION_MASK]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict.set(ACTION_MASK, self.memory.mask(tensordict.get(self.in_keys[0])))


class MaskedQValues(nn.Module):
    """A Q-network whose values of unreachable lattice subgoals are replaced by ``fill``.

    ``net(observation, *rest)`` gives one value per lattice point; the memory's mask of
    ``observation`` selects the reachable ones. The memory is held as a plain reference (not a
    buffer), so copies of the parameters (the target network) share it."""

    def __init__(self, net: nn.Module, memory: ReachabilityMemory, fill: float):
        super().__init__()
        self.net = net
        self.fill = float(fill)
        object.__setattr__(self, "_memory", memory)  # not a submodule: shared, never copied

    @property
    def memory(self) -> ReachabilityMemory:
        return self._memory

    def forward(self, observation: Tensor, *rest: Tensor) -> Tensor:
        values = self.net(observation, *rest)
        mask = self._memory.mask(observation)
        return torch.where(mask, values, torch.full_like(values, self.fill))


class PlannedSubgoals(TensorDictModuleBase):
    """Graph-based subgoal selection over a :class:`ReachabilityMemory` (landmark planning, as
    in Search on the Replay Buffer / Sparse Graphical Memory, on the exact table): from the
    current cell, the lattice subgoal that starts the shortest known chain of recorded
    subgoals to the goal's cell. Writes the pick as a one-hot ``"action"`` over the lattice
    points (and the memory's mask as ``"action_mask"``, for ``EGreedyModule``).

    Among the reachable subgoals it takes the one whose cell is fewest hops from the goal's
    (the goal's own cell when it is reachable), ties to the lowest index; where no chain to the
    goal is known yet, the one nearest to the goal (``norm``).

    Args:
        memory: the reachability memory (its space is the level's subgoal space).
        goal: where the goal sits in ``observation`` (e.g. ``(2, 3)`` for GridMaze), in the
            same units as the achieved goal.
        norm: distance of the fallback choice.
    """

    def __init__(self, memory: ReachabilityMemory, goal: Sequence[int],
                 norm: float = 2.0):
        super().__init__()
        self.memory = memory
        self.goal = tuple(int(i) for i in goal)
        if len(self.goal) != memory.space.dim:
            raise ValueError(
                f"PlannedSubgoals: the goal has {len(self.goal)} components but the subgoal "
                f"space {memory.space.dim}."
            )
        self.norm = float(norm)
        self.register_buffer("_targets", memory.targets(), persistent=False)
        self.register_buffer("_centres", memory.centres(), persistent=False)
        self.in_keys = [OBSERVATION]
        self.out_keys = ["action", ACTION_MASK]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        observation = tensordict.get(OBSERVATION)
        memory = self.memory
        cell = memory.cells(memory.space.achieved(observation))
        goal_position = observation[..., list(self.goal)]
        goal = memory.cells(goal_position)
        targets = self._targets[cell]  # [..., n_points]
        valid = memory.mask(observation) & (targets >= 0)
        hops = memory.distances()[targets.clamp_min(0), goal.unsqueeze(-1)]
        away = goal_distance(self._centres[targets.clamp_min(0)],
                             goal_position.unsqueeze(-2), self.norm)
        cost = torch.where(torch.isfinite(hops), hops, 1e6 + away)
        cost = torch.where(valid, cost, torch.full_like(cost, float("inf")))
        pick = cost.argmin(-1)
        one_hot = torch.nn.functional.one_hot(pick, memory.space.n_points)
        tensordict.set(ACTION_MASK, valid)
        return tensordict.set("action", one_hot)
