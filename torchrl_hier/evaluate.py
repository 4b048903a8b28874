"""Evaluates a trained hierarchy: loads a checkpoint, runs episodes with exploration off, and
reports the success rate and return (optionally with a GIF of one rollout).

    python -m torchrl_hier.evaluate checkpoint=outputs/2025-01-01/12-00-00 episodes=100 gif=true

``checkpoint`` is a checkpoint file or a run directory (its ``checkpoints/last.pt`` is used).
The M episodes run as M env instances in one batch, one episode each.
"""

from __future__ import annotations

import json
import logging
from contextlib import closing
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type, step_mdp
from tqdm.auto import tqdm

from torchrl_hier.experiment.builders import (
    EPISODE_RETURN,
    SUCCESS,
    ConfigError,
    Experiment,
    build_experiment,
    resolve_device,
)
from torchrl_hier.experiment.checkpoint import load_checkpoint, restore_policy, run_directory

__all__ = [
    "run_episodes", "record_gif", "load_experiment", "evaluate_checkpoint", "max_episode_steps",
    "main",
]


def max_episode_steps(exp: Experiment) -> int:
    """The task's episode limit: ``task.max_episode_steps``, else the built-in tasks' own
    ``max_steps`` (read from the instance: batched envs forward attribute lookups)."""
    steps = exp.cfg.task.get("max_episode_steps")
    if steps is None:
        steps = vars(exp.env).get("max_steps", 1000)
    return int(steps)


def run_episodes(
    exp: Experiment,
    episodes: int,
    *,
    seed: int = 12345,
    deterministic: bool = True,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs ``episodes`` episodes (one per env instance, in one batch) and returns the success
    rate (tasks with an ``"is_success"`` entry), mean/std return and mean length.

    Exploration is off when ``deterministic`` (``ExplorationType.DETERMINISTIC``: greedy DQN,
    noiseless TD3, mean SAC actions, no subgoal tests). Episodes still running after
    ``max_steps`` (default: the task's limit) count as failures with the return so far.
    The env is the experiment's own for this many instances (:meth:`Experiment.task_env`),
    re-seeded with ``seed``: the same seed gives the same episodes at every evaluation.
    """
    if not (isinstance(episodes, int) and episodes >= 1):
        raise ConfigError(f"episodes must be a positive int, got {episodes!r}.")
    max_steps = max_episode_steps(exp) if max_steps is None else int(max_steps)
    env = TransformedEnv(exp.task_env(episodes, seed), exp.env_transform())
    policy = exp.eval_policy()
    mode = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
    finished = torch.zeros(episodes, dtype=torch.bool, device=exp.device)
    returns = torch.zeros(episodes, device=exp.device)
    success = torch.zeros(episodes, device=exp.device)
    lengths = torch.full((episodes,), max_steps, dtype=torch.long, device=exp.device)
    with set_exploration_type(mode), torch.no_grad():
        td = env.reset()
        steps = tqdm(
            range(max_steps), desc=f"evaluate ({episodes} episodes at once)", unit="step",
            leave=False, disable=not progress,
        )
        for t in steps:
            td = policy(td)
            td, root = env.step_and_maybe_reset(td)
            nxt = td.get("next")
            done = nxt.get("done").reshape(episodes)
            newly = done & ~finished
            returns = torch.where(newly, nxt.get(EPISODE_RETURN).reshape(episodes), returns)
            if exp.has_success:
                success = torch.where(newly, nxt.get(SUCCESS).reshape(episodes).float(), success)
            lengths = torch.where(newly, t + 1, lengths)
            running_return = nxt.get(EPISODE_RETURN).reshape(episodes)
            finished = finished | done
            if t % 10 == 9 and bool(finished.all()):  # a host sync every 10 steps only
                break
            td = root
    returns = torch.where(finished, returns, running_return)
    out: dict[str, Any] = {
        "episodes": episodes,
        "deterministic": deterministic,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()) if episodes > 1 else 0.0,
        "length_mean": float(lengths.float().mean()),
        "finished": int(finished.sum()),
    }
    out["success_rate"] = float(success.mean()) if exp.has_success else None
    return out


def record_gif(
    exp: Experiment,
    path: str | Path,
    *,
    seed: int = 12345,
    deterministic: bool = True,
    max_steps: int | None = None,
    fps: int = 8,
) -> tuple[Path, int]:
    """Writes a GIF of one episode (a single env instance) to ``path``; returns the path and
    the number of frames rendered (the GIF merges identical consecutive frames). Needs a task
    with ``render()`` returning ``HxWx3`` uint8 frames (the built-in tasks) and Pillow."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow ships with matplotlib
        raise RuntimeError("Writing a GIF needs Pillow (pip install pillow).") from err
    base = exp.task_env(1, seed)
    if not callable(getattr(type(base), "render", None)):
        raise ConfigError(
            f"Task {exp.cfg.task.name!r} cannot render frames (no render() method); GIFs are "
            "available for the built-in GridMaze/PointMaze tasks. Run without gif=true."
        )
    env = TransformedEnv(base, exp.env_transform())
    max_steps = max_episode_steps(exp) if max_steps is None else int(max_steps)
    mode = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
    frames = []
    policy = exp.eval_policy()
    with set_exploration_type(mode), torch.no_grad():
        td = env.reset()
        frames.append(base.render(0))
        for _ in range(max_steps):
            td = env.step(policy(td))
            frames.append(base.render(0))
            if bool(td.get(("next", "done")).any()):
                break
            td = step_mdp(td)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(frame)) for frame in frames]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
    )
    return path, len(images)


