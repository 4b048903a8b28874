"""torchrl_hier: hierarchical RL on TorchRL and TensorDict.

A hierarchy is a TorchRL policy (forward pass) plus an env transform (backward pass); each
level learns from its own semi-MDP transitions with stock ``torchrl.objectives`` losses.
"""

__version__ = "0.1.0"  # the package's only version string (pyproject.toml reads it)

from torchrl_hier import control
from torchrl_hier.control import (
    Always,
    GoalReached,
    LevelStep,
    ModuleRule,
    Never,
    ReturnControlRule,
    Timeout,
)
from torchrl_hier.hierarchy import Hierarchy, HierarchyPolicy, HierarchyTransform
from torchrl_hier.level import Level

__all__ = [
    "__version__",
    "control",
    "Always",
    "GoalReached",
    "LevelStep",
    "ModuleRule",
    "Never",
    "ReturnControlRule",
    "Timeout",
    "Hierarchy",
    "HierarchyPolicy",
    "HierarchyTransform",
    "Level",
]
