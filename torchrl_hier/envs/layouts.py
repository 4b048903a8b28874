"""Maze layouts shared by the grid and point-mass mazes: parsing, named layouts, path distances.

A layout is a grid of cells. As text (one string per row) it uses ``#`` for a wall, ``.`` (or
a space, ``O`` or ``0``) for a free cell, ``S`` for a free cell a start may be sampled in and
``G`` for a free cell a goal may be sampled in (``1`` is a wall too). Without ``S`` cells any
free cell can be a start; likewise for ``G``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "LAYOUTS",
    "Layout",
    "parse_layout",
    "rooms_layout",
    "path_distances",
    "manhattan_distances",
    "StartGoalSampler",
    "valid_pairs",
    "doorways",
]

_WALL_CHARS = frozenset("#1")
_FREE_CHARS = frozenset(". O0")
_START_CHARS = frozenset("S")
_GOAL_CHARS = frozenset("G")


def rooms_layout(rooms: int | tuple[int, int] = 2, room_size: int = 5) -> torch.Tensor:
    """A grid of square rooms joined by one door per inner wall.

    ``rooms`` is the number of rooms per side, or ``(rows, cols)`` of rooms. Returns a bool
    tensor, True where there is a wall. ``rooms=2, room_size=5`` is the classic four-rooms
    layout (13 x 13 with its outer wall); ``rooms=3`` gives nine rooms (19 x 19).
    """
    rows, cols = (rooms, rooms) if isinstance(rooms, int) else tuple(rooms)
    if rows < 1 or cols < 1 or room_size < 1:
        raise ValueError(
            f"rooms and room_size must be positive, got rooms={rooms}, room_size={room_size}."
        )
    step = room_size + 1
    walls = torch.zeros(rows * step + 1, cols * step + 1, dtype=torch.bool)
    walls[::step, :] = True
    walls[:, ::step] = True
    door = room_size // 2 + 1
    # a door in the middle of each wall segment between two neighbouring rooms
    for k in range(1, rows):
        for c in range(cols):
            walls[k * step, c * step + door] = False
    for k in range(1, cols):
        for r in range(rows):
            walls[r * step + door, k * step] = False
    return walls


#: Named layouts, as text. ``UMaze``, ``Medium`` and ``Large`` follow the D4RL / Gymnasium-
#: Robotics point-maze maps; ``Open`` is an empty room.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "Open": (
        "#######",
        "#.....#",
        "#.....#",
        "#.....#",
        "#######",
    ),
    "UMaze": (
        "#####",
        "#...#",
        "###.#",
        "#...#",
        "#####",
    ),
    "Medium": (
        "########",
        "#..##..#",
        "#..#...#",
        "##...###",
        "#..#...#",
        "#.#..#.#",
        "#...#..#",
        "########",
    ),
    "Large": (
        "############",
        "#....#.....#",
        "#.##.#.#.#.#",
        "#......#...#",
        "#.####.###.#",
        "#..#.#.....#",
        "##.#.#.#.###",
        "#..#...#...#",
        "############",
    ),
}


@dataclass(frozen=True)
class Layout:
    """A parsed layout: bool masks of shape ``[rows, cols]``."""

    walls: torch.Tensor
    starts: torch.Tensor
    goals: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.walls.shape)


def _text_layout(rows: Sequence[str]) -> Layout:
    if not rows or any(len(row) != len(rows[0]) for row in rows) or not rows[0]:
        raise ValueError(
            "A text layout needs one non-empty string per row, all of the same length; got "
            f"row lengths {[len(row) for row in rows]}."
        )
    known = _WALL_CHARS | _FREE_CHARS | _START_CHARS | _GOAL_CHARS
    bad = sorted({ch for row in rows for ch in row} - known)
    if bad:
        raise ValueError(
            f"Unknown layout characters {bad}: use '#' for walls, '.' for free cells, 'S' for "
            "start cells and 'G' for goal cells."
        )
    grid = [[ch for ch in row] for row in rows]

    def mask(chars: frozenset[str]) -> torch.Tensor:
        return torch.tensor([[ch in chars for ch in row] for row in grid], dtype=torch.bool)

    walls = mask(_WALL_CHARS)
    starts, goals = mask(_START_CHARS), mask(_GOAL_CHARS)
    return Layout(walls, starts if starts.any() else ~walls, goals if goals.any() else ~walls)


def parse_layout(layout: str | Sequence[str] | torch.Tensor) -> Layout:
    """Turns a layout name (a key of :data:`LAYOUTS`), text rows or a bool wall mask into a
    :class:`Layout`."""
    if isinstance(layout, str):
        if layout not in LAYOUTS:
            raise ValueError(
                f"Unknown layout name {layout!r}; named layouts are {sorted(LAYOUTS)}. Pass "
                "text rows ('#' walls, '.' free) or a bool wall tensor for your own."
            )
        parsed = _text_layout(LAYOUTS[layout])
    elif isinstance(layout, torch.Tensor):
        if layout.dtype != torch.bool or layout.ndim != 2:
            raise ValueError(
                "A tensor layout must be a 2-D bool wall mask (True = wall), got dtype "
                f"{layout.dtype} and shape {tuple(layout.shape)}."
            )
        walls = layout.detach().cpu().clone()
        parsed = Layout(walls, ~walls, ~walls)
    else:
        parsed = _text_layout(list(layout))
    if not (parsed.starts & ~parsed.walls).any() or not (parsed.goals & ~parsed.walls).any():
        raise ValueError("The layout has no free cell to start or to put a goal in.")
    return parsed


def doorways(walls: torch.Tensor) -> torch.Tensor:
    """Bool ``[rows, cols]``: the free cells with walls on two opposite sides (left and right,
    or above and below), i.e. the hallways between the rooms of :func:`rooms_layout` (and any
    one-cell-wide corridor of other layouts). Cells past the border count as walls."""
    w = torch.nn.functional.pad(walls.bool(), (1, 1, 1, 1), value=True)
    inner = w[1:-1, 1:-1]
    across = w[1:-1, :-2] & w[1:-1, 2:]
    along = w[:-2, 1:-1] & w[2:, 1:-1]
    return ~inner & (across | along)


def manhattan_distances(cells: torch.Tensor) -> torch.Tensor:
    """Pairwise Manhattan distances ``[C, C]`` between cells given as ``[C, 2]`` indices."""
    return (cells[:, None] - cells[None]).abs().sum(-1)


_PATH_CACHE: dict[tuple, torch.Tensor] = {}


def path_distances(walls: torch.Tensor, cells: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Shortest-path lengths ``[C, C]`` (int32; 4-connected moves through free cells) between
    the free ``cells`` ``[C, 2]``; -1 where unreachable.

    A breadth-first search from up to ``chunk`` sources at once over the free-cell graph
    (frontiers as bool rows, grown through a neighbour table). A one-off CPU precompute per
    layout, O(diameter * C**2) bool work, cached; done in numpy, whose single-threaded kernels
    beat torch's for these small arrays on a busy machine.
    """
    walls, cells = walls.cpu(), cells.cpu()
    key = (tuple(walls.shape), walls.numpy().tobytes(), cells.numpy().tobytes())
    if key in _PATH_CACHE:
        return _PATH_CACHE[key].clone()
    rows, cols = walls.shape
    n = cells.shape[0]
    if walls[cells[:, 0], cells[:, 1]].any():
        raise ValueError("path_distances: some of the given cells are walls.")
    # neighbour table [C, 4] into the cells, with n as a "no neighbour" sentinel
    index = np.full((rows + 2, cols + 2), n, dtype=np.int64)
    r, c = cells[:, 0].numpy() + 1, cells[:, 1].numpy() + 1
    index[r, c] = np.arange(n)
    up, down, left, right = index[r - 1, c], index[r + 1, c], index[r, c - 1], index[r, c + 1]
    out = np.full((n, n), -1, dtype=np.int32)
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        # cell-major [n + 1, m]: row n is the always-empty sentinel
        frontier = np.zeros((n + 1, m), dtype=bool)
        frontier[np.arange(lo, lo + m), np.arange(m)] = True
        reached = frontier[:n].copy()
        dist = np.full((n, m), -1, dtype=np.int32)
        dist[reached] = 0
        step = 0
        while True:
            grown = (frontier[up] | frontier[down] | frontier[left] | frontier[right]) & ~reached
            if not grown.any():
                break
            step += 1
            dist[grown] = step
            reached |= grown
            frontier[:n] = grown
        out[lo : lo + m] = dist.T
    result = torch.from_numpy(out)
    _PATH_CACHE[key] = result
    return result.clone()


