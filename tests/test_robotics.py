"""gymnasium-robotics' PointMaze through TorchRL's GymWrapper (issue 12, item 4): the converted
observations, the env's own success criterion, partial resets, the install hint, and the tiny
twin of the benchmark (``benchmarks/robotics_maze.py``): the subgoal hierarchy trains end to end
on ``task=PointMaze_Medium-v3`` and beats random actions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from tiny_runs import random_success, shorten_learning
from torchrl.envs import check_env_specs

pytest.importorskip("gymnasium_robotics", reason="needs the robotics extra (make install)")

from torchrl_hier.envs.robotics import require_gymnasium_robotics, robotics_goal_env  # noqa: E402
from torchrl_hier.errors import ConfigError  # noqa: E402
from torchrl_hier.experiment.builders import make_task_env  # noqa: E402
from torchrl_hier.train import train  # noqa: E402

TASK = "PointMaze_Medium-v3"
_PATH = Path(__file__).parents[1] / "benchmarks" / "robotics_maze.py"
_spec = importlib.util.spec_from_file_location("robotics_maze_benchmark", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def steer(observation: torch.Tensor) -> torch.Tensor:
    """A PD controller towards the goal appended to the observation (x, y, vx, vy, gx, gy)."""
    return (5.0 * (observation[..., 4:6] - observation[..., :2]) - observation[..., 2:4]).clamp(-1, 1)


def test_observations_are_float32_with_the_goal_appended():
    env = robotics_goal_env(TASK, 3, seed=0, continuing_task=False)
    check_env_specs(env)
    td = env.rollout(20, break_when_any_done=False)
    for key in ("observation", "achieved_goal", "desired_goal"):
        assert td[key].dtype == torch.float32 and td["next", key].dtype == torch.float32
    obs = td["next", "observation"]
    assert obs.shape == (3, 20, 6) and td["next", "is_success"].dtype == torch.bool
    torch.testing.assert_close(obs[..., :2], td["next", "achieved_goal"])
    torch.testing.assert_close(obs[..., 4:], td["next", "desired_goal"])
    assert obs[..., 2:4].abs().sum() > 0  # the velocities, in the env's own order


def test_steps_and_success_are_the_gymnasium_envs_own():
    """Same seed, same actions: the TorchRL env's observations, rewards, ends and success flag
    equal the raw gymnasium env's (``info["success"]``: within 0.45 of the goal)."""
    import gymnasium

    require_gymnasium_robotics()
    raw = gymnasium.make("PointMaze_Open-v3", continuing_task=False, max_episode_steps=200)
    raw.reset(seed=7)
    obs, info = raw.reset()  # TorchRL's set_seed resets with the seed; env.reset() is the next
    env = robotics_goal_env("PointMaze_Open-v3", 1, seed=7, continuing_task=False,
                            max_episode_steps=200)
    td = env.reset()
    successes = 0
    for _ in range(200):
        raw_obs = np.concatenate([obs["observation"], obs["desired_goal"]]).astype(np.float32)
        torch.testing.assert_close(td["observation"][0], torch.from_numpy(raw_obs))
        action = steer(td["observation"])
        obs, reward, terminated, truncated, info = raw.step(action[0].numpy())
        td["action"] = action
        td = env.step(td)
        nxt = td["next"]
        assert bool(nxt["is_success"]) == bool(info["success"])
        assert bool(nxt["terminated"]) == terminated and bool(nxt["truncated"]) == truncated
        assert float(nxt["reward"]) == reward
        distance = float((nxt["achieved_goal"] - nxt["desired_goal"]).norm())
        assert bool(nxt["is_success"]) == (distance <= 0.45)
        successes += bool(info["success"])
        if terminated or truncated:
            break
        td = td["next"]
    assert successes == 1 and terminated  # the controller reaches the goal, which ends it


def test_no_maze_model_file_is_left_in_the_temp_dir():
    """gymnasium-robotics writes each maze's model to the temp dir and never deletes it; the
    env removes it once built (one file per instance, per env built, otherwise)."""
    env = robotics_goal_env(TASK, 3, seed=0, continuing_task=False)
    paths = [sub.unwrapped.tmp_xml_file_path for sub in env.base_env._env.envs]
    assert len(set(paths)) == 3 and not any(Path(path).exists() for path in paths)
    env.rollout(5)  # the model was loaded before: the env still runs and resets
    env.reset()


def test_the_shared_model_file_of_older_mazes_stays():
    """``AntMaze_*-v3`` writes one fixed ``<tmp>/ant_maze.xml`` that another process may be
    loading: only the per-instance, timestamped files are removed."""
    import tempfile
    from types import SimpleNamespace

    from torchrl_hier.envs.robotics import _remove_maze_model_file

    shared = Path(tempfile.gettempdir()) / "ant_maze.xml"
    if shared.exists():
        pytest.skip(f"{shared} exists (another AntMaze-v3 user): not touching it")
    own = Path(tempfile.gettempdir()) / "ant_maze1234567890.5.xml"
    try:
        for path in (shared, own):
            path.write_text("<mujoco/>")
            _remove_maze_model_file(SimpleNamespace(tmp_xml_file_path=str(path)))
        assert shared.exists() and not own.exists()
    finally:
        shared.unlink(missing_ok=True)
        own.unlink(missing_ok=True)


