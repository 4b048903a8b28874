"""A batched pure-torch grid maze (four rooms, larger room grids, text layouts), sparse reward."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from torchrl_hier.envs import _render
from torchrl_hier.envs.hash_rng import EpisodeDraws, uniform
from torchrl_hier.envs.layouts import (
    Layout,
    StartGoalSampler,
    parse_layout,
    rooms_layout,
    valid_pairs,
)

__all__ = ["GridMaze", "rooms_layout", "OBSERVATIONS"]

# up, down, left, right
MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])
#: ``GridMaze(observation=...)``: scaled cell coordinates, or one-hot cells (tabular).
OBSERVATIONS = ("coordinates", "onehot")


class GridMaze(EnvBase):
    """Reach a goal cell in a maze; batched over instances, runs on any device.

    Observation ``"observation"``: ``(agent_row, agent_col, goal_row, goal_col)`` scaled to
    [0, 1] (divided by ``rows - 1`` and ``cols - 1``); with ``observation="onehot"`` instead a
    one-hot of the agent's cell among the free cells (row-major order, ``free_cells``),
    followed, when more than one cell can hold the goal, by a one-hot of the goal's among those
    (``goal_cells``): tabular features. With ``goal_keys=True`` (default)
    ``"achieved_goal"`` (agent cell) and ``"desired_goal"`` (goal cell) hold the scaled
    coordinates, for goal-conditioned levels and hindsight relabelling
    (:meth:`goal_reached` / :meth:`compute_reward` recompute success for any pair).
    Action: one of 4 moves (up, down, left, right; ``Categorical(4)``); a move into a wall
    leaves the agent in place. With ``slip > 0`` a move is replaced, with probability ``slip``,
    by one of the other three moves drawn uniformly (Sutton, Precup & Singh's four rooms:
    ``slip=1/3``). Reward 1 on reaching the goal (which terminates the episode) and 0
    otherwise; episodes are truncated after ``max_steps``. ``"is_success"`` tells whether the
    goal was reached.

    The maze is ``rooms x rooms`` square rooms of side ``room_size`` (``rooms`` may also be
    ``(rows, cols)``), or any ``layout`` (a name from :data:`~torchrl_hier.envs.LAYOUTS`, text
    rows with ``#``/``.``/``S``/``G``, or a bool wall mask), which then overrides ``rooms``.
    Start and goal cells are sampled at least ``min_distance`` apart, measured as Manhattan
    distance (``distance="manhattan"``, default) or shortest-path length (``"path"``, which
    also keeps start and goal connected). ``goal=(row, col)`` fixes the goal cell (it must be
    free), whatever ``G`` cells the layout marks; starts are still drawn per episode.

    State lives in buffers, so ``env.to(device)`` moves it and ``env.state_dict()`` /
    ``load_state_dict`` save and restore it (mid-episode positions and the draws' state
    included). Starts and goals come from counter-based draws (:class:`EpisodeDraws`): an
    instance's ``k``-th episode depends only on the seed (``seed`` or :meth:`set_seed`;
    ``None`` means 0), the instance's index and ``k``, so one seed gives the same episodes on
    every device; so do the slips, drawn from the seed, the instance, its episode and the step
    (:meth:`EpisodeDraws.step_words`). Partial resets through ``"_reset"`` resample only the
    instances asked for.
    """

    def __init__(
        self,
        batch_size: int | Sequence[int] = (1,),
        rooms: int | tuple[int, int] = 2,
        room_size: int = 5,
        max_steps: int = 100,
        min_distance: int = 0,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        *,
        layout: str | Sequence[str] | torch.Tensor | None = None,
        distance: str = "manhattan",
        goal_keys: bool = True,
        goal: Sequence[int] | None = None,
        slip: float = 0.0,
        observation: str = "coordinates",
    ):
        batch_size = torch.Size([batch_size] if isinstance(batch_size, int) else batch_size)
        super().__init__(batch_size=batch_size, device=device)
        if max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {max_steps}.")
        if not 0.0 <= float(slip) <= 1.0:
            raise ValueError(
                f"slip is the probability that a move is replaced by another one: a number in "
                f"[0, 1] (1/3 in the classic four rooms), got {slip!r}."
            )
        if observation not in OBSERVATIONS:
            raise ValueError(
                f"observation={observation!r}; choose one of {list(OBSERVATIONS)} (scaled agent "
                "and goal coordinates, or one-hot cells)."
            )
        parsed = parse_layout(rooms_layout(rooms, room_size) if layout is None else layout)
        if goal is not None:
            parsed = _fixed_goal(parsed, goal)
        self.layout = parsed
        self.max_steps = int(max_steps)
        self.goal_keys = goal_keys
        self.slip = float(slip)
        self.observation_kind = observation
        walls = parsed.walls.to(self.device)
        free_cells = (~walls).nonzero()
        self.register_buffer("walls", walls)
        self.register_buffer("free_cells", free_cells)
        self.sampler = StartGoalSampler(valid_pairs(parsed, free_cells, min_distance, distance))
        # one-hot features: each free cell's index, and each goal cell's among the goal cells
        cell_index = torch.full(walls.shape, -1, dtype=torch.long, device=self.device)
        cell_index[free_cells[:, 0], free_cells[:, 1]] = torch.arange(len(free_cells), device=self.device)
        goal_cells = free_cells[self.sampler.goals]
        goal_index = torch.full(walls.shape, -1, dtype=torch.long, device=self.device)
        goal_index[goal_cells[:, 0], goal_cells[:, 1]] = torch.arange(len(goal_cells), device=self.device)
        self.register_buffer("cell_index", cell_index)
        self.register_buffer("goal_cells", goal_cells)
        self.register_buffer("goal_index", goal_index)
        self.register_buffer("moves", MOVES.to(self.device))
        rows, cols = walls.shape
        self.register_buffer(
            "scale",
            torch.tensor(
                [max(rows - 1, 1), max(cols - 1, 1)], dtype=torch.float32, device=self.device
            ),
        )
        self.size = max(rows, cols)
        self.draws = EpisodeDraws(batch_size.numel(), 2, seed, self.device)

        shape = batch_size
        obs = {
            "observation": Bounded(
                0.0, 1.0, (*shape, self.observation_size), dtype=torch.float32, device=self.device
            )
        }
        if goal_keys:
            goal = Bounded(0.0, 1.0, (*shape, 2), dtype=torch.float32, device=self.device)
            obs.update(achieved_goal=goal, desired_goal=goal.clone())
        self.observation_spec = Composite(
            **obs,
            is_success=Categorical(2, (*shape, 1), dtype=torch.bool, device=self.device),
            shape=shape,
        )
        self.action_spec = Categorical(4, shape, dtype=torch.int64, device=self.device)
        self.reward_spec = Unbounded((*shape, 1), dtype=torch.float32, device=self.device)
        flag = Categorical(2, (*shape, 1), dtype=torch.bool, device=self.device)
        self.full_done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=shape
        )
        self.register_buffer(
            "position", torch.zeros(*shape, 2, dtype=torch.long, device=self.device)
        )
        self.register_buffer("goal", torch.zeros_like(self.position))
        self.register_buffer("elapsed", torch.zeros(shape, dtype=torch.long, device=self.device))

    @property
    def observation_size(self) -> int:
        """Entries of ``"observation"``: 4 coordinates, or the one-hot cells' count."""
        if self.observation_kind == "coordinates":
            return 4
        goals = self.goal_cells.shape[0]
        return self.free_cells.shape[0] + (goals if goals > 1 else 0)

    # ----------------------------------------------------------------------------- goals
    @property
    def goal_tolerance(self) -> torch.Tensor:
        """Per-axis tolerance in observation units: a goal is reached iff every coordinate of
        ``achieved - desired`` is below it (i.e. the same cell)."""
        return 0.5 / self.scale

    def goal_reached(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        """Bool ``[..., 1]``: is ``achieved_goal`` the ``desired_goal`` cell (any batch shape)?"""
        close = (achieved_goal - desired_goal).abs() < self.goal_tolerance.to(achieved_goal.device)
        return close.all(-1, keepdim=True)

    def compute_reward(
        self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor
    ) -> torch.Tensor:
        """The env's sparse reward (float ``[..., 1]``) for any achieved/desired goal pair."""
        return self.goal_reached(achieved_goal, desired_goal).float()

    # ----------------------------------------------------------------------------- dynamics
    def _features(self, position: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The ``"observation"`` of agent cells ``position`` with goal cells ``goal``
        (``[..., 2]`` long each)."""
        if self.observation_kind == "coordinates":
            return torch.cat([position.float() / self.scale, goal.float() / self.scale], -1)
        obs = self._one_hot(self.cell_index, position, self.free_cells.shape[0])
        if self.goal_cells.shape[0] > 1:
            obs = torch.cat([obs, self._one_hot(self.goal_index, goal, self.goal_cells.shape[0])], -1)
        return obs

    def cell_observations(self, goal: Sequence[int] | None = None) -> torch.Tensor:
        """``[n_free_cells, observation_size]``: the observation with the agent in each free
        cell (the order of ``free_cells``) and the goal at ``goal`` (row, col; default:
        the first instance's current goal), e.g. to draw a value or termination map."""
        if goal is None:
            cell = self.goal.reshape(-1, 2)[0]
        else:
            cell = torch.as_tensor(tuple(goal), dtype=torch.long, device=self.device)
            if cell.shape != (2,) or self.goal_index[cell[0], cell[1]] < 0:
                raise ValueError(
                    f"goal={tuple(goal)!r} is not one of this maze's goal cells "
                    f"({self.goal_cells.tolist()})."
                )
        return self._features(self.free_cells, cell.expand_as(self.free_cells))

    def _observation(self) -> dict[str, torch.Tensor]:
        achieved = self.position.float() / self.scale
        desired = self.goal.float() / self.scale
        out = {"observation": self._features(self.position, self.goal)}
        if self.goal_keys:
            out.update(achieved_goal=achieved, desired_goal=desired)
        return out

    @staticmethod
    def _one_hot(index: torch.Tensor, cells: torch.Tensor, n: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(index[cells[..., 0], cells[..., 1]], n).float()

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        reset = None if tensordict is None else tensordict.get("_reset", None)
        if reset is None:
            reset = torch.ones(self.batch_size, dtype=torch.bool, device=self.device)
        else:
            reset = reset.reshape(self.batch_size)
        start, goal = self.sampler(self.draws(reset))
        shape = (*self.batch_size, 2)
        start, goal = self.free_cells[start].reshape(shape), self.free_cells[goal].reshape(shape)
        self.position = torch.where(reset[..., None], start, self.position)
        self.goal = torch.where(reset[..., None], goal, self.goal)
        self.elapsed = torch.where(reset, 0, self.elapsed)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        return TensorDict(
            {
                **self._observation(),
                "is_success": done.clone(),
                "done": done,
                "terminated": done.clone(),
                "truncated": done.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action")
        n_moves = self.moves.shape[0]
        # Checked on the device (torch._assert_async: no host sync on cuda).
        torch._assert_async(
            ((action >= 0) & (action < n_moves)).all(),
            f"GridMaze got an action outside its spec Categorical({n_moves}): actions are move "
            f"indices 0..{n_moves - 1} (up, down, left, right). Check the policy's output.",
        )
        if self.slip > 0:
            words = self.draws.step_words(self.elapsed, 2)
            slipped = (uniform(words[:, 0]) < self.slip).reshape(action.shape)
            other = (action + 1 + (words[:, 1] % (n_moves - 1)).reshape(action.shape)) % n_moves
            action = torch.where(slipped, other, action)
        target = self.position + self.moves[action]
        blocked = self.walls[target[..., 0], target[..., 1]]
        self.position = torch.where(blocked[..., None], self.position, target)
        self.elapsed = self.elapsed + 1
        success = (self.position == self.goal).all(-1, keepdim=True)
        truncated = (self.elapsed >= self.max_steps)[..., None] & ~success
        return TensorDict(
            {
                **self._observation(),
                "is_success": success,
                "reward": success.float(),
                "done": success | truncated,
                "terminated": success,
                "truncated": truncated,
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _set_seed(self, seed: int | None) -> None:
        self.draws.manual_seed(seed)

    # ----------------------------------------------------------------------------- rendering
    render_mode = "rgb_array"

    def render(self, index: int = 0, cell_px: int = 16) -> np.ndarray:
        """An ``HxWx3`` uint8 frame of instance ``index`` (flat index into the batch): walls
        dark, goal green, agent red; ``cell_px`` pixels per cell."""
        i = _render.check_index(index, self.batch_size)
        image = _render.layout_image(self.walls, cell_px)
        margin = max(cell_px // 8, 0)
        image = _render.paint_cell(image, self.goal.reshape(-1, 2)[i], cell_px, _render.GOAL)
        image = _render.paint_cell(
            image, self.position.reshape(-1, 2)[i], cell_px, _render.AGENT, margin
        )
        return _render.to_numpy(image)



def _fixed_goal(layout: Layout, goal: Sequence[int]) -> Layout:
    """``layout`` with ``goal`` (row, col) its only goal cell."""
    rows, cols = layout.shape
    cell = tuple(int(v) for v in goal) if len(goal) == 2 else None
    if cell is None or not (0 <= cell[0] < rows and 0 <= cell[1] < cols) or layout.walls[cell]:
        raise ValueError(
            f"goal={tuple(goal)!r} must be the (row, col) of a free cell of this {rows} x {cols} "
            f"maze; free cells are where GridMaze(...).walls is False (e.g. "
            f"{tuple((~layout.walls).nonzero()[0].tolist())})."
        )
    goals = torch.zeros_like(layout.walls)
    goals[cell] = True
    return Layout(layout.walls, layout.starts, goals)
