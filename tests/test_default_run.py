"""`make run`'s default (issue 12, item 5) and its tiny twin (item 6).

The default config (``python -m torchrl_hier.train``, what ``make run`` runs) is the subgoal
hierarchy on PointMaze-UMaze, chosen by measurement: there it beats flat TD3 + HER at the same
budget (README: "The default run"); the task config records where the flat
agent stands (``baseline_flat``), and every run's ``summary.md`` says so. The twin trains the
default hierarchy end to end on a tiny budget and beats uniformly random actions.
"""

from __future__ import annotations

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from tiny_runs import random_success, shorten_learning

from torchrl_hier.experiment.report import write_summary
from torchrl_hier.train import train


def compose_default(overrides: list[str] = ()):
    with initialize_config_module("torchrl_hier.conf", version_base=None):
        return compose("config", overrides=list(overrides))


def test_the_default_is_the_measured_hierarchy_and_its_task_records_the_flat_baseline():
    cfg = compose_default()
    assert (cfg.task.name, cfg.hierarchy.name) == ("PointMaze-UMaze", "subgoals")
    flat = OmegaConf.to_container(cfg.task.baseline_flat)
    assert flat["hierarchy"] == "flat" and flat["total_frames"] == cfg.total_frames
    success = flat["success_rate"]
    assert success["min"] <= success["mean"] <= success["max"] and len(flat["seeds"]) >= 3


def test_tiny_default_run_trains_end_to_end_and_beats_random_actions(tmp_path):
    """The default hierarchy on a tiny budget (the open room of the same point maze, short
    episodes, short warm-ups): its greedy policy beats random actions by a clear margin."""
    cfg = compose_default([
        "task=PointMaze-Open", "task.n_envs=32", "task.kwargs.max_steps=40",
        "collector.frames_per_batch=512", "total_frames=4096", "eval.episodes=50",
        "eval.every_frames=0", "checkpoint.every_frames=0", "compile=false", "progress=false",
        f"run_dir={tmp_path}",
    ])
    shorten_learning(cfg, {"subgoal": (256, 1_000, 0.2), "primitive": (512, 4_000, 0.1)})
    summary = train(cfg)
    assert summary["frames"] >= 4096
    assert all(level["updates"] > 0 for level in summary["levels"].values())
    random = random_success(cfg, episodes=50, seed=1, steps=int(cfg.task.kwargs.max_steps))
    assert summary["eval"]["success_rate"] >= random + 0.2, (summary["eval"], random)


def test_summary_md_says_where_the_flat_baseline_stands(tmp_path):
    cfg = compose_default()
    flat = OmegaConf.to_container(cfg.task.baseline_flat)
    write_summary(tmp_path, {"task": cfg.task.name, "hierarchy": "subgoals", "seed": 0,
                             "baseline_flat": flat})
    text = (tmp_path / "summary.md").read_text()
    line = next(row for row in text.splitlines() if row.startswith("Flat baseline on this task"))
    assert f"`hierarchy=flat {flat['overrides']}`" in line
    assert f"{flat['success_rate']['mean']:.4g} (min" in line and "over seeds 0, 1, 2" in line
    write_summary(tmp_path, {"task": "GridMaze-UMaze", "hierarchy": "options", "seed": 0})
    assert "Flat baseline" not in (tmp_path / "summary.md").read_text()  # tasks without a note
