"""Option-critic in the Hydra trainer (``hierarchy=option_critic``): the option level is frozen
(its Q_Omega is trained by the intra-option level's OptionCriticLoss), runs log the loss terms,
checkpoints carry the learned terminations, resume exactly and evaluate; config errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_resume import _recorder, _resume, assert_same
from test_train import compose_cfg

from torchrl_hier.evaluate import evaluate_checkpoint, load_experiment
from torchrl_hier.experiment import ConfigError, build_experiment, load_checkpoint
from torchrl_hier.experiment.checkpoint import ResumeWarning
from torchrl_hier.train import train

ROOT = Path(__file__).resolve().parents[1]  # this checkout's package, for the subprocess
OC = ["task=GridMaze-FourRooms", "hierarchy=option_critic"]
ENVS, STEPS = 4, 16
FRAMES = ENVS * STEPS  # per batch
SMALL = [
    f"task.n_envs={ENVS}", f"collector.frames_per_batch={FRAMES}", "task.kwargs.max_steps=12",
    "hierarchy.levels.option.hidden=[16]", "hierarchy.levels.primitive.hidden=[16]",
    "hierarchy.levels.primitive.learner.batch_size=32", "hierarchy.levels.primitive.termination_bias=0.0",
    "eval.episodes=4", "progress=false",
]


def _losses(run: Path) -> dict[str, list[float]]:
    """The intra-option level's logged loss terms, one value per update."""
    scalars = run / "logs" / "scalars" / "level" / "primitive"
    out = {}
    for term in ("loss_critic", "loss_policy", "loss_termination", "termination_prob"):
        rows = (scalars / f"{term}.csv").read_text().splitlines()
        out[term] = [float(row.split(",")[1]) for row in rows if row]
    return out


def test_option_critic_trains_through_the_cli(tmp_path):
    """`python -m torchrl_hier.train hierarchy=option_critic`: the option level is frozen (no
    learner, no updates) yet its Q_Omega learns, through the intra-option level's loss, whose
    terms are logged every batch; the learned terminations are in the checkpoint."""
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "torchrl_hier.train", *OC, *SMALL, "total_frames=256",
         "eval.every_frames=0", "checkpoint.every_frames=0", f"run_dir={run}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    option, primitive = summary["levels"]["option"], summary["levels"]["primitive"]
    assert option["frozen"] and option["updates"] == 0 and option["transitions"] > 0
    # one epoch of ceil(64 / 32) minibatches per batch, on every move
    assert primitive["updates"] == 4 * 2 and primitive["learner_transitions"] == 256
    losses = _losses(run)
    assert all(len(v) == 4 and all(map(math.isfinite, v)) for v in losses.values()), losses
    assert "0 updates (frozen: no learner of its own)" in (run / "summary.md").read_text()
    ckpt, _ = load_checkpoint(run)
    assert set(ckpt["learners"]) == {"primitive"}
    # Q_Omega in the policy is the loss's (trained) one, and differs from a fresh build's
    fresh = build_experiment(compose_cfg([*OC, *SMALL]))
    q_keys = [k for k in ckpt["policy"] if k.startswith("level_policies.0.") and k.endswith("weight")]
    assert q_keys
    fresh_policy = fresh.policy.state_dict()
    assert any(not torch.equal(ckpt["policy"][k], fresh_policy[k]) for k in q_keys)
    saved_q = [v for k, v in ckpt["learners"]["primitive"]["loss"].items() if k.startswith("qvalue.") and k.endswith("weight")]
    assert all(torch.equal(a, ckpt["policy"][k]) for a, k in zip(saved_q, q_keys))
    # the termination heads (in the level's return-control rule, not its policy) are saved
    (termination,) = ckpt["controls"]["primitive"]
    trained = {k: v for k, v in ckpt["learners"]["primitive"]["loss"].items() if k.startswith("termination.")}
    assert all(torch.equal(termination[k.removeprefix("termination.")], v) for k, v in trained.items())


