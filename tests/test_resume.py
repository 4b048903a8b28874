"""A stopped and resumed training run continues exactly as the uninterrupted run.

A run trains N batches in one go; from its checkpoint after K batches (the file a run stopped
there leaves) a resume trains the N - K others; the two are compared step by step. Tiny
budgets (batches of 8 steps of 4 envs), so a task takes a few seconds; the uninterrupted runs
are shared by the tests of this module (resumes write into each test's own directory).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensordict import TensorDictBase
from test_train import compose_cfg, tiny

from torchrl_hier.experiment import CheckpointError, load_checkpoint
from torchrl_hier.experiment.checkpoint import FORMAT_1, ResumeWarning
from torchrl_hier.train import train

STEPS, ENVS = 8, 4  # per batch
N, K = 4, 2  # batches: uninterrupted, before the stop
FRAMES = STEPS * ENVS
#: what legitimately differs between the two runs: wall-clock timings, where the run wrote
#: and that the second one was resumed
_TIMING = {"fps", "elapsed", "config"}


def _recorder() -> tuple[dict[int, TensorDictBase], Callable[[int, TensorDictBase], None]]:
    """A dict of the collected batches by frame count, and the ``on_batch`` that fills it."""
    batches: dict[int, TensorDictBase] = {}

    def record(frames: int, batch: TensorDictBase) -> None:
        batches[frames] = batch.clone()

    return batches, record


Run = tuple[Path, dict[int, TensorDictBase]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Run]:
    """``runs(task, hierarchy)``: the uninterrupted run of that config (trained once)."""
    done: dict[tuple[str, str], Run] = {}

    def get(task: str, hierarchy: str) -> Run:
        if (task, hierarchy) not in done:
            directory = tmp_path_factory.mktemp(f"{task}-{hierarchy}")
            done[task, hierarchy] = _run(directory, [f"task={task}", f"hierarchy={hierarchy}"])
        return done[task, hierarchy]

    return get


def _run(directory: Path, overrides: Sequence[str]) -> Run:
    """The uninterrupted run (N batches, a checkpoint with buffers and an evaluation every K
    batches) and its batches."""
    run = directory / "run"
    cfg = tiny(
        [
            *overrides, f"task.n_envs={ENVS}", f"collector.frames_per_batch={FRAMES}",
            f"total_frames={N * FRAMES}", f"checkpoint.every_frames={K * FRAMES}",
            f"eval.every_frames={K * FRAMES}", "eval.episodes=2", "checkpoint.keep=4",
            "checkpoint.buffers=true",
        ],
        run,
        max_steps=6,  # episodes end before the stop and straddle batch boundaries
    )
    batches, record = _recorder()
    train(cfg, on_batch=record)
    return run, batches


def _stop(run: Path) -> Path:
    """The checkpoint ``run`` wrote after K batches."""
    return run / "checkpoints" / f"checkpoint_{K * FRAMES:010d}.pt"


def _resume(file: Path, out: Path, *overrides: str) -> Run:
    """Resumes from checkpoint ``file`` into ``out`` for the rest of its budget; the resumed
    run's directory and batches."""
    overrides = (f"resume={file}", "progress=false", f"run_dir={out}", *overrides)
    batches, record = _recorder()
    summary = train(compose_cfg(list(overrides)), overrides=overrides, on_batch=record)
    return Path(summary["run_dir"]), batches


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """``a`` and ``b`` hold the same values: tensors bit for bit, nested dicts, lists and
    TensorDicts entry by entry (the first difference is named), other values by ``==``."""
    if isinstance(a, TensorDictBase):
        assert isinstance(b, TensorDictBase), where
        keys = set(a.keys(True, True))
        assert keys == set(b.keys(True, True)), where
        for key in sorted(keys, key=str):
            assert_same(a.get(key), b.get(key), f"{where}/{key}")
    elif isinstance(a, Mapping):
        assert set(a) - _TIMING == set(b) - _TIMING, where
        for key in set(a) - _TIMING:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _filled(learner: Mapping[str, Any]) -> dict[str, Any]:
    """A learner's saved state with its replay storage cut to the rows written (the rest of a
    preallocated storage is uninitialised memory)."""
    storage = learner["buffer"]["_storage"]
    rows = int(storage["_len"])
    filled = {key: value[:rows] for key, value in storage["_storage"].items()}
    buffer = {**learner["buffer"], "_storage": {**storage, "_storage": filled}}
    return {**learner, "buffer": buffer}


