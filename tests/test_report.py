"""``torchrl_hier.report``: the bootstrap and IQM statistics, grouping a sweep's runs by config
minus the seed, its errors, and the whole command on a real (tiny) Hydra sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchrl_hier.report import (
    ReportError,
    bootstrap_ci,
    find_runs,
    group_runs,
    iqm,
    main,
    write_report,
)


# ----------------------------------------------------------------------------- statistics
def test_iqm_drops_the_outer_quarters():
    assert iqm(np.array([100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -50.0])) == pytest.approx(3.5)
    assert iqm(np.array([1.0, 2.0, 9.0])) == pytest.approx(4.0)  # n < 4: nothing dropped
    per_point = iqm(np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [99.0, 40.0]]), axis=0)
    np.testing.assert_allclose(per_point, [1.5, 25.0])


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(300):
        low, high = bootstrap_ci(rng.normal(2.0, 1.0, size=12), n_boot=2_000, seed=trial)
        covered += bool(low <= 2.0 <= high)
    assert 0.88 <= covered / 300 <= 0.99  # the percentile bootstrap undercovers a little


def test_bootstrap_ci_resamples_whole_runs_across_curve_points():
    # two runs, each constant along its curve: every resample's mean is 0, 0.5 or 1 at every
    # point at once, so the band is the same at each point
    values = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    low, high = bootstrap_ci(values, n_boot=4_000)
    np.testing.assert_allclose(low, [0.0] * 3)
    np.testing.assert_allclose(high, [1.0] * 3)
    one_low, one_high = bootstrap_ci(np.array([[3.0, 4.0]]))
    np.testing.assert_allclose(one_low, [3.0, 4.0])
    np.testing.assert_allclose(one_high, [3.0, 4.0])
    with pytest.raises(ValueError, match="between 0 and 1"):
        bootstrap_ci(values, confidence=95)


# ----------------------------------------------------------------------------- fake sweeps
def _fake_run(path: Path, seed: int, overrides: list[str], success: list[float],
              config_extra: str = "") -> None:
    """A run directory as torchrl_hier.train writes it, with a given eval curve."""
    scalars = path / "logs" / "scalars" / "eval"
    scalars.mkdir(parents=True)
    steps = [0, 100, 200][: len(success)]
    (scalars / "success_rate.csv").write_text("".join(f"{s},{v}\n" for s, v in zip(steps, success)))
    (scalars / "return.csv").write_text("".join(f"{s},{2 * v}\n" for s, v in zip(steps, success)))
    (path / "config.yaml").write_text(
        f"seed: {seed}\nrun_dir: {path}\ntask:\n  name: Maze\nhierarchy:\n  name: flat\n"
        f"logger:\n  exp_name: logs\n{config_extra}"
    )
    (path / ".hydra").mkdir()
    (path / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in [f"seed={seed}", *overrides])
    )
    final = {"success_rate": success[-1], "return_mean": 2 * success[-1]}
    (path / "summary.json").write_text(json.dumps({"seed": seed, "frames": steps[-1], "eval": final}))


def test_runs_group_by_config_minus_seed_with_short_labels(tmp_path):
    for job, (seed, lr) in enumerate([(0, 1), (1, 1), (2, 1), (0, 2), (1, 2)]):
        _fake_run(tmp_path / str(job), seed, ["total_frames=200", f"lr={lr}"],
                  [0.0, 0.1 * seed, 0.2 * seed + 0.1 * lr], config_extra=f"lr: {lr}\n")
    _fake_run(tmp_path / "0" / "resumed" / "x", 0, ["lr=1"], [0.0, 1.0, 1.0], "lr: 1\n")
    groups = group_runs(find_runs(tmp_path))
    assert [g.label for g in groups] == ["lr=1", "lr=2"]  # total_frames=200 is shared
    assert [[r.seed for r in g.runs] for g in groups] == [[0, 1, 2], [0, 1]]  # no resumed run
    paths = write_report(tmp_path, n_boot=1_000)
    report = json.loads(paths["json"].read_text())
    first = report["groups"][0]
    assert first["final"]["success"]["per_seed"] == pytest.approx([0.1, 0.3, 0.5])
    assert first["final"]["success"]["mean"] == pytest.approx(0.3)
    assert first["final"]["return"]["iqm"] == pytest.approx(0.6)
    low, high = first["final"]["success"]["mean_ci"]
    assert 0.1 <= low < 0.3 < high <= 0.5
    curve = first["curves"]["success"]
    assert curve["frames"] == [0, 100, 200] and curve["mean"] == pytest.approx([0.0, 0.1, 0.3])
    assert "| lr=2 | 2 | 0.3 [0.2, 0.4]" in paths["md"].read_text()
    assert Image.open(paths["png"]).size[0] > 600


def test_configs_that_differ_beyond_their_overrides_get_numbered_labels(tmp_path):
    for job in range(3):  # the same overrides, configs edited by hand: no override tells them apart
        _fake_run(tmp_path / str(job), 0, [], [0.0, 1.0], config_extra=f"x: {job}\n")
    labels = [g.label for g in group_runs(find_runs(tmp_path))]
    assert labels == ["Maze / flat", "Maze / flat #2", "Maze / flat #3"]


def test_sweep_errors_say_what_is_missing(tmp_path):
    with pytest.raises(ReportError, match="no folder there has a summary.json"):
        find_runs(tmp_path)
    with pytest.raises(ReportError, match="is not a directory"):
        find_runs(tmp_path / "nowhere")
    _fake_run(tmp_path / "a" / "0", 0, [], [0.0, 1.0])
    _fake_run(tmp_path / "b" / "0", 0, [], [0.0, 1.0])
    with pytest.raises(ReportError, match=r"same config and seed \[0\].*run twice"):
        group_runs(find_runs(tmp_path))
    (tmp_path / "b" / "0" / "config.yaml").unlink()
    with pytest.raises(ReportError, match="no config.yaml"):
        find_runs(tmp_path)
    assert main([str(tmp_path / "nowhere")]) == 1


# ----------------------------------------------------------------------------- a real sweep
def test_report_of_a_real_sweep(tmp_path, capsys):
    """A real two-config, two-seed sweep of ``torchrl_hier.train`` (~20 s), then the command:
    groups by config minus the seed, per-seed finals equal each run's summary, curves at the
    logged evaluation frames, and a table, JSON and PNG on disk."""
    sweep = tmp_path / "sweep"
    args = [
        "-m", "seed=0,1", "hierarchy=flat,options", "task.n_envs=4",
        "collector.frames_per_batch=64", "total_frames=128", "eval.episodes=4",
        "eval.every_frames=64", "checkpoint.every_frames=0", "task.kwargs.max_steps=20",
        "progress=false", f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "torchrl_hier.train", *args], cwd=tmp_path, capture_output=True,
        text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert main([str(sweep), "--n-boot", "500"]) == 0
    assert "| hierarchy=flat | 2 |" in capsys.readouterr().out
    report = json.loads((sweep / "report" / "report.json").read_text())
    assert [g["label"] for g in report["groups"]] == ["hierarchy=flat", "hierarchy=options"]
    for group in report["groups"]:
        assert group["seeds"] == [0, 1]
        summaries = [json.loads((Path(run) / "summary.json").read_text()) for run in group["runs"]]
        assert {s["hierarchy"] for s in summaries} == {group["label"].split("=")[1]}
        final = group["final"]["success"]
        assert final["per_seed"] == [s["eval"]["success_rate"] for s in summaries]
        assert final["mean_ci"][0] <= final["mean"] <= final["mean_ci"][1]
        curve = group["curves"]["return"]
        assert curve["frames"] == [0, 64, 128]
        assert curve["mean"][-1] == pytest.approx(
            np.mean([s["eval"]["return_mean"] for s in summaries])
        )
    assert Image.open(sweep / "report" / "report.png").size[0] > 600
