"""GridMaze-9Rooms at 500k env steps: a subgoal hierarchy against flat DQN with hindsight goals.

Runs configs of ``benchmarks/learning.py`` (same training loop, greedy evaluation and agents)
on ``GridMaze-9Rooms`` (19x19, 9 rooms of 5x5, start and goal >= 16 steps apart, 200-step
episodes, reward 1 only at the goal, coordinates rescaled to cells) with a 500k-step budget and
11 greedy evaluations (100 fresh episodes each), one run at a time, one thread per run.

    PYTHONPATH=. python benchmarks/nine_rooms.py --configs grid-subgoals-planned --seeds 100
    PYTHONPATH=. python benchmarks/nine_rooms.py                 # reported: seeds 0, 1, 2
    PYTHONPATH=. python benchmarks/nine_rooms.py --report-only

Every finished run is appended to ``benchmarks/results/<tag>.json`` at once (a long sweep
keeps what it finished); the report is a table of greedy success (mean, min, max over seeds)
at each checkpoint in ``<tag>.md`` and a plot of the mean with its min-max band in
``<tag>.png``. Hyperparameters were chosen on seed 100; the reported seeds are 0, 1, 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import learning  # noqa: E402  (benchmarks/learning.py: configs, agents, training loop)

RESULTS = learning.RESULTS
TASK = learning.Task("GridMaze-9Rooms", frames=500_000, checkpoints=10, obs_scale=18.0)
CONFIGS = ("grid-subgoals-planned", "grid-flat-dqn-her")


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text())["runs"] if path.exists() else []


def save(path: Path, runs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "task": TASK.env, "frames": TASK.frames}
    path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))


def table(runs: list[dict], seeds: list[int] | None = None) -> str:
    """Greedy success per config at every checkpoint: mean [min, max] over the seeds."""
    lines = []
    for name in dict.fromkeys(r["config"] for r in runs):
        group = [r for r in runs if r["config"] == name and (seeds is None or r["seed"] in seeds)]
        if not group:
            continue
        frames = group[0]["frames"]
        success = np.array([r["success"] for r in group])
        cpu = np.mean([r["cpu_s"] for r in group])
        lines += [f"**{name}**, seeds {sorted(r['seed'] for r in group)}, "
                  f"{cpu / 60:.1f} CPU min per run", "",
                  "| env steps | " + " | ".join(f"{f // 1000}k" for f in frames) + " |",
                  "| --- |" + " --- |" * len(frames)]
        for label, values in (("mean", success.mean(0)), ("min", success.min(0)),
                              ("max", success.max(0))):
            lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path, seeds: list[int] | None = None) -> None:
    """Each config's mean greedy success over seeds, with the min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["config"] for r in runs):
        group = [r for r in runs if r["config"] == name and (seeds is None or r["seed"] in seeds)]
        if not group:
            continue
        success = np.array([r["success"] for r in group])
        line, = ax.plot(group[0]["frames"], success.mean(0),
                        label=f"{name} ({len(group)} seeds)")
        ax.fill_between(group[0]["frames"], success.min(0), success.max(0), alpha=0.2,
                        color=line.get_color())
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("greedy success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{TASK.env}: mean and min-max over seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(runs: list[dict], out: Path, tag: str, seeds: list[int] | None) -> str:
    text = table(runs, seeds)
    (out / f"{tag}.md").write_text(text)
    plot(runs, out / f"{tag}.png", seeds)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS),
                        choices=list(learning.CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--frames-scale", type=float, default=1.0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="hyperparameter overrides (Python literals), for tuning runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="nine_rooms")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    path = args.out / f"{args.tag}.json"
    if not args.report_only:
        import ast

        overrides = {k: ast.literal_eval(v) for k, v in (item.split("=", 1) for item in args.set)}
        for name in args.configs:
            for seed in args.seeds:
                run = learning.train(name, seed, args.frames_scale, task=TASK,
                                     overrides=overrides)
                run["overrides"] = {k: str(v) for k, v in overrides.items()}
                runs = [r for r in load(path) if (r["config"], r["seed"]) != (name, seed)]
                save(path, runs + [run])
    print(report(load(path), args.out, args.tag, None if args.report_only else args.seeds))


if __name__ == "__main__":
    main()