@pytest.mark.parametrize(
    "task, hierarchy",
    [("GridMaze-FourRooms", "options"), ("PointMaze-UMaze", "subgoals")],
)
def test_a_resumed_run_continues_exactly(runs, tmp_path, task, hierarchy):
    run, batches = runs(task, hierarchy)
    stop, _ = load_checkpoint(_stop(run))
    # the stop falls mid-episode and mid-transition of the top level
    assert stop["collection"]["env"]["elapsed"].gt(0).any()
    assert stop["collection"]["carrier"]["hier", "steps"][..., 0].gt(0).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeWarning)  # an exact resume does not warn
        resumed, resumed_batches = _resume(_stop(run), tmp_path / "resumed")
    # batch by batch, step by step: the same observations, actions, rewards, hierarchy state
    # (the levels' actions, which levels chose, their running transitions), trajectory ids
    assert sorted(resumed_batches) == [FRAMES * k for k in range(K + 1, N + 1)]
    for frames, batch in resumed_batches.items():
        expected = batches[frames]
        assert torch.equal(batch["action"], expected["action"]), f"actions of batch {frames}"
        assert torch.equal(batch["observation"], expected["observation"]), frames
        assert_same(batch, expected, f"batch at {frames} frames")
    whole, _ = load_checkpoint(run)
    again, _ = load_checkpoint(resumed)
    assert whole["frames"] == again["frames"] == N * FRAMES
    levels = list(whole["learners"])
    # every level's buffer (hindsight copies included), parameters, optimizer state and
    # counters; the policy (exploration schedules included); the RNG states; the env and
    # collector state; the per-batch history (returns, successes, losses, evaluations)
    for name in levels:
        assert_same(_filled(whole["learners"][name]), _filled(again["learners"][name]), name)
    for field in ("policy", "rng", "collection", "history", "raw_transitions"):
        assert_same(whole[field], again[field], field)


def _without(file: Path, out: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of checkpoint ``file`` at ``out``, changed by ``edit``."""
    state = torch.load(file, weights_only=False)
    edit(state)
    torch.save(state, out)
    return out


def _drop_buffers(state: dict[str, Any]) -> None:
    """What ``checkpoint.buffers=false`` leaves out."""
    for learner in state["learners"].values():
        del learner["buffer"]


def test_without_saved_buffers_the_env_still_continues_but_the_resume_warns(runs, tmp_path):
    run, batches = runs("GridMaze-FourRooms", "options")
    file = _without(_stop(run), tmp_path / "no_buffers.pt", _drop_buffers)
    with pytest.warns(ResumeWarning, match=r"checkpoint\.buffers=false.*empty buffers") as record:
        _, resumed = _resume(file, tmp_path / "resumed")
    assert "new episodes" not in str(record[0].message)  # the env state was restored
    # the first batch after the stop does not depend on the buffers: the same steps
    first = (K + 1) * FRAMES
    assert_same(resumed[first], batches[first], "first batch after the stop")


@pytest.mark.parametrize(
    "task, hierarchy, reasons",
    [
        ("CartPole-v1", "flat", ["task 'CartPole-v1' (SerialEnv) is not a built-in task"]),
        ("Taxi-v4", "ham", ["a HAM keeps each env instance's machine stack", "not a built-in task"]),
    ],
)
def test_resuming_a_task_whose_state_cannot_be_saved_says_what_differs(
    tmp_path, task, hierarchy, reasons
):
    run, _ = _run(tmp_path, [f"task={task}", f"hierarchy={hierarchy}"])
    stop, _ = load_checkpoint(_stop(run))
    assert sorted(stop["collection"]) == ["gaps"]  # nothing it could not restore is saved
    with pytest.warns(ResumeWarning) as record:
        _, resumed = _resume(_stop(run), tmp_path / "resumed")
    message = str(record[0].message)
    for reason in reasons:
        assert reason in message
    assert "so the envs start new episodes, reseeded with seed + frames" in message
    assert "replay buffers" not in message  # they were saved
    assert sorted(resumed) == [FRAMES * k for k in range(K + 1, N + 1)]


def _format_1(state: dict[str, Any]) -> None:
    """A checkpoint as older versions wrote it: no collection state."""
    del state["collection"]
    state["format"] = FORMAT_1


def test_older_and_foreign_checkpoint_formats(runs, tmp_path):
    """A format-1 checkpoint still resumes, with new episodes and a warning saying why; an
    unknown format is refused, naming the formats read."""
    run, _ = runs("GridMaze-FourRooms", "options")
    old = _without(_stop(run), tmp_path / "old.pt", _format_1)
    with pytest.warns(ResumeWarning, match=r"format 'torchrl_hier\.train/1'.*new episodes"):
        _, resumed = _resume(old, tmp_path / "from_old")
    assert sorted(resumed) == [FRAMES * k for k in range(K + 1, N + 1)]
    foreign = _without(old, tmp_path / "foreign.pt", lambda state: state.update(format="x/9"))
    with pytest.raises(CheckpointError, match=r"foreign\.pt: field 'format' is 'x/9'"):
        load_checkpoint(foreign)


def test_resuming_with_another_number_of_envs_says_so(runs, tmp_path):
    run, _ = runs("GridMaze-FourRooms", "options")
    with pytest.warns(ResumeWarning, match=r"4 env instances and this run task\.n_envs=8.*new episodes"):
        _resume(_stop(run), tmp_path / "resumed", "task.n_envs=8", "collector.frames_per_batch=64")
