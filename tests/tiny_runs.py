"""Helpers of the tiny-budget twins of the benchmarks (tests/test_default_run.py,
tests/test_robotics.py): short learning schedules and the random-action baseline to beat."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_hier.experiment.builders import make_task_env


def shorten_learning(cfg: DictConfig, schedule: Mapping[str, tuple[int, int, float]]) -> None:
    """Per level ``name: (warmup, annealing steps, update ratio)``, with batches of 64: enough
    gradient steps and annealed exploration within a tiny budget (edits ``cfg`` in place)."""
    OmegaConf.set_struct(cfg, False)
    for name, (warmup, anneal, ratio) in schedule.items():
        level = cfg.hierarchy.levels[name]
        level.learner.warmup = warmup
        level.learner.update_ratio = ratio
        level.learner.batch_size = 64
        level.exploration.annealing_num_steps = anneal


def random_success(cfg: DictConfig, episodes: int, seed: int, steps: int) -> float:
    """Success rate of uniformly random actions on the task over ``steps``-step episodes (one
    episode per instance)."""
    torch.manual_seed(seed)
    env = make_task_env(cfg.task, episodes, torch.device("cpu"), seed)
    rollout = env.rollout(steps, break_when_any_done=False)
    success = rollout["next", "is_success"].reshape(episodes, -1)
    done = rollout["next", "done"].reshape(episodes, -1)
    first = (done.cumsum(-1) - done.long()) == 0  # steps up to and including the first end
    return float((success & first).any(-1).float().mean())
