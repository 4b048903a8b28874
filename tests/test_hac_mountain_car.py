"""A tiny twin of benchmarks/hac_mountain_car.py: HAC (hierarchy=hac, task=MountainCarContinuous)
trains end to end through the benchmark's loop (TorchRL Collector, hindsight actions and goals
within subgoal attempts, subgoal tests, per-level TD3 learners, greedy evaluation), on a nearer
goal and 50-step episodes, and its greedy policy reaches that goal far more often than random
actions; plus the benchmark's table on made-up curves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import ExplorationType, RandomPolicy, set_exploration_type

from torchrl_hier.experiment.builders import make_task_env

_PATH = Path(__file__).parents[1] / "benchmarks" / "hac_mountain_car.py"
_spec = importlib.util.spec_from_file_location("hac_mountain_car_benchmark", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench
_spec.loader.exec_module(bench)

STEPS = 50
# the goal: position -0.3 (within 0.03), any velocity; from gymnasium's starts in [-0.6, -0.4]
# the car gets there by pushing right for ~20 steps, which random actions rarely do
NEAR_GOAL = [
    "+task.kwargs.goal=[-0.3,0.0]", "+task.kwargs.tolerance=[0.03,0.07]",
    "+task.kwargs.success=goal", "task.goal.tolerance=[0.03333,1.0]",
    f"+task.kwargs.max_episode_steps={STEPS}", f"task.max_episode_steps={STEPS}",
]
TINY = [
    *NEAR_GOAL, "hierarchy.levels.primitive.horizon=5",
    "hierarchy.levels.primitive.value_range=[-5.0,0.0]",
    "hierarchy.levels.top.learner.update_ratio=0.2",
    "hierarchy.levels.primitive.learner.warmup=500",
]


@torch.no_grad()
def reach_rate(exp, random: bool = False, episodes: int = 32, seed: int = 5) -> float:
    """The fraction of ``episodes`` fresh 50-step episodes in which the car is within the goal
    tolerance at some step (MountainCar does not end episodes there), for the trained
    hierarchy's greedy policy or uniformly random actions."""
    env = make_task_env(exp.cfg.task, episodes, "cpu", seed)
    if random:
        policy = RandomPolicy(env.full_action_spec)
    else:
        env, policy = TransformedEnv(env, exp.env_transform()), exp.policy
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = env.rollout(STEPS, policy, break_when_any_done=False)
    return float(rollout.get(("next", "is_success")).any(-2).float().mean())


def test_tiny_hac_reaches_a_near_goal_far_more_often_than_random_actions():
    keep = []
    run = bench.train("hac-2level", seed=0, episodes=60, eval_every=60, eval_episodes=2,
                      overrides=TINY, train_steps=STEPS, keep=keep)
    (exp,) = keep
    assert run["episodes"][-1] >= 60 and run["frames"][-1] >= 60 * STEPS * 0.9
    trained = reach_rate(exp)
    random = reach_rate(exp, random=True)
    print(f"reach rate: trained {trained:.2f}, random {random:.2f}")
    assert trained >= random + 0.4, (trained, random)


def test_table_reports_mean_min_max_and_the_seeds_that_solved():
    runs = [{"config": "hac-2level", "seed": s, "episodes": [0, 50, 100, 200],
             "frames": [0, 2e4, 4e4, 8e4], "greedy_return": [0.0, r / 2, r, r],
             "best_greedy_return": r, "solved_at_episode": 100 if r >= 90 else None,
             "cpu_s": 10.0} for s, r in ((0, 92.0), (1, 40.0), (2, 94.0))]
    (row,) = [line for line in bench.table(runs).splitlines() if line.startswith("| hac-2level")]
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[2:6] == ["37.7 [20.0, 47.0]", "75.3 [40.0, 94.0]", "75.3 [40.0, 94.0]",
                          "75.3 [40.0, 94.0]"]
    assert cells[6] == "2/3: 0 (100), 2 (100)"
