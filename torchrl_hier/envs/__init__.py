"""Batched pure-torch tasks (any device) for hierarchies."""

from torchrl_hier.envs.grid_maze import GridMaze, rooms_layout

__all__ = ["GridMaze", "rooms_layout"]
