"""Trains a hierarchy with Hydra: ``python -m torchrl_hier.train [group=choice] [key=value ...]``.

Config groups (``torchrl_hier/conf``): ``task`` (built-in mazes, ``CartPole-v1``, ``gym``
with ``task.name=<any gymnasium id>``, ``Taxi-v4``), ``hierarchy`` (flat, options, subgoals,
three_level, three_level_options, ham), ``collector`` (``sync``: TorchRL's ``Collector``,
ex-``SyncDataCollector``; ``multi_sync``: ``MultiSyncCollector``, ex-``MultiSyncDataCollector``,
with ``collector.num_workers``; ``ray``: TorchRL's ``RayCollector``, ``collector.address`` to
attach to a running Ray cluster) and ``logger`` (csv, tensorboard, wandb). Every value is
overridable the Hydra way (``hierarchy.levels.option.learner.lr=3e-4``, ``total_frames=50000``),
and ``-m seed=0,1,2`` sweeps seeds. A run directory gets TorchRL logger scalars, checkpoints every
``checkpoint.every_frames`` frames, ``learning_curve.png`` and ``summary.json``/``summary.md``;
``resume=<run dir>`` continues a stopped run from its last checkpoint, into a directory of its
own (``<run>/resumed/<date_time>``, or ``run_dir=``), leaving the resumed run as it was; on a
built-in task with ``collector=sync`` and ``checkpoint.buffers=true`` it continues exactly as the
uninterrupted run would have (otherwise a :class:`ResumeWarning` says what differs).
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from torchrl.collectors import BaseCollector
from torchrl.record.loggers import Logger
from tqdm.auto import tqdm

from torchrl_hier.evaluate import max_episode_steps as _max_steps
from torchrl_hier.evaluate import record_gif, run_episodes
from torchrl_hier.experiment.builders import (
    ConfigError,
    Experiment,
    build_experiment,
    episode_stats,
    make_collector,
    resolve_device,
)
from torchrl_hier.experiment.checkpoint import (
    CheckpointError,
    ResumeWarning,
    checkpoint_file,
    collection_state,
    load_checkpoint,
    restore_collection,
    restore_training,
    resume_config,
    run_directory,
    save_checkpoint,
)
from torchrl_hier.experiment.cli import (
    GROUPS,
    report_unknown_keys,
    unknown_key_messages,
    user_errors_exit,
)
from torchrl_hier.experiment.report import plot_learning_curve, window_rate, write_summary
from torchrl_hier.levels import exploration_modules

log = logging.getLogger(__name__)

__all__ = ["train", "main", "cli", "make_logger", "unknown_key_messages", "GROUPS"]

LOGGERS = ("csv", "tensorboard", "wandb")
#: Loggers whose package is optional: the package and how to install it.
_OPTIONAL_LOGGERS = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "wandb": ("wandb", 'pip install "torchrl_hier[wandb]"'),
}
#: ``logger.mode`` of ``logger=wandb`` (``wandb.init(mode=...)``).
WANDB_MODES = ("offline", "online", "disabled")


# ----------------------------------------------------------------------------- setup
def make_logger(cfg: DictConfig, run_dir: Path) -> Logger:
    """TorchRL's ``CSVLogger`` (default), ``TensorboardLogger`` or ``WandbLogger`` (offline by
    default: the run goes to ``<run dir>/wandb/offline-run-*``, for ``wandb sync`` later)."""
    name = cfg.logger.name
    if name == "csv":
        from torchrl.record.loggers import CSVLogger

        return CSVLogger(exp_name=cfg.logger.exp_name, log_dir=str(run_dir))
    if name == "tensorboard":
        check_logger(cfg)
        from torchrl.record.loggers import TensorboardLogger

        return TensorboardLogger(exp_name=cfg.logger.exp_name, log_dir=str(run_dir))
    if name == "wandb":
        check_logger(cfg)
        from torchrl.record.loggers import WandbLogger

        return WandbLogger(
            exp_name=cfg.logger.exp_name, save_dir=str(run_dir), project=cfg.logger.project,
            mode=cfg.logger.mode, config=OmegaConf.to_container(cfg, resolve=True),
        )
    raise ConfigError(f"logger.name={name!r} is not a logger; choose one of {list(LOGGERS)}.")


def check_logger(cfg: DictConfig) -> None:
    """Fails before any work when the chosen logger's package is missing or its mode unknown."""
    name = cfg.logger.name
    if name in _OPTIONAL_LOGGERS:
        import importlib.util

        package, install = _OPTIONAL_LOGGERS[name]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"logger={name} needs the {package} package, which is not installed in "
                f"this environment ({install}). Use logger=csv (the default)."
            )
    if name == "wandb" and cfg.logger.mode not in WANDB_MODES:
        raise ConfigError(
            f"logger.mode={cfg.logger.mode!r} is not a wandb mode; choose one of "
            f"{list(WANDB_MODES)} (offline: the run is written under <run dir>/wandb/, with no "
            "network or account)."
        )


