"""A batched pure-torch continuous point-mass maze (velocity or force control), sparse reward.

The kind of task LayeredRL's Maze2D and HAC/HIRO's point/ant mazes are, without a physics
engine: walls are axis-aligned boxes built from a layout grid and collisions are resolved by a
vectorised swept test along x then y, so a step never passes through a wall.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from torchrl_hier.envs import _render
from torchrl_hier.envs.hash_rng import EpisodeDraws, uniform
from torchrl_hier.envs.layouts import StartGoalSampler, parse_layout, valid_pairs

__all__ = ["PointMaze", "wall_boxes"]

_EPS = 1e-4


def wall_boxes(walls: torch.Tensor) -> torch.Tensor:
    """Axis-aligned boxes ``[K, 4]`` = ``(x0, y0, x1, y1)`` covering the wall cells; runs of
    wall cells along a row are merged into one box. Cell ``(r, c)`` spans ``[c, c+1] x [r, r+1]``.
    """
    boxes = []
    for r, row in enumerate(walls.tolist()):
        c = 0
        while c < len(row):
            if row[c]:
                start = c
                while c < len(row) and row[c]:
                    c += 1
                boxes.append((start, r, c, r + 1))
            else:
                c += 1
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


class PointMaze(EnvBase):
    """Move a point mass to a goal in a 2-D maze; batched over instances, runs on any device.

    Coordinates are in cell units: cell ``(row, col)`` of the layout spans ``x in [col, col+1]``,
    ``y in [row, row+1]``. Observation ``"observation"``: ``(x, y, gx, gy)`` for velocity control,
    ``(x, y, vx, vy, gx, gy)`` for force control; ``"achieved_goal"`` = ``(x, y)`` and
    ``"desired_goal"`` = ``(gx, gy)``. Action in ``[-1, 1]^2``:

    - ``control="velocity"``: the point moves by ``action * max_speed * dt``;
    - ``control="force"``: ``v <- clip((1 - damping) v + action * accel * dt, +-max_speed)``, then
      the point moves by ``v * dt``; a wall hit zeroes the blocked velocity component.

    The point is a square of half-width ``agent_radius`` against the walls (a box test, exact
    and cheap). Reward 1 when it ends a step within ``goal_radius`` (Euclidean) of the goal,
    which terminates the episode, else 0; truncation after ``max_steps``. ``"is_success"`` tells
    whether the goal was reached. Start and goal cells are sampled with a shortest-path distance
    of at least ``min_distance`` cells (``S``/``G`` cells of a text layout restrict them), then
    jittered uniformly by up to ``jitter`` inside their cell.

    ``layout`` is a name from :data:`~torchrl_hier.envs.LAYOUTS` (``"UMaze"``, ``"Medium"``,
    ``"Large"``, ``"Open"``), text rows or a bool wall mask. State lives in buffers (moved by
    ``env.to``, saved and restored by ``env.state_dict()`` / ``load_state_dict``). Starts, goals
    and their jitter come from counter-based draws (:class:`EpisodeDraws`): an instance's
    ``k``-th episode depends only on the seed (``seed=None`` means 0), the instance's index and
    ``k``, so one seed gives the same episodes on every device. Partial resets through
    ``"_reset"`` resample only the instances asked for.
    """

    def __init__(
        self,
        batch_size: int | Sequence[int] = (1,),
        layout: str | Sequence[str] | torch.Tensor = "UMaze",
        control: str = "velocity",
        max_steps: int = 200,
        min_distance: int = 0,
        goal_radius: float = 0.5,
        max_speed: float = 2.0,
        dt: float = 0.1,
        accel: float = 10.0,
        damping: float = 0.1,
        agent_radius: float = 0.1,
        jitter: float = 0.25,
        device: torch.device | str = "cpu",
        seed: int | None = None,
    ):
        batch_size = torch.Size([batch_size] if isinstance(batch_size, int) else batch_size)
        super().__init__(batch_size=batch_size, device=device)
        if control not in ("velocity", "force"):
            raise ValueError(f"control must be 'velocity' or 'force', got {control!r}.")
        if max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {max_steps}.")
        if goal_radius <= 0:
            raise ValueError(f"goal_radius must be positive, got {goal_radius}.")
        if not 0 <= agent_radius < 0.5:
            raise ValueError(f"agent_radius must be in [0, 0.5) cells, got {agent_radius}.")
        if not 0 <= jitter <= 0.5 - agent_radius - 2 * _EPS:
            raise ValueError(
                f"jitter must be in [0, 0.5 - agent_radius) = [0, {0.5 - agent_radius:g}) so "
                f"that starts and goals stay inside their cell, got {jitter}."
            )
        if max_speed <= 0 or dt <= 0 or accel <= 0 or not 0 <= damping <= 1:
            raise ValueError(
                "max_speed, dt and accel must be positive and damping in [0, 1], got "
                f"max_speed={max_speed}, dt={dt}, accel={accel}, damping={damping}."
            )
        parsed = parse_layout(layout)
        self.layout = parsed
        self.control = control
        self.max_steps = int(max_steps)
        self.goal_radius = float(goal_radius)
        self.max_speed, self.dt, self.accel, self.damping = max_speed, dt, accel, damping
        self.agent_radius, self.jitter = float(agent_radius), float(jitter)
        walls = parsed.walls.to(self.device)
        free_cells = (~walls).nonzero()
        self.register_buffer("walls", walls)
        self.register_buffer("free_cells", free_cells)
        self.sampler = StartGoalSampler(valid_pairs(parsed, free_cells, min_distance, "path"))
        inflate = torch.tensor([-1.0, -1.0, 1.0, 1.0]) * self.agent_radius
        self.register_buffer("boxes", (wall_boxes(parsed.walls) + inflate).to(self.device))
        rows, cols = walls.shape
        self._extent = (float(cols), float(rows))
        self._margin = self.agent_radius + _EPS
        self.register_buffer("extent", torch.tensor(self._extent, device=self.device))
        # per reset: 2 words pick the cells, 2 jitter the start and 2 the goal
        self.draws = EpisodeDraws(batch_size.numel(), 6, seed, self.device)

        shape, dev = batch_size, self.device
        zero2 = torch.zeros(2, device=dev)
        lo, hi = zero2, self.extent
        vel = torch.full((2,), float(max_speed), device=dev)
        parts_lo = [lo, -vel, lo] if control == "force" else [lo, lo]
        parts_hi = [hi, vel, hi] if control == "force" else [hi, hi]
        obs_lo = torch.cat(parts_lo).expand(*shape, -1)
        obs_hi = torch.cat(parts_hi).expand(*shape, -1)
        goal_spec = Bounded(
            lo.expand(*shape, 2), hi.expand(*shape, 2), dtype=torch.float32, device=dev
        )
        self.observation_spec = Composite(
            observation=Bounded(obs_lo, obs_hi, dtype=torch.float32, device=dev),
            achieved_goal=goal_spec,
            desired_goal=goal_spec.clone(),
            is_success=Categorical(2, (*shape, 1), dtype=torch.bool, device=dev),
            shape=shape,
        )
        self.action_spec = Bounded(-1.0, 1.0, (*shape, 2), dtype=torch.float32, device=dev)
        self.reward_spec = Unbounded((*shape, 1), dtype=torch.float32, device=dev)
        flag = Categorical(2, (*shape, 1), dtype=torch.bool, device=dev)
        self.full_done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=shape
        )
        self.register_buffer("position", torch.zeros(*shape, 2, device=dev))
        self.register_buffer("velocity", torch.zeros(*shape, 2, device=dev))
        self.register_buffer("goal", torch.zeros(*shape, 2, device=dev))
        self.register_buffer("elapsed", torch.zeros(shape, dtype=torch.long, device=dev))

    # ----------------------------------------------------------------------------- goals
    @property
    def goal_tolerance(self) -> float:
        """Euclidean distance (cell units) under which a goal counts as reached."""
        return self.goal_radius

    def goal_reached(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        """Bool ``[..., 1]``: is ``achieved_goal`` within ``goal_radius`` of ``desired_goal``?"""
        return (achieved_goal - desired_goal).norm(dim=-1, keepdim=True) <= self.goal_radius

    def compute_reward(
        self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor
    ) -> torch.Tensor:
        """The env's sparse reward (float ``[..., 1]``) for any achieved/desired goal pair."""
        return self.goal_reached(achieved_goal, desired_goal).float()

    # ----------------------------------------------------------------------------- dynamics
    def _observation(self) -> dict[str, torch.Tensor]:
        parts = (
            [self.position, self.velocity, self.goal]
            if self.control == "force"
            else [
                self.position,
                self.goal,
            ]
        )
        return {
            "observation": torch.cat(parts, -1),
            "achieved_goal": self.position.clone(),
            "desired_goal": self.goal.clone(),
        }

    def _cell_points(self, cells: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """(x, y) points inside the given ``[n, 2]`` (row, col) cells, jittered by the random
        ``words`` ``[n, 2]``."""
        noise = uniform(words) * 2 - 1
        return cells.flip(-1).float() + 0.5 + noise * self.jitter

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        reset = None if tensordict is None else tensordict.get("_reset", None)
        if reset is None:
            reset = torch.ones(self.batch_size, dtype=torch.bool, device=self.device)
        else:
            reset = reset.reshape(self.batch_size)
        words = self.draws(reset)
        start, goal = self.sampler(words[:, :2])
        shape = (*self.batch_size, 2)
        start = self._cell_points(self.free_cells[start], words[:, 2:4]).reshape(shape)
        goal = self._cell_points(self.free_cells[goal], words[:, 4:]).reshape(shape)
        self.position = torch.where(reset[..., None], start, self.position)
        self.goal = torch.where(reset[..., None], goal, self.goal)
        self.velocity = torch.where(reset[..., None], 0.0, self.velocity)
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

    def _sweep(
        self, position: torch.Tensor, delta: torch.Tensor, axis: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New coordinate along ``axis`` after moving by ``delta`` (``[*B]``), stopped just before
        the first (inflated) wall box on the way, and whether it was stopped. Vectorised over
        instances and boxes."""
        other = 1 - axis
        lo, hi = self.boxes[:, axis], self.boxes[:, axis + 2]
        olo, ohi = self.boxes[:, other], self.boxes[:, other + 2]
        p = position[..., axis, None]
        q = position[..., other, None]
        wanted = position[..., axis] + delta
        overlaps = (q > olo) & (q < ohi)
        # moving forward: boxes ahead whose near face the target crosses; likewise backward
        ahead = overlaps & (lo >= p) & (wanted[..., None] > lo)
        stop_fwd = torch.where(ahead, lo - _EPS, float("inf")).amin(-1)
        behind = overlaps & (hi <= p) & (wanted[..., None] < hi)
        stop_bwd = torch.where(behind, hi + _EPS, float("-inf")).amax(-1)
        target = torch.where(delta > 0, torch.minimum(wanted, stop_fwd), wanted)
        target = torch.where(delta < 0, torch.maximum(target, stop_bwd), target)
        target = target.clamp(self._margin, self._extent[axis] - self._margin)
        return target, target != wanted

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action").clamp(-1.0, 1.0)
        if self.control == "velocity":
            velocity = action * self.max_speed
        else:
            velocity = (1 - self.damping) * self.velocity + action * (self.accel * self.dt)
            velocity = velocity.clamp(-self.max_speed, self.max_speed)
        delta = velocity * self.dt
        x, blocked_x = self._sweep(self.position, delta[..., 0], 0)
        moved_x = torch.stack([x, self.position[..., 1]], -1)
        y, blocked_y = self._sweep(moved_x, delta[..., 1], 1)
        if self.control == "force":
            # a blocked axis loses its velocity
            self.velocity = torch.where(torch.stack([blocked_x, blocked_y], -1), 0.0, velocity)
        self.position = torch.stack([x, y], -1)
        self.elapsed = self.elapsed + 1
        success = self.goal_reached(self.position, self.goal)
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

    def render(self, index: int = 0, cell_px: int = 24) -> np.ndarray:
        """An ``HxWx3`` uint8 frame of instance ``index`` (flat index into the batch): walls
        dark, goal region green, agent red; ``cell_px`` pixels per cell."""
        i = _render.check_index(index, self.batch_size)
        image = _render.layout_image(self.walls, cell_px)
        goal = self.goal.reshape(-1, 2)[i]
        image = _render.paint_disk(image, goal, self.goal_radius, cell_px, _render.GOAL)
        agent = self.position.reshape(-1, 2)[i]
        radius = max(self.agent_radius, 1.5 / cell_px, 0.1)
        image = _render.paint_disk(image, agent, radius, cell_px, _render.AGENT)
        return _render.to_numpy(image)
