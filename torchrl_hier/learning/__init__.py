"""Per-level learning: a replay buffer, a ``torchrl.objectives`` loss, its optimizer and target
updates for each level, counted in that level's own SMDP transitions; or, on-policy, the
level's trajectories with GAE over its semi-MDP steps."""

from torchrl_hier.learning.hierarchy_learner import HierarchyLearner
from torchrl_hier.learning.level_learner import LevelLearner, transition_keys
from torchrl_hier.learning.on_policy import OnPolicyLearner

__all__ = ["HierarchyLearner", "LevelLearner", "OnPolicyLearner", "transition_keys"]