def hydra_dir(run_dir: str | None, resume: str | None, default: str) -> str:
    """Hydra's output directory (``hydra.run.dir``): ``run_dir`` if given; on a resume, a
    ``resumed/<date_time>`` folder inside the resumed run (which the run itself continues);
    else ``default``."""
    if run_dir:
        return str(run_dir)
    if resume:
        try:
            file = checkpoint_file(resume)
        except CheckpointError:
            return default  # train() reports the missing checkpoint
        return str(run_directory(file) / "resumed" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    return default


if not OmegaConf.has_resolver("torchrl_hier.hydra_dir"):
    OmegaConf.register_new_resolver("torchrl_hier.hydra_dir", hydra_dir)


def _run_dir(cfg: DictConfig, fallback: Path | None = None) -> Path:
    """``run_dir`` (per job under it in a multirun), else Hydra's output directory, else
    ``fallback`` (default ``outputs/<date>/<time>``) when not run by Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if cfg.get("run_dir"):
        if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN:
            return Path(cfg.run_dir) / str(hydra_cfg.job.num)
        return Path(cfg.run_dir)
    if hydra_cfg is not None:
        return Path(hydra_cfg.runtime.output_dir)
    return fallback or Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _check_budget(cfg: DictConfig, ckpt_frames: int | None = None, ckpt_file: Path | None = None) -> None:
    """Rejects budgets that train nothing, before any work."""
    total = cfg.get("total_frames")
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ConfigError(f"total_frames={total!r}: the budget must be a positive number of env frames.")
    if ckpt_frames is not None and total <= ckpt_frames:
        raise ConfigError(
            f"The checkpoint {ckpt_file} is at {ckpt_frames} frames, already at or past "
            f"total_frames={total}: there is nothing to train. Pass a larger total_frames= to "
            "continue the run."
        )


def _resume_dir(cfg: DictConfig, origin: Path) -> Path:
    """Where a resumed run writes (``cfg``: this invocation's config, before the checkpoint's
    is merged in): as a new run would (Hydra's output directory is ``<run>/resumed/<date_time>``
    on a resume), never the resumed run's own directory, whose checkpoints and logs stay as
    they are."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    target = _run_dir(cfg, fallback=origin / "resumed" / stamp)
    if target.resolve() == origin.resolve():
        raise ConfigError(
            f"run_dir={cfg.get('run_dir')} is the directory of the run being resumed. A resumed "
            "run writes into a directory of its own, so that the original's checkpoints, logs "
            "and summary stay intact: pass another run_dir, or leave it unset "
            "(<run>/resumed/<date_time>)."
        )
    return target


def _copy_logs(source: Path, target: Path, frames: int) -> None:
    """Starts the continuation's CSV logs with the resumed run's rows up to the checkpoint
    (rows logged after it are collected again); the resumed run's files are left as they are."""
    for file in source.rglob("*.csv"):
        rows = file.read_text().splitlines()
        kept = [row for row in rows if row and float(row.split(",", 1)[0]) <= frames]
        out = target / file.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(row + "\n" for row in kept))


def _warn_inexact(file: Path, gaps: Sequence[str]) -> None:
    """Says (terminal and the run's train.log) why a resumed run is not an exact continuation."""
    message = (
        f"Resuming from {file}: the run will not continue exactly as the uninterrupted run "
        f"would, because {'; '.join(gaps)}. Parameters, optimizers, exploration schedules, "
        "counters and RNG states are restored (README: 'Resuming a run')."
    )
    log.warning(message)
    warnings.warn(message, ResumeWarning, stacklevel=3)


