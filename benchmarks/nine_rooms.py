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
at each checkpoint in ``<tag>.md`` and a plot of the mean with its 95 % bootstrap band (with
3 seeds: from the lowest to the highest seed) in ``<tag>.png``. Hyperparameters were chosen on seed 100; the reported seeds are 0, 1, 2.
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


def report(runs: list[dict], out: Path, tag: str, seeds: list[int] | None) -> str:
    text = table(runs, seeds)
    (out / f"{tag}.md").write_text(text)
    # learning.py's plot: the mean and its 95 % bootstrap band, which with 3 seeds spans the
    # seeds' lowest to highest value
    learning.plot([r for r in runs if seeds is None or r["seed"] in seeds], "grid",
                  out / f"{tag}.png")
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
    parser.add_argument("--merge", nargs="*", default=[], metavar="TAG",
                        help="with --report-only: first add the runs of <out>/<TAG>.json")
    args = parser.parse_args()
    path = args.out / f"{args.tag}.json"
    if args.report_only and args.merge:
        runs = load(path)
        for tag in args.merge:
            extra = load(args.out / f"{tag}.json")
            keys = {(r["config"], r["seed"]) for r in extra}
            runs = [r for r in runs if (r["config"], r["seed"]) not in keys] + extra
        save(path, runs)
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
