"""HAC as published: MountainCarContinuous with 2 levels (H=20) and 3 levels (H=5), vs flat TD3.

HAC's PyTorch port (github.com/nikhilbarhate99/Hierarchical-Actor-Critic-HAC-PyTorch) solves
gymnasium's ``MountainCarContinuous-v0`` within 200 episodes with a goal state of (position
0.48, velocity 0.04) within (0.01, 0.02) per component, subgoal states, hindsight action and
goal transitions and subgoal testing. Here the same set-up is the library's own parts, built
from the Hydra configs ``task=MountainCarContinuous`` (``make_env("MountainCarContinuous")``:
``FixedGoal`` adds the goal; the state rescaled into [-1, 1]) and ``hierarchy=hac`` /
``hierarchy=hac_3level`` (the ready-made subgoal levels, hindsight in ``levels.hindsight``),
and the flat baseline is the ready-made flat level (TD3) at the same budget of episodes:

- ``hac-2level``: ``hierarchy=hac`` (top subgoal level + primitive level, H = 20); training
  episodes last at most H**2 = 400 steps, as in the port (its top level also has H attempts);
- ``hac-3level``: ``hierarchy=hac_3level`` (H = 5 at every level, episodes of <= 125 steps);
- ``flat-td3``: ``hierarchy=flat`` with TD3 on the env reward (HAC's exploration and its
  primitive level's learner settings), on the 2-level runs' 400-step training episodes.

Every run trains with TorchRL's ``Collector`` for a budget of training episodes and, every
``--eval-every`` episodes, runs ``--eval-episodes`` fresh greedy episodes
(``ExplorationType.DETERMINISTIC``) of the standard task (999-step limit) with
``torchrl_hier.evaluate.run_episodes``; the curve is their mean return. The env counts as
solved at a return of 90. Each run is one process with one torch thread.

    python benchmarks/hac_mountain_car.py                               # 3 configs x seeds 0-2
    python benchmarks/hac_mountain_car.py --configs hac-2level --seeds 100 101 --tag tune

Writes ``benchmarks/results/<tag>.json`` (every curve), ``<tag>.png`` (greedy return against
episodes and env steps: mean, min and max over seeds) and ``<tag>.md`` (a table).
Hyperparameters were chosen on seeds 100 and 101; the reported seeds are 0, 1, 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf, open_dict
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv

from torchrl_hier.evaluate import run_episodes
from torchrl_hier.experiment.builders import EPISODE_RETURN, build_experiment, make_task_env

RESULTS = Path(__file__).parent / "results"
SOLVED = 90.0  # the env's own threshold (gymnasium's reward_threshold)
# `compile` of every run (HAC_COMPILE=true: torch.compile the gradient steps; its warm-up of
# ~70-110 s per learner under load did not pay off in 200 episodes here)
COMPILE = os.environ.get("HAC_COMPILE", "false")


@dataclass(frozen=True)
class Config:
    """A hierarchy config plus what this benchmark overrides."""

    hierarchy: str
    train_steps: int  # training episodes' step limit (gymnasium's TimeLimit)
    overrides: tuple[str, ...] = field(default_factory=tuple)


CONFIGS: dict[str, Config] = {
    "hac-2level": Config("hac", 20**2),
    "hac-3level": Config("hac_3level", 5**3),
    "flat-td3": Config(
        "flat", 20**2,
        (
            "hierarchy.levels.agent.algorithm=td3", "hierarchy.levels.agent.hindsight_k=0",
            "hierarchy.levels.agent.hidden=[64,64]", "hierarchy.levels.agent.gamma=0.99",
            # HAC's exploration (Gaussian noise, 20 % uniform actions), its primitive level's
            # network, learning rate, batch and gradient steps per env step (0.05 x 5 rows)
            "hierarchy.levels.agent.exploration.noise_std=0.1",
            "+hierarchy.levels.agent.exploration.random_probability=0.2",
            "hierarchy.levels.agent.exploration.annealing_num_steps=10000",
            "hierarchy.levels.agent.learner.lr=0.001",
            "hierarchy.levels.agent.learner.batch_size=128",
            "hierarchy.levels.agent.learner.warmup=1000",
            "hierarchy.levels.agent.learner.update_ratio=0.25",
        ),
    ),
}


def make_config(name: str, seed: int, overrides: Sequence[str] = ()) -> DictConfig:
    """The composed Hydra config of run ``name`` (as ``python -m torchrl_hier.train`` builds
    it) with ``seed``, the config's overrides and then ``overrides``."""
    config = CONFIGS[name]
    args = [
        "task=MountainCarContinuous", f"hierarchy={config.hierarchy}", f"seed={seed}",
        "compile=" + COMPILE, "progress=false", *config.overrides, *overrides,
    ]
    with initialize_config_module("torchrl_hier.conf", version_base=None):
        return compose("config", overrides=args)