def valid_pairs(
    layout: Layout, cells: torch.Tensor, min_distance: float, distance: str
) -> torch.Tensor:
    """Bool ``[C_goal, C_start]`` over ``cells``: may the goal be sampled with that start?"""
    if distance == "manhattan":
        far = manhattan_distances(cells) >= min_distance
    elif distance == "path":
        d = path_distances(layout.walls, cells).to(cells.device)
        far = (d >= min_distance) & (d >= 0)
    else:
        raise ValueError(f"distance must be 'manhattan' or 'path', got {distance!r}.")
    is_goal = layout.goals.to(cells.device)[cells[:, 0], cells[:, 1]]
    is_start = layout.starts.to(cells.device)[cells[:, 0], cells[:, 1]]
    pairs = far & is_goal[:, None] & is_start[None, :]
    if not pairs.any():
        raise ValueError(
            f"No start/goal pair is at least min_distance={min_distance} apart ({distance} "
            f"distance) in this {tuple(layout.walls.shape)} layout; lower min_distance."
        )
    return pairs


class StartGoalSampler(nn.Module):
    """Picks (start, goal) cell indices from a bool ``pairs[goal, start]`` table: a goal
    uniformly among goals that have a valid start, then a start uniformly among its valid
    starts. Keeps a padded table of valid starts per goal, so a draw is O(n) whatever the number
    of cells; a module with buffers, so ``env.to(device)`` moves it."""

    def __init__(self, pairs: torch.Tensor):
        super().__init__()
        counts = pairs.sum(-1)
        goals = (counts > 0).nonzero()[:, 0]
        # valid starts of each goal first (stable sort of the negated mask), padded
        order = torch.sort((~pairs[goals]).to(torch.uint8), dim=-1, stable=True).indices
        width = int(counts.max())
        self.register_buffer("goals", goals)
        self.register_buffer("counts", counts[goals])
        self.register_buffer("starts", order[:, :width].contiguous())

    def forward(self, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and goal cells ``[n]`` from two non-negative random int64 words per draw
        (``[n, 2]``, e.g. from :class:`~torchrl_hier.envs.hash_rng.EpisodeDraws`): integer
        arithmetic only, so the same words pick the same cells on every device."""
        g = words[:, 0] % self.goals.shape[0]
        k = words[:, 1] % self.counts[g]
        return self.starts[g, k], self.goals[g]