def test_partial_resets_leave_the_other_instances_alone():
    env = robotics_goal_env(TASK, 4, seed=1, continuing_task=False)
    td = env.rollout(30, break_when_any_done=False)[:, -1]["next"].clone()
    before = td["observation"].clone()
    td["_reset"] = torch.tensor([True, False, True, False]).unsqueeze(-1)
    after = env.reset(td)["observation"]
    torch.testing.assert_close(after[[1, 3]], before[[1, 3]])
    assert not torch.equal(after[[0, 2]], before[[0, 2]])
    assert (after[[0, 2], 2:4] == 0).all()  # fresh episodes start at rest


def test_without_gymnasium_robotics_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium_robotics", None)  # as if not installed
    with pytest.raises(ImportError, match=r"torchrl_hier\[robotics\]"):
        robotics_goal_env(TASK, 2)


def test_bad_names_and_batches_say_what_fits():
    with pytest.raises(ConfigError, match="not a goal env"):
        robotics_goal_env("CartPole-v1", 2)
    with pytest.raises(ConfigError, match="not a gymnasium"):
        robotics_goal_env("PointMaze_Nowhere-v3", 2)
    with pytest.raises(ConfigError, match="1-D batch"):
        robotics_goal_env(TASK, [2, 2])


def compose_task(overrides: list[str]):
    with initialize_config_module("torchrl_hier.conf", version_base=None):
        return compose("config", overrides=[f"task={TASK}", *overrides])


def test_the_task_config_points_the_goal_machinery_at_the_env_goal():
    cfg = compose_task(["hierarchy=subgoals"])
    env = make_task_env(cfg.task, 2, torch.device("cpu"), seed=0)
    td = env.reset()
    goal = cfg.task.goal
    torch.testing.assert_close(td["observation"][:, list(goal.indices)], td["achieved_goal"])
    torch.testing.assert_close(td["observation"][:, list(goal.desired_indices)], td["desired_goal"])
    assert goal.tolerance == 0.45  # gymnasium-robotics' success radius
    assert goal.low <= float(td["achieved_goal"].min()) and float(td["achieved_goal"].max()) <= goal.high


def test_tiny_twin_trains_the_subgoal_hierarchy_end_to_end_and_beats_random_actions(tmp_path):
    """The benchmark's task config and subgoal hierarchy (its overrides,
    ``bench.AGENTS["subgoals"]``) on a tiny budget, in gymnasium-robotics' open arena
    (``PointMaze_Open-v3``: the same MuJoCo ball, factory and conversions; 100-step episodes,
    short warm-ups; on the medium maze 12k frames reach only 0.10 against random's 0.02): its
    greedy policy reaches clearly more goals than random actions."""
    cfg = compose_task([
        *bench.AGENTS["subgoals"], "task.name=PointMaze_Open-v3", "task.goal.low=[-2.5,-1.5]",
        "task.goal.high=[2.5,1.5]", "task.n_envs=16", "task.kwargs.max_episode_steps=100",
        "task.max_episode_steps=100", "collector.frames_per_batch=512", "total_frames=12288",
        "eval.episodes=30", "eval.every_frames=0", "checkpoint.every_frames=0", "compile=false",
        "progress=false", f"run_dir={tmp_path}",
    ])
    shorten_learning(cfg, {"subgoal": (256, 1_000, 0.2), "primitive": (512, 6_000, 0.1)})
    summary = train(cfg)
    assert summary["frames"] >= 12288
    assert all(level["updates"] > 0 for level in summary["levels"].values())
    random = random_success(cfg, episodes=30, seed=1, steps=100)
    assert summary["eval"]["success_rate"] >= random + 0.2, (summary["eval"], random)


def test_a_goal_conditioned_level_can_see_the_state_without_the_env_goal():
    """``observation=state``: the primitive level sees (x, y, vx, vy), the force-controlled
    ball's state, without the env goal it does not pursue; its subgoal projection follows."""
    from torchrl_hier.experiment.builders import build_experiment

    cfg = compose_task(["hierarchy=subgoals", "hierarchy.levels.primitive.observation=state",
                        "compile=false"])
    exp = build_experiment(cfg, n_envs=2)
    primitive = exp.hierarchy.levels[-1]
    obs = exp.env.reset()["observation"]
    torch.testing.assert_close(primitive.obs_map(obs), obs[..., :4])
    bad = compose_task(["hierarchy=subgoals", "hierarchy.levels.primitive.observation=state",
                        "task.goal.desired_indices=null"])
    with pytest.raises(ConfigError, match="desired_indices"):
        build_experiment(bad, n_envs=2)
