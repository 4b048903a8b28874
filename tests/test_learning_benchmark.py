"""Tiny-budget versions of the learning benchmark (benchmarks/learning.py): every config's
training path runs end to end (TorchRL Collector, hindsight, per-level learners, greedy
evaluation) and its greedy policy beats uniformly random actions on a small maze."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).parents[1] / "benchmarks" / "learning.py"
_spec = importlib.util.spec_from_file_location("learning_benchmark", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)

# small mazes whose episodes are too short for a random walk to reach the goal often
TINY = {
    "grid": bench.Task("GridMaze-UMaze", kwargs=dict(max_steps=10), frames=12_000, checkpoints=1,
                       obs_scale=4.0),
    "point": bench.Task("PointMaze-Open", kwargs=dict(max_steps=40), frames=12_000, checkpoints=1),
}

# exploration annealed and learning started within the tiny budgets
TINY_SCHEDULE = dict(warmup=500, anneal=4_000, top_warmup=200, top_anneal=500)


@pytest.mark.parametrize("name", list(bench.CONFIGS))
def test_tiny_budget_training_beats_random(name):
    config = bench.CONFIGS[name]
    task = TINY[config.task]
    run = bench.train(name, seed=0, n_envs=16, eval_episodes=50, task=task,
                      overrides=TINY_SCHEDULE)
    random = bench.random_success(task, seed=0, episodes=50)
    assert run["frames"][-1] > 0.9 * task.frames
    assert run["success"][-1] >= random + 0.2, (run["success"], random)
