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


def _losses_of(run: Path, term: str) -> list[float]:
    """The intra-option level's logged ``term``, one value per batch that updated."""
    rows = (run / "logs" / "scalars" / "level" / "primitive" / f"{term}.csv").read_text().splitlines()
    return [float(row.split(",")[1]) for row in rows if row]


def _losses(run: Path) -> dict[str, list[float]]:
    """The intra-option level's logged loss terms."""
    terms = ("loss_critic", "loss_policy", "loss_termination", "termination_prob")
    return {term: _losses_of(run, term) for term in terms}


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


def test_option_critic_config_builds_the_action_critic():
    """hierarchy.levels.primitive.action_critic=true gives the loss a Q_U(s, w, a) (one head per
    option over the 4 moves), trained with the loss; the default has none."""
    exp = build_experiment(compose_cfg([*OC, "task.n_envs=2", "hierarchy.levels.primitive.hidden=[16]",
                                        "hierarchy.levels.primitive.action_critic=true"]))
    loss = exp.learners.learners["primitive"].loss
    assert loss.action_critic is not None and loss.action_critic.out_features == 4
    assert "loss_action_critic" in loss.out_keys
    default = build_experiment(compose_cfg([*OC, "task.n_envs=2"])).learners.learners["primitive"].loss
    assert default.action_critic is None and "loss_action_critic" not in default.out_keys


# ----------------------------------------------------------------------------- tabular four rooms
def tabular_four_rooms(episodes: int, seed: int = 0, clip_epsilon: float | None = None, epochs: int = 1):
    """Bacon et al.'s tabular setting, as ``benchmarks/four_rooms_terminations.py`` runs it
    (one-hot cells, goal in the east hallway, moves slip w.p. 1/3, SGD at the per-transition
    rates 0.5 critic / 0.25 policies / 0.25 terminations) for ``episodes`` episodes over 32
    instances; returns the env, loss and episode lengths."""
    import functools

    from torchrl.collectors import Collector
    from torchrl.envs import TransformedEnv

    from torchrl_hier import Hierarchy
    from torchrl_hier.envs import make_env
    from torchrl_hier.learning import HierarchyLearner, OnPolicyLearner
    from torchrl_hier.levels import option_critic_levels

    torch.manual_seed(seed)
    envs = 32
    env = make_env("GridMaze-FourRooms", batch_size=envs, seed=seed, goal=(6, 9), slip=1 / 3,
                   observation="onehot", min_distance=1, max_steps=1000)
    top, low, loss = option_critic_levels(
        env.observation_size, 4, env.action_spec_unbatched, net="linear", gamma=0.99,
        epsilon=0.01, deliberation_cost=0.0, entropy_coeff=0.0, termination_bias=0.0,
        critic_coeff=0.5 / 0.25, termination_coeff=1.0, clip_epsilon=clip_epsilon,
    )
    hierarchy = Hierarchy([top, low], env)
    learner = OnPolicyLearner(loss, level=low, epochs=epochs, batch_size=envs, max_grad_norm=None,
                              optimizer=functools.partial(torch.optim.SGD, lr=0.25 * envs))
    learners = HierarchyLearner({"primitive": learner}, hierarchy=hierarchy, frozen=["option"])
    collector = Collector(TransformedEnv(env, hierarchy.transform), hierarchy.policy,
                          frames_per_batch=envs, total_frames=-1, auto_register_policy_transforms=False)
    lengths, running = [], torch.zeros(envs, dtype=torch.long)
    for batch in collector:
        learners.extend_batch(batch)
        learners.update()
        done = batch["next", "done"].reshape(-1)
        running += 1
        lengths += running[done].tolist()
        running[done] = 0
        if len(lengths) >= episodes:
            break
    collector.shutdown()
    return env, loss, lengths


