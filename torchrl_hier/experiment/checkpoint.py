"""Training checkpoints: what a run saves every N frames and how a stopped run resumes.

A checkpoint is one ``torch.save`` file holding the run's config, the collected frame count,
the hierarchy policy's parameters (exploration schedules included) and its levels' learned
return-control rules (termination heads), every level learner's state
(loss networks and targets, optimizer, counters; replay buffers when
``checkpoint.buffers=true``), the RNG states, the metric history and the collection state: the
env's state (built-in tasks keep positions, goals, step counts and their counter-based draws
in module buffers), the collector's carried TensorDict (mid-episode observations, the
hierarchy's state under ``"hier"``, episode returns, trajectory ids) and the episodes held for
hindsight levels. With all of it a resumed run continues exactly as an uninterrupted one;
:func:`restore_collection` says what a checkpoint could not save (gymnasium tasks, HAMs,
multi-process collectors, buffers left out). A run directory keeps ``checkpoints/last.pt``
plus the most recent periodic ones.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchrl.collectors import BaseCollector, Collector

from torchrl_hier.control import rule_modules
from torchrl_hier.envs import GridMaze, PointMaze
from torchrl_hier.experiment.builders import Experiment, upgrade_config

__all__ = [
    "FORMAT",
    "FORMAT_1",
    "FIELDS",
    "CheckpointError",
    "ResumeWarning",
    "checkpoint_file",
    "run_directory",
    "load_checkpoint",
    "save_checkpoint",
    "control_state",
    "restore_policy",
    "restore_training",
    "collection_state",
    "restore_collection",
    "resume_config",
    "rng_state",
]

FORMAT = "torchrl_hier.train/2"
#: Format 1 had no ``collection`` field: its runs resume with new episodes (see
#: :func:`restore_collection`).
FORMAT_1 = "torchrl_hier.train/1"
FIELDS = ("format", "config", "frames", "policy", "learners", "rng", "history", "collection")
LAST = "last.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not fit; the message names the file and field."""


class ResumeWarning(UserWarning):
    """A resumed run that will not continue exactly as the uninterrupted run would; the
    message says what the checkpoint could not restore."""


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
    version = ckpt.get("format")
    if version not in (FORMAT, FORMAT_1, None):
        raise CheckpointError(
            f"Checkpoint file {file}: field 'format' is {version!r}, this version reads "
            f"{FORMAT!r} and {FORMAT_1!r}."
        )
    fields = [name for name in FIELDS if version != FORMAT_1 or name != "collection"]
    missing = [name for name in fields if name not in ckpt]
    if missing:
        raise CheckpointError(
            f"Checkpoint file {file} lacks field(s) {missing} (it has {sorted(ckpt)}); it was "
            "not written by torchrl_hier.train."
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
    collection: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``checkpoint_<frames>.pt`` and ``last.pt`` in ``directory`` (atomically: a
    stopped run never leaves a half-written ``last.pt``); keeps the ``keep`` newest periodic
    files. ``collection`` is :func:`collection_state` of the run's collector (``None``: not
    saved, so a resume starts new episodes)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "config": OmegaConf.to_container(exp.cfg, resolve=True),
        "frames": int(frames),
        "policy": exp.policy.state_dict(),
        "controls": control_state(exp),
        "learners": exp.learners.state_dict(include_buffers=buffers),
        "rng": rng_state(),
        "history": list(history),
        "collection": None if collection is None else dict(collection),
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


@contextlib.contextmanager
def _loading(file: Path, field: str, target: str) -> Iterator[None]:
    """Turns an error while loading checkpoint ``field`` into ``target`` into a
    :class:`CheckpointError` naming the file and the field."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"Checkpoint file {file}: field {field!r} does not fit {target}: {err}"
        ) from err


def control_state(exp: Experiment) -> dict[str, list[dict[str, Any]]]:
    """The parameters of the levels' return-control rules (learned termination heads, which
    the policy does not hold), per level name: one state dict per module of
    :func:`~torchrl_hier.control.rule_modules`; levels without any are left out."""
    if exp.hierarchy is None:
        return {}
    out = {}
    for level in exp.hierarchy.levels:
        modules = rule_modules(level.control)
        if modules:
            out[level.name] = [module.state_dict() for module in modules]
    return out


def restore_policy(exp: Experiment, ckpt: Mapping[str, Any], file: Path) -> None:
    """Loads the hierarchy policy's parameters and its levels' return-control rules' (saved
    as ``controls``; older checkpoints have none: their rules come from the learners' state
    on resume); names the field when they do not fit."""
    with _loading(file, "policy", f"the hierarchy built from the config (levels {exp.names})"):
        exp.policy.load_state_dict(ckpt["policy"])
    exp.policy.to(exp.device)
    saved = ckpt.get("controls")
    if saved is None or exp.hierarchy is None:
        return
    target = f"the return-control rules built from the config (levels {exp.names})"
    with _loading(file, "controls", target):
        levels = {level.name: level for level in exp.hierarchy.levels}
        if set(saved) - set(levels):
            raise KeyError(f"no level named {sorted(set(saved) - set(levels))}")
        for level in exp.hierarchy.levels:
            modules, states = rule_modules(level.control), saved.get(level.name, [])
            if len(modules) != len(states):
                raise ValueError(
                    f"level {level.name!r} has {len(modules)} learned rule modules, the "
                    f"checkpoint {len(states)}"
                )
            for module, state in zip(modules, states):
                module.load_state_dict(state)
                module.to(exp.device)


def restore_training(exp: Experiment, ckpt: Mapping[str, Any], file: Path) -> None:
    """Loads the policy, every level learner's state and the RNG states."""
    restore_policy(exp, ckpt, file)
    target = f"the learners built from the config (levels {sorted(exp.learners)})"
    with _loading(file, "learners", target):
        exp.learners.load_state_dict(ckpt["learners"])
    _set_rng_state(ckpt["rng"], file)