def train(
    name: str,
    seed: int,
    episodes: int = 200,
    eval_every: int = 20,
    eval_episodes: int = 10,
    n_envs: int = 4,
    steps_per_batch: int = 50,
    overrides: Sequence[str] = (),
    train_steps: int | None = None,
    keep: list | None = None,
) -> dict:
    """Trains run ``name`` with ``seed`` for ``episodes`` training episodes (all env instances
    together); returns its greedy-return curve (against episodes and env steps) and timings.

    ``overrides`` are Hydra overrides on top of the config's; ``train_steps`` replaces the
    training episodes' step limit (the tests use both for tiny versions); the trained
    ``Experiment`` is appended to ``keep`` if given."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RL_WARNINGS", "False")
    config = CONFIGS[name]
    cfg = make_config(name, seed, overrides)
    torch.manual_seed(seed)
    np.random.seed(seed)
    exp = build_experiment(cfg, n_envs=n_envs, seed=seed)
    # training episodes end after `train_steps` (HAC: H**levels); evaluation keeps the standard
    # 999-step task of cfg.task
    train_task = OmegaConf.to_container(cfg.task, resolve=True)
    train_task["kwargs"] = {**(train_task.get("kwargs") or {}),
                            "max_episode_steps": int(train_steps or config.train_steps)}
    env = TransformedEnv(
        make_task_env(train_task, n_envs, exp.device, seed), exp.env_transform()
    )
    collector = Collector(
        env, exp.policy, frames_per_batch=n_envs * steps_per_batch, total_frames=-1,
        auto_register_policy_transforms=False,
    )

    def evaluate() -> float:
        result = run_episodes(exp, eval_episodes, seed=10_000 + seed, progress=False)
        return result["return_mean"]

    wall, cpu = time.perf_counter(), time.process_time()
    curve = [(0, 0, evaluate())]
    done_episodes, frames, next_eval, logs = 0, 0, eval_every, {}
    train_returns: list[float] = []
    for batch in collector:
        frames += batch.numel()
        data = exp.pipeline(batch)
        exp.anneal(exp.counts(batch, data))
        exp.learners.extend(data)
        logs = exp.learners.update() or logs
        done = batch.get(("next", "done")).reshape(-1)
        ended = int(done.sum())
        if ended:
            returns = batch.get(("next", EPISODE_RETURN)).reshape(-1)[done]
            train_returns.extend(returns.tolist())
        done_episodes += ended
        if done_episodes >= next_eval or done_episodes >= episodes:
            curve.append((done_episodes, frames, evaluate()))
            next_eval = (done_episodes // eval_every + 1) * eval_every
            print(f"[{name} seed {seed}] {done_episodes:>4} episodes {frames:>7} steps  greedy "
                  f"return {curve[-1][2]:7.2f}  {time.perf_counter() - wall:6.0f}s  "
                  f"{_short(logs)}", flush=True)
        if done_episodes >= episodes:
            break
    collector.shutdown()
    if keep is not None:
        keep.append(exp)
    greedy = [r for _, _, r in curve]
    solved_at = next((e for e, _, r in curve if r >= SOLVED), None)
    return {
        "config": name, "seed": seed, "episodes": [e for e, _, _ in curve],
        "frames": [f for _, f, _ in curve], "greedy_return": greedy,
        "train_returns": train_returns, "solved_at_episode": solved_at,
        "best_greedy_return": max(greedy), "final_greedy_return": greedy[-1],
        "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
        "hierarchy": OmegaConf.to_container(cfg.hierarchy, resolve=True),
        "train_steps": int(train_steps or config.train_steps), "n_envs": n_envs,
    }


@torch.no_grad()
def random_return(seed: int, episodes: int = 10) -> float:
    """The mean return of uniformly random actions on ``episodes`` fresh episodes of the
    standard task: the floor every agent must beat."""
    from torchrl.envs.utils import RandomPolicy

    from torchrl_hier.envs import make_env

    env = make_env("MountainCarContinuous", batch_size=episodes, seed=10_000 + seed)
    torch.manual_seed(seed)
    rollout = env.rollout(999, RandomPolicy(env.full_action_spec), break_when_all_done=True,
                          break_when_any_done=False)
    reward = rollout.get(("next", "reward")).squeeze(-1)
    done = rollout.get(("next", "done")).squeeze(-1)
    alive = (done.long().cumsum(-1) - done.long()) == 0  # steps up to each first episode's end
    return float((reward * alive).sum(-1).mean())


def _short(logs: dict[str, dict[str, float]]) -> str:
    """The levels' mean losses of the last update, ``level/loss=value``."""
    return " ".join(f"{level}/{k}={v:.3g}" for level, values in sorted(logs.items())
                    for k, v in sorted(values.items()) if "loss" in k)


