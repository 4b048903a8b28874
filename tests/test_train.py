"""The Hydra training entry point, checkpoints/resume, evaluation and bad input.

Runs ``torchrl_hier.train.train`` in-process on configs composed with Hydra's compose API
(tiny budgets: a few hundred frames), plus two subprocess runs of the real command line
(an unknown key, a ``-m`` multirun over two seeds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from PIL import Image

from torchrl_hier.evaluate import evaluate_checkpoint, run_episodes
from torchrl_hier.experiment import (
    CheckpointError,
    ConfigError,
    Experiment,
    build_experiment,
    load_checkpoint,
    make_collector,
    restore_training,
)
from torchrl_hier.levels import exploration_modules
from torchrl_hier.train import hydra_dir, train, unknown_key_messages

FAST = [
    "task.n_envs=4",
    "collector.frames_per_batch=64",
    "total_frames=256",
    "eval.episodes=4",
    "eval.every_frames=128",
    "checkpoint.every_frames=128",
    "progress=false",
]


def compose_cfg(overrides: list[str]):
    with initialize_config_module("torchrl_hier.conf", version_base=None):
        return compose("config", overrides=overrides)


def tiny(overrides: list[str], run_dir: Path, max_steps: int | None = 20):
    """A config for a run of a few hundred frames in which every level learns: short
    episodes (so hindsight levels get whole episodes), small warm-ups and batches."""
    cfg = compose_cfg([*FAST, *overrides, f"run_dir={run_dir}"])
    OmegaConf.set_struct(cfg, False)
    if max_steps is not None and cfg.task.name.split("-")[0] in ("GridMaze", "PointMaze"):
        cfg.task.kwargs.max_steps = max_steps
    levels = cfg.hierarchy.get("levels") or cfg.hierarchy.get("choice_points")
    for level in levels.values():
        level.learner.warmup = 4
        level.learner.batch_size = 8
        level.learner.buffer_size = 4096
        level.learner.update_ratio = max(level.learner.update_ratio, 0.1)
    return cfg


def read_csv(path: Path) -> list[tuple[float, float]]:
    return [tuple(map(float, row.split(","))) for row in path.read_text().splitlines() if row]


# ----------------------------------------------------------------------------- each group
@pytest.mark.parametrize(
    "task, hierarchy",
    [
        ("GridMaze-FourRooms", "flat"),
        ("GridMaze-FourRooms", "options"),
        ("GridMaze-FourRooms", "subgoals"),
        ("GridMaze-FourRooms", "three_level"),
        ("GridMaze-FourRooms", "three_level_options"),
        ("PointMaze-UMaze", "subgoals"),
        ("PointMaze-UMaze", "options"),
        ("CartPole-v1", "flat"),
        ("CartPole-v1", "three_level_options"),
        ("Taxi-v4", "ham"),
    ],
)
def test_each_hierarchy_trains_logs_and_checkpoints(tmp_path, task, hierarchy):
    cfg = tiny([f"task={task}", f"hierarchy={hierarchy}"], tmp_path)
    summary = train(cfg)
    # a HAM's "levels" are its learnt choice points (Taxi: `nav`, unless learn_task=true)
    names = list(cfg.hierarchy.levels) if "levels" in cfg.hierarchy else ["nav"]
    assert summary["frames"] == 256
    assert summary["levels_order"] == names
    for name in names:
        level = summary["levels"][name]
        assert level["transitions"] > 0, name
        assert level["updates"] > 0, f"level {name} never learned"
        rows = read_csv(tmp_path / "logs" / "scalars" / "level" / name / "transitions.csv")
        assert [step for step, _ in rows] == [64.0 * i for i in range(1, 5)]
        assert rows[-1][1] == level["transitions"]
        losses = list((tmp_path / "logs" / "scalars" / "level" / name).glob("loss*.csv"))
        assert losses, f"no loss logged for level {name}"
    for scalar in ("time/fps", "train/episodes", "eval/return"):
        assert (tmp_path / "logs" / "scalars" / f"{scalar}.csv").is_file()
    ckpt, _ = load_checkpoint(tmp_path)
    assert ckpt["frames"] == 256
    assert sorted(ckpt["learners"]) == sorted(names)
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["frames"] == 256 and on_disk["hierarchy"] == hierarchy
    assert "| frames | 256 |" in (tmp_path / "summary.md").read_text()
    if task.startswith("GridMaze"):
        assert (tmp_path / "logs" / "scalars" / "train" / "success_rate.csv").is_file()
        assert 0.0 <= summary["eval"]["success_rate"] <= 1.0
        assert 0.0 <= summary["baseline_exploring"]["success_rate"] <= 1.0
        evals = [s for s, _ in read_csv(tmp_path / "logs" / "scalars" / "eval" / "success_rate.csv")]
        assert evals == [0.0, 128.0, 256.0, 256.0]  # at the start, every 128 frames, at the end
    else:
        assert summary["eval"]["success_rate"] is None or task.startswith("PointMaze")


def test_ham_can_also_learn_the_task_choice():
    cfg = compose_cfg(["task=Taxi-v4", "hierarchy=ham", "hierarchy.learn_task=true", "task.n_envs=2"])
    exp = build_experiment(cfg)
    assert exp.names == ["nav", "task"] and sorted(exp.learners) == ["nav", "task"]
    with pytest.raises(ConfigError, match="needs task=Taxi-v4"):
        build_experiment(compose_cfg(["hierarchy=ham"]))


# ----------------------------------------------------------------------------- resume
def _first_run(tmp_path: Path):
    cfg = tiny(["task=GridMaze-FourRooms", "hierarchy=options"], tmp_path)
    return cfg, train(cfg)


def test_resume_continues_from_the_checkpoint_frame_count(tmp_path):
    cfg, first = _first_run(tmp_path)
    ckpt, _ = load_checkpoint(tmp_path)
    updates = {name: state["n_updates"] for name, state in ckpt["learners"].items()}
    # resume with only the new budget: everything else comes from the checkpoint's config
    fresh = compose_cfg([f"resume={tmp_path}", "total_frames=512", "progress=false"])
    summary = train(fresh, overrides=[f"resume={tmp_path}", "total_frames=512", "progress=false"])
    assert summary["resumed_from_frames"] == 256
    assert summary["frames"] == 512
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == tmp_path / "resumed"  # a directory of its own
    assert summary["task"] == cfg.task.name  # not re-read from the defaults
    original, _ = load_checkpoint(tmp_path)
    assert original["frames"] == 256  # the resumed run is left as it was
    resumed, _ = load_checkpoint(run_dir)
    assert resumed["frames"] == 512
    assert resumed["config"]["task"]["n_envs"] == 4  # the checkpoint's config was kept
    for name, state in resumed["learners"].items():
        assert state["n_updates"] > updates[name]
        assert state["n_transitions"] > ckpt["learners"][name]["n_transitions"]
    frames = [row["frames"] for row in resumed["history"] if "fps" in row]  # batch rows
    assert frames == [64 * i for i in range(1, 9)]  # the first run's rows, then 320, 384, ...
    steps = [s for s, _ in read_csv(run_dir / "logs" / "scalars" / "time" / "fps.csv")]
    assert steps == sorted(set(steps)) and steps[0] == 64 and steps[-1] == 512
    steps = [s for s, _ in read_csv(tmp_path / "logs" / "scalars" / "time" / "fps.csv")]
    assert steps[-1] == 256


def test_budgets_that_train_nothing_are_refused_before_any_work(tmp_path):
    for total in (0, -100):
        with pytest.raises(ConfigError, match=f"total_frames={total}: the budget must be a positive"):
            train(tiny(["hierarchy=flat", f"total_frames={total}"], tmp_path / str(total)))
        assert not (tmp_path / str(total)).exists()
    _first_run(tmp_path / "run")
    resume = [f"resume={tmp_path / 'run'}", "total_frames=128", "progress=false"]
    with pytest.raises(ConfigError, match="at 256 frames, already at or past total_frames=128"):
        train(compose_cfg(resume), overrides=resume)
    resume = [f"resume={tmp_path / 'run'}", "progress=false"]  # the finished run's own budget
    with pytest.raises(ConfigError, match="already at or past total_frames=256"):
        train(compose_cfg(resume), overrides=resume)


def test_resume_never_destroys_the_resumed_run(tmp_path):
    """Resuming from an older checkpoint keeps every file of the original run."""
    _first_run(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    periodic = sorted((tmp_path / "checkpoints").glob("checkpoint_*.pt"))
    assert periodic
    resume = [f"resume={periodic[0]}", "total_frames=384", "progress=false"]
    summary = train(compose_cfg(resume), overrides=resume)
    assert {p: p.read_bytes() for p in before} == before
    assert Path(summary["run_dir"]).parent == tmp_path / "resumed"
    with pytest.raises(ConfigError, match="is the directory of the run being resumed"):
        again = [f"resume={tmp_path}", f"run_dir={tmp_path}", "total_frames=512"]
        train(compose_cfg(again), overrides=again)


def test_checkpoint_can_keep_the_replay_buffers(tmp_path):
    cfg = tiny(["hierarchy=options", "checkpoint.buffers=true"], tmp_path)
    train(cfg)
    ckpt, file = load_checkpoint(tmp_path)
    exp = build_experiment(OmegaConf.create(ckpt["config"]))
    restore_training(exp, ckpt, file)
    for name in ("option", "primitive"):
        learner = exp.learners[name]
        assert len(learner.buffer) == learner.n_transitions > 0


def test_hydra_output_directory_follows_run_dir_and_resume(tmp_path):
    assert hydra_dir(str(tmp_path / "mine"), None, "outputs/x") == str(tmp_path / "mine")
    assert hydra_dir(None, None, "outputs/x") == "outputs/x"
    assert hydra_dir(None, str(tmp_path / "missing"), "outputs/x") == "outputs/x"
    assert not (tmp_path / "missing").exists()  # the missing checkpoint is reported by train()
    _first_run(tmp_path / "run")
    resumed = Path(hydra_dir(None, str(tmp_path / "run"), "outputs/x"))
    assert resumed.parent == tmp_path / "run" / "resumed"


def test_resume_after_a_stop_drops_logs_past_the_checkpoint(tmp_path):
    cfg = tiny(["hierarchy=flat", "total_frames=384"], tmp_path)
    train(cfg)
    # as if the run had stopped after the 256-frame checkpoint, having logged up to 384
    ckpt_dir = tmp_path / "checkpoints"
    (ckpt_dir / "checkpoint_0000000256.pt").replace(ckpt_dir / "last.pt")
    summary = train(compose_cfg([f"resume={tmp_path}", "progress=false"]), overrides=[f"resume={tmp_path}"])
    assert summary["resumed_from_frames"] == 256 and summary["frames"] == 384
    logged = Path(summary["run_dir"]) / "logs" / "scalars" / "time" / "fps.csv"
    assert [s for s, _ in read_csv(logged)] == [64.0 * i for i in range(1, 7)]  # no duplicates
    original = tmp_path / "logs" / "scalars" / "time" / "fps.csv"
    assert [s for s, _ in read_csv(original)] == [64.0 * i for i in range(1, 7)]  # untouched


def test_resume_errors_name_the_file_and_the_field(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match=r"nowhere.*does not exist"):
        train(compose_cfg([f"resume={missing}"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty.*checkpoints/last\.pt"):
        train(compose_cfg([f"resume={tmp_path / 'empty'}"]))
    run = tmp_path / "run"
    _first_run(run)
    last = run / "checkpoints" / "last.pt"
    # a structural override that differs from the checkpoint
    overrides = [f"resume={run}", "hierarchy=flat"]
    with pytest.raises(CheckpointError, match=r"last\.pt: field config\.hierarchy "):
        train(compose_cfg(overrides), overrides=overrides)
    overrides = [f"resume={run}", "hierarchy.levels.option.n_options=3"]
    with pytest.raises(CheckpointError, match=r"field config\.hierarchy\.levels\.option\.n_options"):
        # composed over the run's hierarchy (the default's has no option level)
        train(compose_cfg(["task=GridMaze-FourRooms", "hierarchy=options", *overrides]),
              overrides=overrides)
    # parameters that do not fit the config's hierarchy
    state = torch.load(last, weights_only=False)
    key = next(k for k in state["policy"] if k.endswith("weight"))
    state["policy"][key] = torch.zeros(3, 3)
    bad = tmp_path / "bad_policy.pt"
    torch.save(state, bad)
    more = [f"resume={bad}", "total_frames=512"]
    with pytest.raises(CheckpointError, match=r"(?s)bad_policy\.pt: field 'policy'.*size mismatch"):
        train(compose_cfg(more), overrides=more)
    # a field missing altogether
    del state["learners"]
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"bad_policy\.pt lacks field\(s\) \['learners'\]"):
        train(compose_cfg(more), overrides=more)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt could not be read"):
        evaluate_checkpoint(tmp_path / "junk.pt", episodes=2)


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_runs_deterministic_episodes_and_writes_a_gif(tmp_path):
    _first_run(tmp_path)
    report = evaluate_checkpoint(tmp_path, episodes=6, gif=True, progress=False, seed=3)
    assert report["episodes"] == 6 and report["frames"] == 256
    assert 0.0 <= report["success_rate"] <= 1.0
    assert report["finished"] == 6  # every GridMaze episode ends within max_steps
    again = evaluate_checkpoint(tmp_path / "checkpoints" / "last.pt", episodes=6, progress=False, seed=3)
    for key in ("success_rate", "return_mean", "length_mean"):
        assert again[key] == report[key]  # exploration off: the same episodes
    assert report["gif_frames"] >= 2  # the start, then one frame per step
    gif = Image.open(report["gif"])
    assert gif.format == "GIF" and gif.size[0] > 50
    assert json.loads((tmp_path / "eval.json").read_text())["episodes"] == 6


def test_evaluate_without_a_renderer_says_so(tmp_path):
    cfg = tiny(["task=CartPole-v1", "hierarchy=flat", "total_frames=64", "eval.episodes=0"], tmp_path)
    train(cfg)
    with pytest.raises(ConfigError, match="cannot render"):
        evaluate_checkpoint(tmp_path, episodes=2, gif=True, progress=False)


# ----------------------------------------------------------------------------- bad input
def test_unknown_group_choice_lists_the_choices():
    with pytest.raises(MissingConfigException) as err:
        compose_cfg(["hierarchy=nope"])
    message = str(err.value)
    assert "Available options in 'hierarchy'" in message
    for choice in ("flat", "options", "subgoals", "three_level"):
        assert choice in message


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["totl_frames=3"])
    (message,) = unknown_key_messages(["totl_frames=3"])
    assert "Did you mean total_frames" in message and "'seed'" in message
    (message,) = unknown_key_messages(["hierarchy=subgoals", "hierarchy.levels.subgoal.lrn=1"])
    assert "hierarchy.levels.subgoal has no 'lrn'" in message and "'learner'" in message
    assert unknown_key_messages(["seed=3", "hierarchy=flat", "+extra=1"]) == []


def _run_cli(
    args: list[str], cwd: Path, timeout: int = 120, module: str = "torchrl_hier.train"
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
    )


def test_cli_unknown_key_gets_hydra_error_and_valid_keys(tmp_path):
    result = _run_cli(["totl_frames=10"], tmp_path)
    assert result.returncode != 0
    assert "Could not override 'totl_frames'" in result.stderr  # Hydra's own error
    assert "Did you mean total_frames" in result.stderr  # plus the valid keys
    assert not (tmp_path / "outputs").exists()


def test_train_log_holds_the_summary_line_and_errors(tmp_path):
    run = tmp_path / "run"
    result = _run_cli([*FAST, "task=GridMaze-FourRooms", "hierarchy=flat", f"run_dir={run}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[torchrl_hier.train] GridMaze" in (run / "train.log").read_text()
    bad = tmp_path / "bad"
    result = _run_cli(["total_frames=0", f"run_dir={bad}"], tmp_path)
    assert result.returncode == 1 and "Error: total_frames=0" in result.stderr
    assert "Error: total_frames=0" in (bad / "train.log").read_text()


@pytest.mark.parametrize(
    "overrides",
    [["task=CartPole-v1", "hierarchy=flat"], ["task=GridMaze-FourRooms", "hierarchy=options"],
     ["task=PointMaze-UMaze"]],
)
def test_evaluations_reuse_one_env_reseeded(overrides):
    """Every evaluation of a run uses the env the first one built (a gymnasium-robotics
    task's 100 instances take ~1 GB and seconds to build, and building them anew each time
    grew the run's memory by that much per evaluation), re-seeded: an evaluation after
    another with a different seed gives exactly what a fresh env of its seed gives."""
    import torchrl_hier.experiment.builders as builders_module

    def evaluate(exp, seed):
        torch.manual_seed(0)  # the policy's exploration draws
        return run_episodes(exp, 6, seed=seed, deterministic=False, max_steps=25, progress=False)

    cfg = compose_cfg([*overrides, "progress=false"])
    fresh = evaluate(build_experiment(cfg), seed=5)
    exp = build_experiment(cfg)
    built = []
    make = builders_module.make_task_env

    def keep(*args, **kwargs):
        built.append(make(*args, **kwargs))
        return built[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builders_module, "make_task_env", keep)
        other = evaluate(exp, seed=9)
        again = evaluate(exp, seed=5)
    assert again == fresh and other["episodes"] == 6
    assert len(built) == 1
    if "CartPole" in overrides[0]:  # a gymnasium env holds simulators until closed
        assert not built[0].is_closed
    # the seeds start other episodes, so the re-seeding is what makes them equal
    starts = {seed: exp.task_env(6, seed).reset()["observation"] for seed in (9, 5)}
    fresh_start = builders_module.make_task_env(cfg.task, 6, exp.device, 5).reset()["observation"]
    assert torch.equal(starts[5], fresh_start) and not torch.equal(starts[9], fresh_start)
    exp.close()
    assert built[0].is_closed


def test_a_run_closes_its_evaluation_envs(tmp_path, monkeypatch):
    opened = []
    task_env = Experiment.task_env

    def keep(self, n_envs, seed):
        opened.append(task_env(self, n_envs, seed))
        return opened[-1]

    monkeypatch.setattr(Experiment, "task_env", keep)
    train(tiny(["task=GridMaze-FourRooms", "hierarchy=flat", "eval.gif=true"], tmp_path))
    assert len(opened) >= 4  # the baseline, the periodic and final evaluations, the GIF
    assert len({id(env) for env in opened}) == 2  # one env for the 4 episodes, one for the GIF
    assert all(env.is_closed for env in opened)


def test_evaluate_cli_reports_errors_like_train(tmp_path):
    """A missing checkpoint: one Error line and status 1, no traceback, and no false
    'unknown key' report for the mandatory checkpoint= key."""
    result = _run_cli([f"checkpoint={tmp_path / 'nowhere'}"], tmp_path, module="torchrl_hier.evaluate")
    assert result.returncode == 1
    assert result.stderr.count("Error: Checkpoint file") == 1
    assert "Traceback" not in result.stderr and "Unknown config key" not in result.stderr


def test_bad_devices_fail_before_any_work(tmp_path):
    for device, match in (("foo", "not a device torch knows"), ("cuda:99", "cuda")):
        if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 99:
            continue
        run = tmp_path / device
        with pytest.raises(ConfigError, match=match):
            train(compose_cfg([f"device={device}", f"run_dir={run}"]))
        assert not run.exists()
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no usable CUDA GPU"):
            train(compose_cfg(["device=cuda", f"run_dir={tmp_path / 'cuda'}"]))


def test_bad_config_values_name_the_key(tmp_path):
    cfg = compose_cfg(["task=GridMaze-FourRooms", "hierarchy=options",
                       "hierarchy.levels.primitive.algorithm=td3", f"run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"hierarchy\.levels\.primitive\.algorithm='td3'.*\['dqn', 'ppo', 'a2c'\]"):
        train(cfg)
    cfg = compose_cfg(["task=CartPole-v1", "hierarchy=subgoals", f"run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"hierarchy\.levels\.subgoal needs subgoals.*no 'goal' block"):
        train(cfg)
    cfg = compose_cfg(["collector=multi_sync", "collector.num_workers=3", f"run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"task\.n_envs=64 must be a multiple of collector\.num_workers=3"):
        train(cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_and_evaluates_on_cuda(tmp_path):
    cfg = tiny(["hierarchy=subgoals", "device=cuda"], tmp_path)
    summary = train(cfg)
    assert summary["device"].startswith("cuda") and summary["frames"] == 256
    assert all(level["updates"] > 0 for level in summary["levels"].values())
    report = evaluate_checkpoint(tmp_path, episodes=4, progress=False)
    assert 0.0 <= report["success_rate"] <= 1.0


def test_tensorboard_logger_writes_event_files(tmp_path):
    """Every logger the config group offers works after the README's install commands."""
    summary = train(tiny(["hierarchy=flat", "logger=tensorboard"], tmp_path))
    events = list(Path(summary["run_dir"]).rglob("events.out.tfevents.*"))
    assert events and all(event.stat().st_size > 0 for event in events)


# ----------------------------------------------------------------------------- processes
def test_multirun_over_two_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m", "seed=0,1", "hierarchy=flat", *[a for a in FAST if not a.startswith("total")],
        "total_frames=128", "task.kwargs.max_steps=20", f"hydra.sweep.dir={sweep}",
    ]
    result = _run_cli(args, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted(json.loads(p.read_text())["seed"] for p in sweep.glob("*/summary.json"))
    assert summaries == [0, 1]
    # the evaluation command on one of the runs
    run = next(sweep.glob("*/summary.json")).parent
    result = _run_cli(
        [f"checkpoint={run}", "episodes=3", "progress=false"], tmp_path,
        module="torchrl_hier.evaluate",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "success rate:" in result.stdout and "episodes: 3 (deterministic)" in result.stdout
    assert json.loads((run / "eval.json").read_text())["episodes"] == 3
    result = _run_cli(["episodes=3"], tmp_path, module="torchrl_hier.evaluate")
    assert result.returncode != 0 and "checkpoint" in result.stderr  # the mandatory value


@pytest.mark.slow  # spawns worker processes twice (~40 s on 2 busy cores)
def test_multi_sync_collector(tmp_path):
    cfg = tiny(["task=GridMaze-FourRooms", "hierarchy=options", "collector=multi_sync",
                "collector.num_workers=2"], tmp_path)
    summary = train(cfg)
    assert summary["frames"] == 256 and summary["collector"] == "multi_sync"
    assert all(level["updates"] > 0 for level in summary["levels"].values())
    # the workers act with the weights (and exploration state) of the main process's policy
    exp = build_experiment(tiny(["task=GridMaze-FourRooms", "hierarchy=flat", "collector=multi_sync"],
                                tmp_path / "sync"))
    collector = make_collector(exp.cfg, exp, total_frames=64 * 3)
    batches = iter(collector)
    assert next(batches)["action"].unique().numel() > 1  # epsilon = 1: random moves
    policy = exp.hierarchy.levels[0].policy
    with torch.no_grad():
        last = [m for m in policy.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))
        for module in exploration_modules(policy):
            module.eps.fill_(0.0)
    collector.update_policy_weights_()
    assert next(batches)["action"].unique().tolist() == [2]
    collector.shutdown()


def test_summary_line_of_a_run_too_short_to_count_training_success():
    """Training success counts only once every instance could finish an episode: a shorter
    run says so instead of printing ``None -> None``."""
    from torchrl_hier.train import _summary_line

    summary = {
        "task": "GridMaze-FourRooms", "hierarchy": "options", "seed": 0, "frames": 4096,
        "wall_time_s": 3.0, "has_success": True, "train_counted_from_frames": 6400,
        "train_success_first": None, "train_success_last": None, "train_return_first": None,
        "train_return_last": None, "eval": {"success_rate": 0.5, "return_mean": 0.5},
        "run_dir": "run",
    }
    line = _summary_line(summary)
    assert "train success n/a (counted from frame 6400" in line and "None ->" not in line
    summary.update(train_success_first=0.1, train_success_last=0.9)
    assert "train success 0.100 -> 0.900; eval success 0.500, return 0.500;" in _summary_line(summary)
    # A task without a success signal (CartPole) reports its training return.
    summary.update(has_success=False, train_success_first=None, train_success_last=None,
                   train_return_first=20.5, train_return_last=180.0)
    assert "train return 20.500 -> 180.000;" in _summary_line(summary)
