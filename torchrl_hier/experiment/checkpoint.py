"""Training checkpoints: what a run saves every N frames and how a stopped run resumes.

A checkpoint is one ``torch.save`` file holding the run's config, the collected frame count,
the hierarchy policy's parameters (exploration schedules included), every level learner's state
(loss networks and targets, optimizer, counters; replay buffers when
``checkpoint.buffers=true``), the RNG states and the metric history. A run directory keeps
``checkpoints/last.pt`` plus the most recent periodic ones.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_hier.experiment.builders import Experiment

__all__ = [
    "FORMAT",
    "FIELDS",
    "CheckpointError",
    "checkpoint_file",
    "run_directory",
    "load_checkpoint",
    "save_checkpoint",
    "restore_policy",
    "restore_training",
    "resume_config",
    "rng_state",
]

FORMAT = "torchrl_hier.train/1"
FIELDS = ("format", "config", "frames", "policy", "learners", "rng", "history")
LAST = "last.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not fit; the message names the file and field."""


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: the file itself, or a run directory's
    ``checkpoints/last.pt``."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (path / "checkpoints" / LAST, path / LAST):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"No checkpoint in run directory {path}: expected the file "
            f"{path / 'checkpoints' / LAST} (written every checkpoint.every_frames frames and "
            "at the end of a run). Point resume=/checkpoint= at a run directory that has one, "
            "or at a .pt file."
        )
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint file {path} does not exist. Pass a run directory (with "
            f"checkpoints/{LAST}) or an existing .pt file."
        )
    return path


def run_directory(file: Path) -> Path:
    """The run directory of a checkpoint file (``<run>/checkpoints/x.pt`` -> ``<run>``)."""
    return file.parent.parent if file.parent.name == "checkpoints" else file.parent


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Reads and checks a checkpoint; returns it and its file path."""
    file = checkpoint_file(path)
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or foreign files
        raise CheckpointError(f"Checkpoint file {file} could not be read: {err}") from err
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(
            f"Checkpoint file {file} holds a {type(ckpt).__name__}, not a torchrl_hier "
            "training checkpoint."
        )
    missing = [name for name in FIELDS if name not in ckpt]
    if missing:
        raise CheckpointError(
            f"Checkpoint file {file} lacks field(s) {missing} (it has {sorted(ckpt)}); it was "
            "not written by torchrl_hier.train."
        )
    if ckpt["format"] != FORMAT:
        raise CheckpointError(
            f"Checkpoint file {file}: field 'format' is {ckpt['format']!r}, this version reads "
            f"{FORMAT!r}."
        )
    return dict(ckpt), file


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], file: Path) -> None:
    try:
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"Checkpoint file {file}: field 'rng' cannot be restored: {err}") from err


def save_checkpoint(
    directory: str | Path,
    exp: Experiment,
    frames: int,
    history: Sequence[Mapping[str, Any]],
    *,
    buffers: bool = False,
    keep: int = 2,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``checkpoint_<frames>.pt`` and ``last.pt`` in ``directory`` (atomically: a
    stopped run never leaves a half-written ``last.pt``); keeps the ``keep`` newest periodic
    files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "config": OmegaConf.to_container(exp.cfg, resolve=True),
        "frames": int(frames),
        "policy": exp.policy.state_dict(),
        "learners": exp.learners.state_dict(include_buffers=buffers),
        "rng": rng_state(),
        "history": list(history),
        **(extra or {}),
    }
    tmp = directory / f".{LAST}.tmp"
    torch.save(state, tmp)
    periodic = directory / f"checkpoint_{int(frames):010d}.pt"
    os.replace(tmp, directory / LAST)
    if keep > 0:
        torch.save(state, periodic)
        old = sorted(directory.glob("checkpoint_*.pt"))[:-keep]
        for file in old:
            file.unlink(missing_ok=True)
    return directory / LAST


def restore_policy(exp: Experiment, ckpt: Mapping[str, Any], file: Path) -> None:
    """Loads the hierarchy policy's parameters; names the field when they do not fit."""
    try:
        exp.policy.load_state_dict(ckpt["policy"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint file {file}: field 'policy' does not fit the hierarchy built from the "
            f"config (levels {exp.names}): {err}"
        ) from err
    exp.policy.to(exp.device)


def restore_training(exp: Experiment, ckpt: Mapping[str, Any], file: Path) -> None:
    """Loads the policy, every level learner's state and the RNG states."""
    restore_policy(exp, ckpt, file)
    try:
        exp.learners.load_state_dict(ckpt["learners"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"Checkpoint file {file}: field 'learners' does not fit the learners built from "
            f"the config (levels {sorted(exp.learners)}): {err}"
        ) from err
    _set_rng_state(ckpt["rng"], file)


def _structural(key: str) -> bool:
    """Overrides that would change what the checkpoint's parameters mean."""
    parts = key.split(".")
    if parts[0] == "task":
        return parts[1:2] != ["n_envs"]
    if parts[0] == "hierarchy":
        return not ({"learner", "exploration"} & set(parts))
    return False


def resume_config(
    cfg: DictConfig, ckpt: Mapping[str, Any], file: Path, overrides: Sequence[str] = ()
) -> DictConfig:
    """The config a resumed run uses: the checkpoint's, with this invocation's command-line
    ``overrides`` applied (budgets, logging, learner settings...). Overrides of the task or
    the hierarchy's structure that differ from the checkpoint raise, naming the field."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    saved = OmegaConf.create(ckpt["config"])
    if not isinstance(saved, DictConfig) or "task" not in saved or "hierarchy" not in saved:
        raise CheckpointError(
            f"Checkpoint file {file}: field 'config' is not a training config (no task/hierarchy)."
        )
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    for override in parsed:
        key = override.key_or_group
        if key in ("resume", "run_dir") or key.startswith("hydra"):
            continue
        new = OmegaConf.select(cfg, key, default=None)
        old = OmegaConf.select(saved, key, default=None)
        if isinstance(new, DictConfig):
            new = OmegaConf.to_container(new, resolve=True)
        if isinstance(old, DictConfig):
            old = OmegaConf.to_container(old, resolve=True)
        if new == old:
            continue
        if _structural(key):
            raise CheckpointError(
                f"Checkpoint file {file}: field config.{key} is {old!r} in the checkpoint, but "
                f"this run sets {override.input_line!r}. A resumed run keeps the checkpoint's "
                "task and hierarchy; drop the override or start a new run."
            )
        OmegaConf.set_struct(saved, False)
        OmegaConf.update(saved, key, new, force_add=True)
    OmegaConf.set_struct(saved, False)
    saved.resume = cfg.resume
    saved.run_dir = None
    return saved
