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


def test_table_reports_the_mean_with_a_bootstrap_ci_and_the_iqm_over_seeds():
    runs = [{"config": "grid-options", "env": "GridMaze-9Rooms", "task": "grid",
             "frames": [0, 50_000, 100_000], "success": [0.0, s / 2, s], "cpu_s": 1.0}
            for s in (0.1, 0.3, 0.5)]
    (row,) = [line for line in bench.table(runs).splitlines() if line.startswith("| grid-options")]
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[3:7] == ["0.00 [0.00, 0.00] @0k", "0.15 [0.05, 0.25] @50k",
                          "0.30 [0.10, 0.50] @100k", "0.30 [0.10, 0.50]"]