def load_experiment(
    checkpoint: str | Path, device: str | None = None
) -> tuple[Experiment, dict[str, Any], Path]:
    """The experiment of a checkpoint (its config), with the trained policy loaded."""
    ckpt, path = load_checkpoint(checkpoint)
    cfg = OmegaConf.create(ckpt["config"])
    if device is not None:
        cfg.device = device
    resolve_device(cfg.device)
    exp = build_experiment(cfg, n_envs=1)
    restore_policy(exp, ckpt, path)
    return exp, ckpt, path


def evaluate_checkpoint(
    checkpoint: str | Path,
    episodes: int = 100,
    *,
    gif: bool = False,
    gif_path: str | Path | None = None,
    seed: int = 12345,
    deterministic: bool = True,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Loads ``checkpoint``, runs ``episodes`` episodes and (optionally) writes a GIF; returns
    the report (also written as ``eval.json`` next to the checkpoint's run directory)."""
    exp, ckpt, path = load_experiment(checkpoint, device)
    with closing(exp):
        report = run_episodes(
            exp, episodes, seed=seed, deterministic=deterministic, progress=progress
        )
        report.update(checkpoint=str(path), frames=int(ckpt["frames"]), task=exp.cfg.task.name,
                      hierarchy=exp.cfg.hierarchy.name)
        run_dir = run_directory(path)
        if gif:
            target = Path(gif_path) if gif_path else run_dir / "rollout.gif"
            gif_path, n_frames = record_gif(exp, target, seed=seed, deterministic=deterministic)
            report.update(gif=str(gif_path), gif_frames=n_frames)
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(report: dict[str, Any]) -> str:
    success = report.get("success_rate")
    lines = [
        f"checkpoint: {report['checkpoint']} ({report['frames']} frames)",
        f"task: {report['task']}, hierarchy: {report['hierarchy']}",
        f"episodes: {report['episodes']} ({'deterministic' if report['deterministic'] else 'exploring'})",
        f"success rate: {'n/a (task has no is_success)' if success is None else f'{success:.3f}'}",
        f"return: {report['return_mean']:.3f} +- {report['return_std']:.3f}, "
        f"length: {report['length_mean']:.1f}",
    ]
    if "gif" in report:
        lines.append(f"gif: {report['gif']}")
    return "\n".join(lines)


@hydra.main(config_path="conf", config_name="evaluate", version_base=None)
def main(cfg: DictConfig) -> dict[str, Any]:
    from torchrl_hier.experiment.cli import user_errors_exit

    with user_errors_exit(logging.getLogger(__name__)):
        resolve_device(cfg.device) if cfg.device is not None else None
        report = evaluate_checkpoint(
            cfg.checkpoint,
            int(cfg.episodes),
            gif=bool(cfg.gif),
            gif_path=cfg.gif_path,
            seed=int(cfg.seed),
            deterministic=bool(cfg.deterministic),
            device=cfg.device,
            progress=bool(cfg.progress),
        )
    print(format_report(report))
    return report


def cli() -> None:
    """``python -m torchrl_hier.evaluate``: lists valid keys for unknown ones, then runs Hydra."""
    import sys

    from torchrl_hier.experiment.cli import report_unknown_keys

    report_unknown_keys(sys.argv[1:], "evaluate", ())
    main()


if __name__ == "__main__":
    cli()
