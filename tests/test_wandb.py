"""``logger=wandb``: Weights & Biases in offline mode writes its run files into the run
directory, with no network and no account (the ``wandb`` extra, installed by ``make test``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train import compose_cfg, tiny

from torchrl_hier.experiment import ConfigError
from torchrl_hier.train import train


def test_wandb_logger_writes_an_offline_run(tmp_path, monkeypatch):
    """One tiny run (~10 s, most of it wandb's service starting): an offline run folder whose
    ``.wandb`` file holds the logged scalars and the run's config."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))  # the logger must pick the run dir
    summary = train(tiny(["task=GridMaze-FourRooms", "hierarchy=flat", "logger=wandb"], tmp_path / "run"))
    (run,) = Path(summary["run_dir"]).glob("wandb/offline-run-*")
    (data,) = run.glob("run-*.wandb")
    content = data.read_bytes()
    for key in (b"train/episodes", b"eval/return", b"level/agent/transitions"):
        assert key in content, f"{key!r} was not logged to {data}"
    assert b"GridMaze-FourRooms" in content  # the config (task.name) went with the run
    assert not (tmp_path / "elsewhere").exists()


def test_wandb_mode_is_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"logger\.mode='live' is not a wandb mode.*offline"):
        train(compose_cfg(["logger=wandb", "logger.mode=live", f"run_dir={tmp_path / 'r'}"]))
    assert not (tmp_path / "r").exists()
