"""Ready-made levels: options (DQN / discrete SAC), subgoals (TD3 / SAC) with HAC's hindsight,
goal-conditioned levels, and random/constant levels for tests and baselines.

Every factory returns ``(level, loss)``: the loss's networks are those the level's policy runs.
A two-level HAC on a goal-conditioned task, fed per level with whole episodes::

    space = SubgoalSpace((0, 1), low=0.0, high=1.0)            # subgoal = agent position
    top, top_loss = subgoal_level("subgoal", 4, space, test_probability=0.3)
    low, low_loss = goal_conditioned_level("primitive", 4, env.action_spec_unbatched, space,
                                           tolerance=0.05, horizon=8)
    hier = Hierarchy([top, low], env)
    episodes = LevelEpisodes(hier)
    her = HindsightGoals(GoalReward(space, 0.05), gamma=low.gamma, k=4)
    for batch in Collector(TransformedEnv(env, hier.transform), hier.policy, ...):
        ready = episodes.add(batch)
        low_learner.extend(her(ready["primitive"]))
        top_learner.extend(subgoal_transitions(ready["subgoal"], space, tolerance=0.05,
                                               penalty=-8.0))

Options: ``option_level(name, obs_dim, K)`` above ``option_conditioned_level(name, obs_dim, K,
env.action_spec_unbatched, timeout=H, termination=OptionTermination(obs_dim, K))``; their
transitions feed their losses directly.

Configs: each ready-made family has a factory ``*_from_config(ctx: LevelContext, **config)
-> LevelParts`` that the Hydra configs name with ``_target_`` (``flat_from_config``,
``option_from_config``, ``option_conditioned_from_config``, ``subgoal_from_config``,
``goal_conditioned_from_config``, ``option_critic_option_from_config`` above
``option_critic_intra_option_from_config``); a new family is one more such function and a
YAML file.

On-policy: ``on_policy_level(name, obs_dim, spec, algorithm="ppo")`` at any level (an option
spec above the lowest), learnt by ``OnPolicyLearner`` from ``hierarchy.trajectories(batch)``; option-critic:
``option_critic_levels(obs_dim, K, env.action_spec_unbatched)`` (an epsilon-greedy option level
over ``Q_Omega``, intra-option policies with termination heads, and their ``OptionCriticLoss``).
"""

from torchrl_hier.levels.basic import (
    ConstantPolicy,
    SpecRandomPolicy,
    constant_level,
    flat_from_config,
    random_level,
)
from torchrl_hier.levels.from_config import LevelContext, LevelParts
from torchrl_hier.levels.goals import (
    AchievedGoal,
    CommandedGoal,
    GoalReward,
    GoalSlot,
    SubgoalSpace,
    check_goal_env,
    check_goal_keys,
    goal_distance,
)
from torchrl_hier.levels.hindsight import (
    EPISODE_KEY,
    SCOPES,
    STRATEGIES,
    EpisodeBuffer,
    HindsightGoals,
    LevelEpisodes,
    episode_bounds,
    hindsight_actions,
    stream_ids,
    subgoal_attempts,
    subgoal_learner_frame,
    subgoal_test_penalties,
    subgoal_transitions,
)
from torchrl_hier.levels.option_critic import (
    OptionCriticLoss,
    OptionHeads,
    option_critic_intra_option_from_config,
    option_critic_intra_option_level,
    option_critic_levels,
    option_critic_option_from_config,
    option_critic_option_level,
    option_qvalue,
)
from torchrl_hier.levels.on_policy import ON_POLICY_ALGORITHMS, on_policy_head, on_policy_level
from torchrl_hier.levels.options import (
    OptionTermination,
    OptionTerminationLoss,
    option_conditioned_from_config,
    option_conditioned_level,
    option_from_config,
    option_level,
    option_spec,
)
from torchrl_hier.levels.parts import (
    GaussianOrUniform,
    PreTanhPenaltyTD3Loss,
    GreedyWhenTested,
    InputNet,
    LatticeSubgoal,
    SingleGreedy,
    SubgoalTestFlag,
    SubgoalToAbsolute,
    actor_critic_head,
    anneal_exploration,
    dqn_head,
    exploration_modules,
)
from torchrl_hier.levels.reachability import (
    ACTION_MASK,
    MaskedQValues,
    PlannedSubgoals,
    ReachabilityMemory,
    ReachableSubgoals,
)
from torchrl_hier.levels.subgoals import (
    goal_conditioned_from_config,
    goal_conditioned_level,
    goal_control,
    planned_subgoal_from_config,
    planned_subgoal_level,
    subgoal_action_spec,
    subgoal_from_config,
    subgoal_level,
)

__all__ = [
    "ConstantPolicy",
    "SpecRandomPolicy",
    "constant_level",
    "random_level",
    "flat_from_config",
    "LevelContext",
    "LevelParts",
    "AchievedGoal",
    "CommandedGoal",
    "GoalReward",
    "GoalSlot",
    "SubgoalSpace",
    "check_goal_env",
    "check_goal_keys",
    "goal_distance",
    "EPISODE_KEY",
    "SCOPES",
    "STRATEGIES",
    "EpisodeBuffer",
    "HindsightGoals",
    "LevelEpisodes",
    "episode_bounds",
    "hindsight_actions",
    "stream_ids",
    "subgoal_attempts",
    "subgoal_learner_frame",
    "subgoal_test_penalties",
    "subgoal_transitions",
    "OptionCriticLoss",
    "OptionHeads",
    "option_critic_levels",
    "option_critic_option_level",
    "option_critic_intra_option_level",
    "option_qvalue",
    "option_critic_option_from_config",
    "option_critic_intra_option_from_config",
    "ON_POLICY_ALGORITHMS",
    "on_policy_head",
    "on_policy_level",
    "OptionTermination",
    "OptionTerminationLoss",
    "option_conditioned_level",
    "option_level",
    "option_spec",
    "option_from_config",
    "option_conditioned_from_config",
    "GreedyWhenTested",
    "InputNet",
    "SingleGreedy",
    "LatticeSubgoal",
    "SubgoalTestFlag",
    "SubgoalToAbsolute",
    "GaussianOrUniform",
    "PreTanhPenaltyTD3Loss",
    "actor_critic_head",
    "anneal_exploration",
    "dqn_head",
    "exploration_modules",
    "ACTION_MASK",
    "MaskedQValues",
    "ReachabilityMemory",
    "ReachableSubgoals",
    "PlannedSubgoals",
    "planned_subgoal_level",
    "planned_subgoal_from_config",
    "goal_conditioned_level",
    "goal_control",
    "subgoal_action_spec",
    "subgoal_level",
    "subgoal_from_config",
    "goal_conditioned_from_config",
]
