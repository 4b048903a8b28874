"""A batched pure-torch grid maze (four rooms and larger room grids), sparse reward."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

__all__ = ["GridMaze", "rooms_layout"]

# up, down, left, right
MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])


def rooms_layout(rooms: int = 2, room_size: int = 5) -> torch.Tensor:
    """A ``rooms x rooms`` grid of square rooms joined by one door per inner wall.

    Returns a bool tensor, True where there is a wall. ``rooms=2, room_size=5`` is the
    classic four-rooms layout (13 x 13 with its outer wall).
    """
    if rooms < 1 or room_size < 1:
        raise ValueError(f"rooms and room_size must be positive, got {rooms}, {room_size}.")
    size = rooms * (room_size + 1) + 1
    walls = torch.zeros(size, size, dtype=torch.bool)
    walls[:: room_size + 1, :] = True
    walls[:, :: room_size + 1] = True
    door = room_size // 2 + 1
    for k in range(1, rooms):
        wall = k * (room_size + 1)
        for r in range(rooms):
            offset = r * (room_size + 1)
            walls[wall, offset + door] = False
            walls[offset + door, wall] = False
    return walls


class GridMaze(EnvBase):
    """Reach a goal cell in a maze; batched over instances, runs on any device.

    Observation ``"observation"``: ``(agent_row, agent_col, goal_row, goal_col)`` scaled to
    [0, 1]. Action: one of 4 moves (``Categorical(4)``). Reward 1 on reaching the goal (which
    terminates the episode) and 0 otherwise; episodes are truncated after ``max_steps``.
    ``"is_success"`` tells whether the goal was reached. Start and goal cells are sampled at
    least ``min_distance`` apart (Manhattan distance).
    """

    def __init__(
        self,
        batch_size: int | tuple[int, ...] = (1,),
        rooms: int = 2,
        room_size: int = 5,
        max_steps: int = 100,
        min_distance: int = 0,
        device: torch.device | str = "cpu",
        seed: int | None = None,
    ):
        batch_size = torch.Size([batch_size] if isinstance(batch_size, int) else batch_size)
        super().__init__(batch_size=batch_size, device=device)
        self.walls = rooms_layout(rooms, room_size).to(self.device)
        self.size = self.walls.shape[0]
        self.max_steps = max_steps
        self.free_cells = (~self.walls).nonzero().to(self.device)
        distances = (self.free_cells[:, None] - self.free_cells[None]).abs().sum(-1)
        self.far_apart = distances >= min_distance
        if not self.far_apart.any(-1).all():
            raise ValueError(
                f"min_distance={min_distance} leaves some goal cells without a start cell; "
                f"the maze is {self.size}x{self.size}."
            )
        self.moves = MOVES.to(self.device)
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(0 if seed is None else seed)
        shape = batch_size
        self.observation_spec = Composite(
            observation=Bounded(0.0, 1.0, (*shape, 4), dtype=torch.float32, device=self.device),
            is_success=Categorical(2, (*shape, 1), dtype=torch.bool, device=self.device),
            shape=shape,
        )
        self.action_spec = Categorical(4, shape, dtype=torch.int64, device=self.device)
        self.reward_spec = Unbounded((*shape, 1), dtype=torch.float32, device=self.device)
        flag = Categorical(2, (*shape, 1), dtype=torch.bool, device=self.device)
        self.full_done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=shape
        )
        self.position = torch.zeros(*shape, 2, dtype=torch.long, device=self.device)
        self.goal = torch.zeros_like(self.position)
        self.elapsed = torch.zeros(shape, dtype=torch.long, device=self.device)

    def _observation(self) -> torch.Tensor:
        return torch.cat([self.position, self.goal], -1).float() / (self.size - 1)

    def _sample_start_and_goal(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_free = self.free_cells.shape[0]
        flat = self.batch_size.numel()
        goal = torch.randint(n_free, (flat,), generator=self.rng, device=self.device)
        start = torch.multinomial(self.far_apart[goal].float(), 1, generator=self.rng)[:, 0]
        shape = (*self.batch_size, 2)
        return self.free_cells[start].reshape(shape), self.free_cells[goal].reshape(shape)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        reset = None if tensordict is None else tensordict.get("_reset", None)
        start, goal = self._sample_start_and_goal()
        if reset is None:
            reset = torch.ones(self.batch_size, dtype=torch.bool, device=self.device)
        else:
            reset = reset.reshape(self.batch_size)
        self.position = torch.where(reset[..., None], start, self.position)
        self.goal = torch.where(reset[..., None], goal, self.goal)
        self.elapsed = torch.where(reset, 0, self.elapsed)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        return TensorDict(
            {
                "observation": self._observation(),
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
        target = self.position + self.moves[action]
        blocked = self.walls[target[..., 0], target[..., 1]]
        self.position = torch.where(blocked[..., None], self.position, target)
        self.elapsed = self.elapsed + 1
        success = (self.position == self.goal).all(-1, keepdim=True)
        truncated = (self.elapsed >= self.max_steps)[..., None] & ~success
        return TensorDict(
            {
                "observation": self._observation(),
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
        self.rng.manual_seed(0 if seed is None else seed)
