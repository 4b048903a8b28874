"""Hydra-native configs: the configs' ``_target_`` factories build the levels, learners and
tasks, so a new level family is a YAML file plus a factory (here one defined in this module and
found through ``--config-dir``), and configs saved with the older ``kind:`` format still build
and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from torchrl_hier import Level
from torchrl_hier.experiment import ConfigError, build_experiment, load_checkpoint, upgrade_config
from torchrl_hier.levels import LevelContext, LevelParts, dqn_head
from torchrl_hier.train import train

#: The runs here pin the task and, where they read its levels, the hierarchy (not the default).
OPTIONS = ["task=GridMaze-FourRooms", "hierarchy=options"]
FAST = [
    "task.n_envs=4", "collector.frames_per_batch=64", "total_frames=256", "eval.episodes=2",
    "eval.every_frames=0", "checkpoint.every_frames=0", "progress=false",
]

FAMILY_YAML = """\
# A level family this repository does not have: a DQN level with one hidden layer.
name: narrow
levels:
  agent:
    _target_: test_config_families.narrow_dqn
    _partial_: true
    width: 24
    learner: {_target_: torchrl_hier.learning.from_config.learner_from_config, _partial_: true,
              warmup: 4, batch_size: 8, buffer_size: 1024, update_ratio: 0.5}
"""


def narrow_dqn(ctx: LevelContext, *, width: int, gamma: float = 0.9) -> LevelParts:
    """The test's level family: DQN in the env's actions through one hidden layer of ``width``."""
    policy, _, loss = dqn_head(
        ctx.obs_dim, ctx.env_spec, hidden=(width,), gamma=gamma, annealing_num_steps=100,
        device=ctx.device,
    )
    return LevelParts(Level(ctx.name, policy, gamma=gamma), loss)


def compose_cfg(overrides: list[str]):
    with initialize_config_module("torchrl_hier.conf", version_base=None):
        return compose("config", overrides=overrides)


def test_a_new_level_family_is_a_yaml_file_and_a_factory(tmp_path):
    """The CLI trains a hierarchy whose YAML lives outside the package and whose factory is
    this module's ``narrow_dqn``: no library file names it."""
    conf = tmp_path / "conf" / "hierarchy"
    conf.mkdir(parents=True)
    (conf / "narrow.yaml").write_text(FAMILY_YAML)
    run = tmp_path / "run"
    here = str(Path(__file__).resolve().parent)
    env = {
        **os.environ, "HYDRA_FULL_ERROR": "0",
        "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "torchrl_hier.train", "--config-dir", str(tmp_path / "conf"),
         "task=GridMaze-FourRooms", "hierarchy=narrow", "hierarchy.levels.agent.width=20", *FAST, f"run_dir={run}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["hierarchy"] == "narrow" and summary["frames"] == 256
    assert summary["levels"]["agent"]["updates"] > 0
    ckpt, _ = load_checkpoint(run)
    widths = {tuple(v.shape) for k, v in ckpt["policy"].items() if k.endswith("weight")}
    assert (20, 4) in widths  # the override reached the factory: one hidden layer of 20


def _legacy(cfg) -> dict:
    """``cfg`` as checkpoints before ``_target_`` stored it: ``kind:`` per level, no learner or
    task targets, ``task.factory`` and ``hierarchy.kind: ham`` for the HAM."""
    old = OmegaConf.to_container(cfg, resolve=True)
    kinds = {
        "flat_from_config": "flat", "option_from_config": "option",
        "option_conditioned_from_config": "option_conditioned",
        "subgoal_from_config": "subgoal", "goal_conditioned_from_config": "goal_conditioned",
    }
    target = old["task"].pop("_target_")
    if target.endswith("taxi_task"):
        old["task"]["factory"] = "torchrl_hier.experiment.builders:taxi_env"
    hierarchy = old["hierarchy"]
    if hierarchy.pop("_target_", None):
        del hierarchy["_partial_"]
        hierarchy["kind"] = "ham"
    for block in (hierarchy.get("levels") or hierarchy.get("choice_points")).values():
        if "_target_" in block:
            block["kind"] = kinds[block.pop("_target_").rsplit(".", 1)[1]]
            del block["_partial_"]
        del block["learner"]["_target_"], block["learner"]["_partial_"]
    return old


@pytest.mark.parametrize(
    "task, hierarchy",
    [("GridMaze-FourRooms", "options"), ("GridMaze-FourRooms", "three_level"),
     ("CartPole-v1", "flat_ppo"), ("Taxi-v4", "ham")],
)
def test_old_kind_configs_translate_to_the_targets(task, hierarchy):
    cfg = compose_cfg([f"task={task}", f"hierarchy={hierarchy}"])
    old = _legacy(cfg)
    assert "_target_" not in json.dumps(old)
    assert OmegaConf.to_container(upgrade_config(OmegaConf.create(old))) == OmegaConf.to_container(cfg)
    assert upgrade_config(cfg) == cfg


def test_a_checkpoint_with_an_old_config_resumes(tmp_path):
    """A checkpoint whose config has ``kind:`` resumes with today's group choices naming its
    task and hierarchy (equal to its config once translated) and saves the ``_target_``
    format."""
    cfg = compose_cfg([*OPTIONS, *FAST, f"run_dir={tmp_path / 'run'}"])
    train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    state["config"] = _legacy(OmegaConf.create(state["config"]))
    torch.save(state, last)
    more = [f"resume={tmp_path / 'run'}", "total_frames=384", *OPTIONS, "task.n_envs=4",
            f"run_dir={tmp_path / 'resumed'}"]
    with pytest.warns(UserWarning, match="replay buffers were not saved"):
        summary = train(compose_cfg(more), overrides=more)
    assert summary["frames"] == 384 and summary["levels"]["primitive"]["transitions"] > 0
    resumed, _ = load_checkpoint(tmp_path / "resumed")
    option = resumed["config"]["hierarchy"]["levels"]["option"]
    assert option["_target_"].endswith("option_from_config")
    assert option["learner"]["_target_"].endswith("learner_from_config")


def test_level_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"hierarchy\.levels\.option has unknown keys \['colour'\].*option_from_config"):
        build_experiment(compose_cfg([*OPTIONS, "task.n_envs=2", "+hierarchy.levels.option.colour=1"]))
    with pytest.raises(ConfigError, match=r"hierarchy\.levels\.option\._target_='nowhere\.level'"):
        build_experiment(compose_cfg([*OPTIONS, "task.n_envs=2", "hierarchy.levels.option._target_=nowhere.level"]))
    with pytest.raises(ConfigError, match=r"hierarchy\.levels\.option\.kind='optoin' is not a level kind"):
        cfg = _legacy(compose_cfg([*OPTIONS, "task.n_envs=2"]))
        cfg["hierarchy"]["levels"]["option"]["kind"] = "optoin"
        build_experiment(OmegaConf.create(cfg))
    with pytest.raises(ConfigError, match=r"hierarchy\.levels\.primitive\.learner has unknown keys \['epochs'\]"):
        build_experiment(compose_cfg([*OPTIONS, "task.n_envs=2", "+hierarchy.levels.primitive.learner.epochs=2"]))
