"""Per-level learning: a replay buffer, a ``torchrl.objectives`` loss, its optimizer and target
updates for each level, counted in that level's own SMDP transitions."""

from torchrl_hier.learning.hierarchy_learner import HierarchyLearner
from torchrl_hier.learning.level_learner import LevelLearner, transition_keys

__all__ = ["HierarchyLearner", "LevelLearner", "transition_keys"]