def test_evaluation_loads_the_learned_terminations(tmp_path):
    """Evaluating a checkpoint runs the trained termination heads, not freshly built ones."""
    cfg = compose_cfg([*OC, *SMALL, "total_frames=256", "eval.every_frames=0",
                       "checkpoint.every_frames=0", f"run_dir={tmp_path}"])
    train(cfg)
    ckpt, _ = load_checkpoint(tmp_path)
    exp, _, _ = load_experiment(tmp_path)
    rule = exp.hierarchy.levels[1].control.module
    for key, value in ckpt["learners"]["primitive"]["loss"].items():
        if key.startswith("termination."):
            assert torch.equal(rule.state_dict()[key.removeprefix("termination.")], value), key
    report = evaluate_checkpoint(tmp_path, episodes=4, progress=False, seed=3)
    again = evaluate_checkpoint(tmp_path, episodes=4, progress=False, seed=3)
    assert report["episodes"] == 4 and report["frames"] == 256
    assert report["return_mean"] == again["return_mean"]


def test_option_critic_resumes_exactly(tmp_path):
    """Stopped after 2 of 4 batches and resumed, the run collects the same batches and ends
    with the same parameters, optimizer state and learned terminations."""
    run = tmp_path / "run"
    cfg = compose_cfg([*OC, *SMALL, f"total_frames={4 * FRAMES}", f"checkpoint.every_frames={2 * FRAMES}",
                       f"eval.every_frames={2 * FRAMES}", "eval.episodes=2", "checkpoint.keep=4",
                       f"run_dir={run}"])
    batches, record = _recorder()
    train(cfg, on_batch=record)
    stop = run / "checkpoints" / f"checkpoint_{2 * FRAMES:010d}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeWarning)  # an exact resume does not warn
        resumed, resumed_batches = _resume(stop, tmp_path / "resumed")
    assert sorted(resumed_batches) == [3 * FRAMES, 4 * FRAMES]
    for frames, batch in resumed_batches.items():
        assert_same(batch, batches[frames], f"batch at {frames} frames")
    whole, _ = load_checkpoint(run)
    again, _ = load_checkpoint(resumed)
    for field in ("policy", "controls", "learners", "rng", "collection", "raw_transitions"):
        assert_same(whole[field], again[field], field)


def test_option_critic_config_errors_say_how_to_fix():
    with pytest.raises(ConfigError, match=r"hierarchy\.levels\.option is frozen.*remove hierarchy\.levels\.option\.learner"):
        build_experiment(compose_cfg([*OC, "task.n_envs=2",
                                      "+hierarchy.levels.option.learner._target_=torchrl_hier.learning.from_config.learner_from_config"]))
    with pytest.raises(ConfigError, match="intra-option level: it must be the lowest level, right below"):
        build_experiment(compose_cfg(["task=GridMaze-FourRooms", "hierarchy=options", "task.n_envs=2",
                                      "hierarchy.levels.primitive._target_=torchrl_hier.levels.option_critic.option_critic_intra_option_from_config",
                                      "~hierarchy.levels.primitive.algorithm", "~hierarchy.levels.primitive.timeout",
                                      "~hierarchy.levels.primitive.gamma", "~hierarchy.levels.primitive.hindsight_k",
                                      "~hierarchy.levels.primitive.hindsight_strategy", "~hierarchy.levels.primitive.exploration"]))
    with pytest.raises(ConfigError, match="discrete actions.*PointMaze-UMaze"):
        build_experiment(compose_cfg(["task=PointMaze-UMaze", "hierarchy=option_critic", "task.n_envs=2"]))
    with pytest.raises(ConfigError, match=r"net='conv'; choose one of \['mlp', 'linear'\]"):
        build_experiment(compose_cfg([*OC, "task.n_envs=2", "hierarchy.levels.option.net=conv"]))