# ----------------------------------------------------------------------------- reporting
def plot(runs: list[dict], path: Path) -> None:
    """Greedy return against training episodes and env steps: each config's mean over seeds
    with a min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in [n for n in CONFIGS if any(r["config"] == n for r in runs)]:
        group = [r for r in runs if r["config"] == name]
        n = min(len(r["greedy_return"]) for r in group)
        values = np.array([r["greedy_return"][:n] for r in group])
        episodes = np.array([r["episodes"][:n] for r in group]).mean(0)
        frames = np.array([r["frames"][:n] for r in group]).mean(0)
        for ax, x in zip(axes, (episodes, frames)):
            line, = ax.plot(x, values.mean(0), label=f"{name} ({len(group)} seeds)")
            ax.fill_between(x, values.min(0), values.max(0), alpha=0.2, color=line.get_color())
    for ax, label in zip(axes, ("training episodes", "env steps (mean over seeds)")):
        ax.axhline(SOLVED, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("greedy return (10 episodes)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("MountainCarContinuous-v0: mean, min-max over seeds; dashed: solved (90)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(runs: list[dict]) -> str:
    """A markdown table per config: greedy return at 50/100/200 episodes (mean [min, max]),
    the seeds that reached 90 and when, env steps and CPU time per run."""
    lines = [
        "| config | seeds | greedy return @50 ep | @100 ep | @200 ep | best <= 200 ep "
        "| seeds >= 90 (episode) | env steps / run | cpu s / run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in CONFIGS:
        group = [r for r in runs if r["config"] == name]
        if not group:
            continue
        cells = []
        for target in (50, 100, 200):
            values = []
            for r in group:
                i = min(range(len(r["episodes"])), key=lambda j: abs(r["episodes"][j] - target))
                values.append(r["greedy_return"][i])
            cells.append(_mmm(values))
        cells.append(_mmm([r["best_greedy_return"] for r in group]))
        solved = [f"{r['seed']} ({r['solved_at_episode']})" for r in group
                  if r["solved_at_episode"] is not None]
        cells.append(f"{len(solved)}/{len(group)}: " + (", ".join(solved) or "none"))
        cells.append(f"{np.mean([r['frames'][-1] for r in group]):.0f}")
        cells.append(f"{np.mean([r['cpu_s'] for r in group]):.0f}")
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in group)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mmm(values: Sequence[float]) -> str:
    return f"{np.mean(values):.1f} [{min(values):.1f}, {max(values):.1f}]"


def write_report(runs: list[dict], meta: dict, out: Path, tag: str) -> str:
    """Writes ``<tag>.json``, ``<tag>.png`` and ``<tag>.md``; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    plot(runs, out / f"{tag}.png")
    text = table(runs) + f"\n\nRandom actions: greedy-evaluation return {meta['random_return']:.1f}.\n"
    (out / f"{tag}.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=200, help="training episodes per run")
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--envs", type=int, default=4, help="env instances per collector")
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for all runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="hac_mountain_car")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: rewrite the table and plot from <out>/<tag>.json")
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads((args.out / f"{args.tag}.json").read_text())
        print(write_report(saved["runs"], saved["meta"], args.out, args.tag))
        return
    start = time.perf_counter()
    runs = []
    meta = {"machine": platform.platform(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()},
            "random_return": random_return(0, args.eval_episodes)}
    for seed in args.seeds:  # seed-major: a stopped benchmark has every config on some seeds
        for name in args.configs:
            runs.append(train(name, seed, args.episodes, args.eval_every, args.eval_episodes,
                              args.envs, overrides=args.override))
            meta["wall_s"] = time.perf_counter() - start
            write_report(runs, meta, args.out, args.tag)  # partial results survive a stop
    print(write_report(runs, meta, args.out, args.tag))


if __name__ == "__main__":
    main()
