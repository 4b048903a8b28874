"""Batched pure-torch tasks (any device) for hierarchies, and tasks by name.

- :class:`GridMaze`: discrete maze (four rooms, larger room grids, text layouts).
- :class:`PointMaze`: continuous point-mass maze, velocity or force control.
- :func:`make_env` / :func:`register_env` / :func:`list_envs`: built-in tasks, your own and
  gymnasium ids by name.
- :class:`FixedGoal` / :func:`goal_gym_env`: a gymnasium task made goal-conditioned (a fixed
  desired goal, the state as achieved goal), e.g. ``make_env("MountainCarContinuous")``.

Each built-in task has a goal in its observation, ``"achieved_goal"``/``"desired_goal"`` keys,
an ``"is_success"`` entry, ``goal_reached``/``compute_reward`` for relabelling, and
``render(index)`` returning an ``HxWx3`` uint8 frame.
"""

from torchrl_hier.envs.goal_env import FixedGoal, goal_gym_env
from torchrl_hier.envs.grid_maze import GridMaze
from torchrl_hier.envs.layouts import (
    LAYOUTS,
    Layout,
    doorways,
    parse_layout,
    path_distances,
    rooms_layout,
)
from torchrl_hier.envs.point_maze import PointMaze, wall_boxes
from torchrl_hier.envs.registry import list_envs, make_env, register_env

__all__ = [
    "GridMaze",
    "PointMaze",
    "FixedGoal",
    "goal_gym_env",
    "LAYOUTS",
    "Layout",
    "doorways",
    "parse_layout",
    "path_distances",
    "rooms_layout",
    "wall_boxes",
    "make_env",
    "register_env",
    "list_envs",
]