def _exploration(policy: torch.nn.Module) -> float | None:
    modules = exploration_modules(policy)
    if not modules:
        return None
    m = modules[0]
    return float(m.eps if hasattr(m, "eps") else m.sigma)


# ----------------------------------------------------------------------------- training
def train(
    cfg: DictConfig,
    overrides: Sequence[str] = (),
    *,
    on_batch: Callable[[int, TensorDictBase], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) one training run; returns its summary.

    ``overrides`` are the command-line overrides of this invocation (Hydra passes them); on
    ``resume=<run dir>`` they are applied on top of the checkpoint's config. ``on_batch``, if
    given, is called with the frame count and each collected batch after the learners' update
    (to record or inspect what was collected).
    """
    resolve_device(cfg.device)
    check_logger(cfg)
    _check_budget(cfg)
    ckpt, ckpt_file = None, None
    if cfg.get("resume"):
        invocation = cfg
        ckpt, ckpt_file = load_checkpoint(cfg.resume)
        cfg = resume_config(cfg, ckpt, ckpt_file, overrides)
        resolve_device(cfg.device)
        check_logger(cfg)
        _check_budget(cfg, ckpt_frames=int(ckpt["frames"]), ckpt_file=ckpt_file)
        origin = run_directory(ckpt_file)
        run_dir = _resume_dir(invocation, origin)
        _copy_logs(origin / cfg.logger.exp_name, run_dir / cfg.logger.exp_name, int(ckpt["frames"]))
    else:
        run_dir = _run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    _seed_everything(int(cfg.seed))
    exp = build_experiment(cfg)
    with closing(exp):  # its evaluation envs
        return _train_experiment(exp, cfg, ckpt, ckpt_file, run_dir, on_batch)


def _train_experiment(
    exp: Experiment,
    cfg: DictConfig,
    ckpt: dict[str, Any] | None,
    ckpt_file: Path | None,
    run_dir: Path,
    on_batch: Callable[[int, TensorDictBase], None] | None,
) -> dict[str, Any]:
    """:func:`train`'s loop, evaluations and summary for a built experiment."""
    frames, history, elapsed_before = 0, [], 0.0
    if ckpt is not None:
        restore_training(exp, ckpt, ckpt_file)
        frames = int(ckpt["frames"])
        history = list(ckpt["history"])
        elapsed_before = float(ckpt.get("elapsed", 0.0))
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    logger = make_logger(cfg, run_dir)
    start_frames = frames
    total = int(cfg.total_frames)
    ckpt_dir = run_dir / "checkpoints"
    every_ckpt = int(cfg.checkpoint.every_frames)
    every_eval = int(cfg.eval.every_frames)
    names = exp.names
    raw_counts = dict(ckpt.get("raw_transitions", {})) if ckpt is not None else {}
    raw_counts = {name: int(raw_counts.get(name, 0)) for name in names}
    t_start, cpu_start = time.perf_counter(), time.process_time()

    def checkpoint(collector: BaseCollector) -> None:
        save_checkpoint(
            ckpt_dir, exp, frames, history, buffers=bool(cfg.checkpoint.buffers),
            keep=int(cfg.checkpoint.keep), collection=collection_state(exp, collector),
            extra={"elapsed": elapsed_before + time.perf_counter() - t_start,
                   "raw_transitions": raw_counts},
        )

    def evaluate_now(deterministic: bool = True, log: bool = True) -> dict[str, Any]:
        result = run_episodes(
            exp, int(cfg.eval.episodes), seed=int(cfg.seed) + 1_000_003, progress=False,
            deterministic=deterministic,
        )
        if log:
            if result["success_rate"] is not None:
                logger.log_scalar("eval/success_rate", result["success_rate"], step=frames)
            logger.log_scalar("eval/return", result["return_mean"], step=frames)
        return result

    if ckpt is None and int(cfg.eval.episodes) > 0:
        # where learning starts: the untrained policy exploring (random actions for epsilon-
        # greedy levels) is the baseline to beat; its greedy evaluation is the curve's first point
        baseline = evaluate_now(deterministic=False, log=False)
        history.append({"frames": 0, "episodes": 0, "eval": evaluate_now(), "baseline": baseline})

    # _check_budget made sure that there are frames left to collect
    per_batch = int(cfg.collector.frames_per_batch)
    budget = math.ceil((total - frames) / per_batch) * per_batch
    collector = make_collector(
        cfg, exp, budget, env_seed=None if ckpt is None else int(cfg.seed) + frames
    )
    bar = tqdm(
        total=total, initial=frames, unit="frame", desc=f"train {cfg.hierarchy.name}",
        disable=not cfg.progress, dynamic_ncols=True,
    )
    try:
        if ckpt is not None:
            gaps = restore_collection(exp, collector, ckpt, ckpt_file)
            if gaps:
                _warn_inexact(ckpt_file, gaps)
        multi = cfg.collector.name != "sync"
        t_last = time.perf_counter()
        for batch in collector:
            n = batch.numel()
            frames += n
            data = exp.pipeline(batch)
            counts = exp.counts(batch, data)
            for name in names:
                raw_counts[name] += counts[name]
            exp.anneal(counts)
            exp.learners.extend(data)
            losses = exp.learners.update()
            if multi:
                collector.update_policy_weights_()
            if on_batch is not None:
                on_batch(frames, batch)
            stats = episode_stats(batch, exp.has_success)
            now = time.perf_counter()
            fps = n / max(now - t_last, 1e-9)
            t_last = now
            row = _log_batch(logger, exp, frames, fps, stats, losses, raw_counts)
            if every_eval > 0 and frames // every_eval != (frames - n) // every_eval:
                row["eval"] = evaluate_now()
            history.append(row)
            bar.update(n)
            bar.set_postfix(_postfix(history, exp.has_success, fps), refresh=False)
            # the last batch's checkpoint is the run's final one, written while the collector
            # still holds the state a resumed run continues from
            periodic = every_ckpt > 0 and frames // every_ckpt != (frames - n) // every_ckpt
            if periodic or frames >= total:
                checkpoint(collector)
    finally:
        bar.close()
        collector.shutdown()
    wall = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    final = evaluate_now() if int(cfg.eval.episodes) > 0 else None
    if final is not None:
        history.append({"frames": frames, "episodes": 0, "eval": final, "final": True})
    # before every instance could have finished an episode, the episodes that ended are the
    # short (successful) ones: training success counts from there on
    settle = int(cfg.task.n_envs) * _max_steps(exp)
    summary = _summary(
        cfg, exp, run_dir, history, frames, start_frames, wall, elapsed_before, final, raw_counts,
        settle,
    )
    summary["cpu_time_s"] = round(cpu, 2)
    if cfg.eval.gif:
        try:
            gif, _ = record_gif(exp, run_dir / "rollout.gif", seed=int(cfg.seed) + 1_000_003)
            summary["gif"] = str(gif)
        except ConfigError as err:
            summary["gif"] = f"not written: {err}"
    plot_learning_curve(
        history, run_dir / "learning_curve.png",
        title=f"{cfg.task.name} / {cfg.hierarchy.name} (seed {cfg.seed})", start=settle,
    )
    write_summary(run_dir, summary)
    logger.close() if hasattr(logger, "close") else None
    log.info(_summary_line(summary))  # into the run's train.log (Hydra's file handler)
    if cfg.progress:
        print(_summary_line(summary), file=sys.stderr)
    return summary


def _log_batch(logger, exp, frames, fps, stats, losses, raw_counts) -> dict[str, Any]:
    """Logs one batch's scalars; returns its history row (per-batch sums, for the curve)."""
    episodes = int(stats["return"].numel())
    row: dict[str, Any] = {"frames": frames, "fps": fps, "episodes": episodes}
    logger.log_scalar("time/fps", fps, step=frames)
    if episodes:
        row["return_sum"] = float(stats["return"].sum())
        logger.log_scalar("train/episode_return", row["return_sum"] / episodes, step=frames)
        if "success" in stats:
            row["success_sum"] = float(stats["success"].sum())
            logger.log_scalar("train/success_rate", row["success_sum"] / episodes, step=frames)
    logger.log_scalar("train/episodes", episodes, step=frames)
    row["losses"] = losses
    for name, logs in losses.items():
        for key, value in logs.items():
            logger.log_scalar(f"level/{name}/{key}", value, step=frames)
    for name in exp.names:
        logger.log_scalar(f"level/{name}/transitions", raw_counts[name], step=frames)
        if name in exp.learners:  # frozen levels have none
            logger.log_scalar(f"level/{name}/updates", exp.learners[name].n_updates, step=frames)
        explore = _exploration(exp.explorers[name]) if name in exp.explorers else None
        if explore is not None:
            logger.log_scalar(f"level/{name}/exploration", explore, step=frames)
    return row


def _postfix(history, has_success: bool, fps: float) -> dict[str, str]:
    recent = history[-20:]
    key = "success_sum" if has_success else "return_sum"
    episodes = sum(h["episodes"] for h in recent if h.get(key) is not None)
    value = sum(h[key] for h in recent if h.get(key) is not None) / episodes if episodes else float("nan")
    return {("success" if has_success else "return"): f"{value:.3f}", "fps": f"{fps:.0f}"}


def _summary(
    cfg, exp, run_dir, history, frames, start_frames, wall, elapsed_before, final, raw_counts,
    settle,
) -> dict[str, Any]:
    total_wall = elapsed_before + wall
    return {
        "task": cfg.task.name,
        "hierarchy": cfg.hierarchy.name,
        "levels_order": exp.names,
        "collector": cfg.collector.name,
        "device": str(exp.device),
        "seed": int(cfg.seed),
        "frames": frames,
        "resumed_from_frames": start_frames if cfg.get("resume") else None,
        "resumed_from": str(cfg.resume) if cfg.get("resume") else None,
        "wall_time_s": round(total_wall, 2),
        "frames_per_s": round(frames / total_wall, 1) if total_wall > 0 else None,
        "has_success": bool(exp.has_success),
        "train_counted_from_frames": settle,
        "train_success_first": window_rate(history, "success_sum", 0.1, False, settle),
        "train_success_last": window_rate(history, "success_sum", 0.1, True, settle),
        "train_return_first": window_rate(history, "return_sum", 0.1, False, settle),
        "train_return_last": window_rate(history, "return_sum", 0.1, True, settle),
        "eval": final,
        "baseline_exploring": next((h["baseline"] for h in history if "baseline" in h), None),
        # where the flat agent stands on this task, as measured (the task config's note)
        "baseline_flat": OmegaConf.to_container(cfg.task.baseline_flat)
        if cfg.task.get("baseline_flat") is not None else None,
        "levels": {name: _level_summary(exp, name, raw_counts[name]) for name in exp.names},
        "run_dir": str(run_dir),
        "checkpoint": str(run_dir / "checkpoints" / "last.pt"),
    }


def _level_summary(exp, name: str, transitions: int) -> dict[str, Any]:
    """A level's counts; a frozen level (no learner: another level's loss trains it, e.g.
    option-critic's Q_Omega, or nothing does) says so and takes no updates of its own."""
    learner = exp.learners.learners.get(name)
    if learner is None:
        return {"transitions": transitions, "learner_transitions": 0, "updates": 0, "frozen": True}
    return {
        "transitions": transitions,
        "learner_transitions": learner.n_transitions,
        "updates": learner.n_updates,
    }


def _summary_line(summary: dict[str, Any]) -> str:
    final = summary.get("eval") or {}
    success = final.get("success_rate")
    measure = "success" if summary["has_success"] else "return"
    first, last = summary[f"train_{measure}_first"], summary[f"train_{measure}_last"]
    if first is None or last is None:
        train = (
            f"train {measure} n/a (counted from frame {summary['train_counted_from_frames']}, "
            "when every instance has had time to finish an episode)"
        )
    else:
        train = f"train {measure} {_rounded(first)} -> {_rounded(last)}"
    return (
        f"[torchrl_hier.train] {summary['task']} / {summary['hierarchy']} seed {summary['seed']}: "
        f"{summary['frames']} frames in {summary['wall_time_s']:.0f} s; {train}; "
        f"eval success {_rounded(success)}, return {_rounded(final.get('return_mean'))}; "
        f"run dir {summary['run_dir']}"
    )


def _rounded(value: Any) -> str:
    """A summary number for the terminal: floats to 3 decimals (``summary.json`` keeps them all)."""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- entry points
@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    with user_errors_exit(log):
        return train(cfg, overrides)


def cli() -> None:
    """``python -m torchrl_hier.train``: lists valid keys for unknown ones, then runs Hydra."""
    report_unknown_keys(sys.argv[1:], "config", GROUPS)
    main()


if __name__ == "__main__":
    cli()