def _collection_gaps(exp: Experiment, collector: BaseCollector) -> list[str]:
    """Why this run's env and collector state cannot be saved (empty: it can)."""
    cfg = exp.cfg
    gaps = []
    if exp.hierarchy is None:
        gaps.append(
            "a HAM keeps each env instance's machine stack (Python coroutines) in its policy, "
            "which cannot be saved"
        )
    if not isinstance(exp.env, (GridMaze, PointMaze)):
        gaps.append(
            f"task {cfg.task.name!r} ({type(exp.env).__name__}) is not a built-in task "
            "(GridMaze/PointMaze keep their whole state in module buffers); TorchRL does not "
            "expose the state and RNG of other envs, gymnasium's included"
        )
    if not (
        isinstance(collector, Collector)
        and hasattr(collector, "_carrier")
        and hasattr(collector, "_traj_pool")
    ):
        gaps.append(
            f"collector.name={cfg.collector.get('name')!r} ({type(collector).__name__}) steps "
            "its envs where their state cannot be read (worker processes); use collector=sync "
            "for exact resumes"
        )
    return gaps


def collection_state(exp: Experiment, collector: BaseCollector) -> dict[str, Any]:
    """What an exact resume needs besides parameters, learners and RNG, copied: ``env`` (the
    task env's module state), ``carrier`` (the TensorDict the collector carries into its next
    step: observations mid-episode, the hierarchy's state under ``"hier"``, episode returns,
    trajectory ids), ``traj_pool`` (its trajectory-id counter) and ``pipeline`` (episodes held
    for hindsight levels). ``gaps`` lists why they cannot be saved; then only ``gaps`` is
    there. Call it between two batches, before ``collector.shutdown()``."""
    gaps = _collection_gaps(exp, collector)
    if gaps:
        return {"gaps": gaps}
    return {
        "gaps": [],
        "env": {key: value.detach().cpu().clone() for key, value in exp.env.state_dict().items()},
        "carrier": collector._carrier.detach().cpu().clone(),
        "traj_pool": collector._traj_pool.state_dict(),
        "pipeline": exp.pipeline.state_dict(),
    }


def restore_collection(
    exp: Experiment, collector: BaseCollector, ckpt: Mapping[str, Any], file: Path
) -> list[str]:
    """Puts the collector and its env where the checkpoint's run was (see
    :func:`collection_state`), then the RNG states (which building the collector drew from).
    Returns why the resumed run will not continue exactly as an uninterrupted one: empty
    when it will. Where the env state is not restored, the envs keep the new episodes the
    collector started and the episodes held for hindsight are dropped."""
    gaps = []
    if not all("buffer" in state for state in ckpt["learners"].values()):
        gaps.append(
            "the replay buffers were not saved (checkpoint.buffers=false), so the learners "
            "start again from empty buffers; train with checkpoint.buffers=true to save them"
        )
    saved = ckpt.get("collection")
    if saved is None:
        env_gaps = [
            f"the checkpoint is in format {ckpt['format']!r} (an older version), which did not "
            "save the env and collector state"
        ]
    else:
        env_gaps = list(dict.fromkeys([*saved["gaps"], *_collection_gaps(exp, collector)]))
    if not env_gaps and saved["carrier"].batch_size != collector._carrier.batch_size:
        env_gaps.append(
            f"the checkpoint has {tuple(saved['carrier'].batch_size)[0]} env instances and "
            f"this run task.n_envs={exp.cfg.task.n_envs}"
        )
    if env_gaps:
        gaps += env_gaps
        gaps.append("so the envs start new episodes, reseeded with seed + frames")
    else:
        target = f"this run's env and collector ({type(exp.env).__name__}, levels {exp.names})"
        with _loading(file, "collection", target):
            exp.env.load_state_dict(saved["env"])
            carrier, current = saved["carrier"], collector._carrier
            missing = set(current.keys(True, True)) - set(carrier.keys(True, True))
            if missing:
                raise KeyError(
                    f"the saved carried TensorDict lacks {sorted(map(str, missing))}, which this "
                    "collector carries"
                )
            current.update(carrier.to(exp.env.device))
            collector._traj_pool.load_state_dict(saved["traj_pool"])
            exp.pipeline.load_state_dict(saved["pipeline"])
    _set_rng_state(ckpt["rng"], file)
    return gaps


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
    ``overrides`` applied (budgets, logging, learner settings...), in the ``_target_`` format
    (:func:`~torchrl_hier.experiment.builders.upgrade_config`). Overrides of the task or the
    hierarchy's structure that differ from the checkpoint raise, naming the field."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    saved = OmegaConf.create(ckpt["config"])
    if not isinstance(saved, DictConfig) or "task" not in saved or "hierarchy" not in saved:
        raise CheckpointError(
            f"Checkpoint file {file}: field 'config' is not a training config (no task/hierarchy)."
        )
    saved = upgrade_config(saved)  # a config of the older `kind:` format, with _target_s
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