# ----------------------------------------------------------------------------- PPOC
def test_ppoc_clips_the_intra_option_ratio_with_the_recorded_log_prob():
    """With clip_epsilon the moves record their log-prob; on the data the policy collected the
    ratio is 1, so the PPOC policy gradient equals option-critic's; with a stale log-prob the surrogate is
    PPO's clipped one, by hand; a PPOC stack trains for several epochs a batch."""
    from test_on_policy import collect, small_maze

    from torchrl_hier import Hierarchy
    from torchrl_hier.learning import HierarchyLearner, OnPolicyLearner
    from torchrl_hier.levels import OptionCriticLoss, option_critic_levels

    torch.manual_seed(0)
    env = small_maze(n=8, max_steps=12)
    top, low, loss = option_critic_levels(4, 3, env.action_spec_unbatched, hidden=(16,), gamma=0.9,
                                          clip_epsilon=0.2, termination_bias=0.0)
    assert low.records == ("action_log_prob",) and "action_log_prob" in loss.in_keys
    hierarchy = Hierarchy([top, low], env)
    (batch,) = collect(env, hierarchy, 8 * 16, 1)
    moves = hierarchy.transitions(batch)["primitive"]
    plain = OptionCriticLoss(loss.qvalue, loss.intra_option, loss.termination, deliberation_cost=0.01,
                             entropy_coeff=0.01)
    plain.make_value_estimator(gamma=0.9)
    loss.make_value_estimator(gamma=0.9)
    params = list(loss.intra_option.parameters())
    out = loss(moves)
    grads = torch.autograd.grad(out["loss_policy"], params)
    reference = torch.autograd.grad(plain(moves)["loss_policy"], params)
    for a, b in zip(grads, reference):  # same gradient: d ratio = ratio * d log_prob, ratio 1
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert out["clip_fraction"] == 0
    stale = moves.clone()
    stale["action_log_prob"] = stale["action_log_prob"] + 1.0  # ratio e**-1, below 1 - 0.2
    out = loss(stale)
    assert out["clip_fraction"] == 1
    with torch.no_grad():
        dist = loss.intra_option.get_dist(stale.select(*loss.intra_option.in_keys))
        ratio = (dist.log_prob(stale["action"]) - stale["action_log_prob"]).exp()
        q = loss._values(stale["observation"])
        advantage = loss.targets(stale) - (q * stale["parent_action"]).sum(-1)
        surrogate = torch.minimum(ratio * advantage, ratio.clamp(0.8, 1.2) * advantage)
        expected = -surrogate.mean() - 0.01 * dist.entropy().mean()
    torch.testing.assert_close(out["loss_policy"], expected)
    learner = OnPolicyLearner(loss, level=low, epochs=4, batch_size=64, lr=3e-3)
    learners = HierarchyLearner({"primitive": learner}, hierarchy=hierarchy, frozen=["option"])
    before = [p.clone() for p in loss.intra_option.parameters()]
    for batch in collect(env, hierarchy, 8 * 16, 3, seed=1):
        learners.extend_batch(batch)
        logs = learners.update()
    assert learner.n_updates == 3 * 4 * 2 and 0 <= logs["primitive"]["clip_fraction"] <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, loss.intra_option.parameters()))
    with pytest.raises(ValueError, match=r"clip_epsilon must be in \(0, 1\)"):
        option_critic_levels(4, 3, env.action_spec_unbatched, clip_epsilon=1.5)


def test_tabular_option_critic_learns_hallway_terminations():
    """600 episodes of the tabular four rooms (~20 s): episodes get shorter, the termination
    gradient (no deliberation cost, so its advantage Q(s', w) - V(s') <= 0) only ever raises
    the termination probabilities from their initial 0.5, by up to > 0.1, and more at the
    four hallways than elsewhere (the published picture, faintly at this budget:
    benchmarks/four_rooms_terminations.py runs 2000 episodes)."""
    from torchrl_hier.envs import doorways

    env, loss, lengths = tabular_four_rooms(600, seed=0)
    assert len(lengths) >= 600
    assert sum(lengths[-50:]) < 0.5 * sum(lengths[:50]), (lengths[:50], lengths[-50:])
    with torch.no_grad():
        beta = torch.sigmoid(loss.termination.net(env.cell_observations((6, 9))))  # [cells, options]
    assert (beta >= 0.5 - 1e-6).all() and (beta - 0.5).max() > 0.1
    hall = doorways(env.walls)[env.free_cells[:, 0], env.free_cells[:, 1]]
    goal = (env.free_cells == torch.tensor([6, 9])).all(-1)  # episodes end there: never trained
    assert hall.sum() == 4 and goal.sum() == 1
    at_hallways, elsewhere = beta[hall & ~goal].mean(), beta[~hall & ~goal].mean()
    assert at_hallways > elsewhere + 0.005, (at_hallways, elsewhere)


def test_single_greedy_picks_one_of_tied_options():
    """Equal Q values (a table's start) give one option, not several: uniformly among the
    tied ones while exploring, the first in deterministic mode."""
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_hier.levels.parts import SingleGreedy

    values = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]]).expand(3000, 5)
    td = TensorDict({"action_value": values, "action": (values == 3.0).long()}, [3000])
    torch.manual_seed(0)
    with set_exploration_type(ExplorationType.RANDOM):
        picked = SingleGreedy()(td.clone())["action"]
    assert (picked.sum(-1) == 1).all() and picked.dtype == torch.long
    counts = picked.sum(0).float() / 3000
    assert counts[[0, 3]].sum() == 0 and ((counts[[1, 2, 4]] - 1 / 3).abs() < 0.04).all(), counts
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        first = SingleGreedy()(td.clone())["action"]
    assert (first.argmax(-1) == 1).all() and (first.sum(-1) == 1).all()


def test_ppoc_trains_through_the_trainer(tmp_path):
    """hierarchy=option_critic with clip_epsilon and a few epochs is PPOC: the moves' log-probs
    are carried to the learner, which takes epochs x minibatches per batch."""
    cfg = compose_cfg([*OC, *SMALL, "total_frames=128", "eval.every_frames=0", "checkpoint.every_frames=0",
                       "hierarchy.levels.primitive.clip_epsilon=0.2", "hierarchy.levels.primitive.learner.epochs=3",
                       f"run_dir={tmp_path}"])
    summary = train(cfg)
    assert summary["levels"]["primitive"]["updates"] == 2 * 3 * 2
    clip = _losses_of(tmp_path, "clip_fraction")
    assert len(clip) == 2 and all(0.0 <= v <= 1.0 for v in clip)
