"""Seed-aggregated report of a Hydra sweep: ``python -m torchrl_hier.report <multirun dir>``.

Reads every run under the directory (a folder with ``summary.json``, as ``torchrl_hier.train``
writes), groups the runs by their config minus the seed, and writes into ``<dir>/report/``
(or ``--out``):

- ``report.png``: per group, the mean learning curve across seeds with a 95 % bootstrap
  confidence interval (greedy evaluations from the runs' CSV logs; success rate and return);
- ``report.md``: a table of the final success rate and return per group: mean, interquartile
  mean (IQM) and their bootstrap confidence intervals, as ``rliable`` reports them;
- ``report.json``: every number above, with each group's seeds and run directories.

The bootstrap resamples whole runs (seeds) with replacement, the same runs at every point of a
curve, and takes percentile intervals. It is written with numpy: ``rliable`` would pull pandas,
scipy, statsmodels, arch and seaborn into the environment for these few lines, and with pandas
installed tensordict imports it on every module output.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ReportError",
    "Run",
    "Group",
    "iqm",
    "bootstrap_ci",
    "find_runs",
    "group_runs",
    "aggregate",
    "markdown_table",
    "plot_report",
    "write_report",
    "main",
]

#: Config keys that say where a run writes or how it prints, not what it trains: runs that
#: differ only in these (and the seed) belong to one group.
IGNORED_KEYS = ("seed", "run_dir", "resume", "progress")

#: Curves drawn from each run's CSV logs: ``(metric, CSV path under scalars/, y label)``.
#: Greedy evaluations when the runs have them, else the training episodes (exploring).
EVAL_CURVES = (("success", "eval/success_rate", "greedy success rate"),
               ("return", "eval/return", "greedy episode return"))
TRAIN_CURVES = (("success", "train/success_rate", "training success rate (exploring)"),
                ("return", "train/episode_return", "training episode return (exploring)"))


class ReportError(ValueError):
    """A sweep directory the report cannot read; the message says what is missing."""


@dataclass
class Run:
    """One training run: its directory, seed, config (without the ignored keys), the
    command-line overrides it was started with, its summary and its CSV curves."""

    path: Path
    seed: int
    config: dict[str, Any]
    overrides: list[str]
    summary: dict[str, Any]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class Group:
    """Runs of one config that differ only in their seed, under a short label."""

    label: str
    runs: list[Run]


# ----------------------------------------------------------------------------- statistics
def iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean along ``axis``: the mean of the middle 50 % of the values (the
    lowest and highest ``floor(n / 4)`` dropped), as ``scipy.stats.trim_mean(x, 0.25)`` and
    rliable compute it."""
    values = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = values.shape[axis]
    cut = int(0.25 * n)
    return np.take(values, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def _mean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.asarray(values, dtype=float).mean(axis=axis)


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray, int], np.ndarray] = _mean,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``statistic`` over the runs (axis 0 of ``values``,
    shape ``[runs, *points]``): each resample draws runs with replacement and keeps each run's
    values at every point together. Returns ``(low, high)`` of shape ``points``; a single run
    gives the value itself. ``statistic(samples, axis)`` reduces one axis (mean, :func:`iqm`).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1 (e.g. 0.95).")
    values = np.asarray(values, dtype=float)
    if values.ndim == 0 or values.shape[0] == 0:
        raise ValueError("bootstrap_ci needs at least one run (values of shape [runs, ...]).")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, values.shape[0], size=(n_boot, values.shape[0]))
    flat = values.reshape(values.shape[0], -1)
    low, high = np.empty(flat.shape[1]), np.empty(flat.shape[1])
    alpha = 100 * (1 - confidence) / 2
    chunk = max(1, 2**22 // (n_boot * values.shape[0]))  # bounds the resamples' memory
    for start in range(0, flat.shape[1], chunk):
        stats = statistic(flat[index, start:start + chunk], 1)  # [n_boot, points in chunk]
        low[start:start + chunk], high[start:start + chunk] = np.percentile(
            stats, [alpha, 100 - alpha], axis=0
        )
    return low.reshape(values.shape[1:]), high.reshape(values.shape[1:])


# ----------------------------------------------------------------------------- reading runs
def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A TorchRL ``CSVLogger`` scalar file (``step,value`` rows, steps in env frames) as sorted
    steps and values; a step logged twice keeps its last value (the final evaluation repeats
    the last one)."""
    rows: dict[int, float] = {}
    with path.open(newline="") as file:
        for row in csv.reader(file):
            if row:
                rows[int(float(row[0]))] = float(row[1])
    steps = np.array(sorted(rows))
    return steps, np.array([rows[s] for s in steps])


def _load_run(path: Path) -> Run:
    from omegaconf import OmegaConf

    config_file = next((f for f in (path / "config.yaml", path / ".hydra" / "config.yaml")
                        if f.exists()), None)
    if config_file is None:
        raise ReportError(
            f"{path} has a summary.json but no config.yaml: it is not a torchrl_hier.train run "
            "directory, or it was not copied whole. Pass the sweep directory Hydra wrote."
        )
    config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
    summary = json.loads((path / "summary.json").read_text())
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
    scalars = path / str(config.get("logger", {}).get("exp_name", "logs")) / "scalars"
    curves = {}
    for _, name, _ in (*EVAL_CURVES, *TRAIN_CURVES):
        file = scalars / f"{name}.csv"
        if file.exists():
            curves[name] = _read_csv(file)
    flat = {k: v for k, v in _flatten(config).items() if k not in IGNORED_KEYS}
    return Run(path, int(config.get("seed", summary.get("seed", 0))), flat,
               [o for o in overrides if o.split("=", 1)[0] not in IGNORED_KEYS], summary, curves)


def find_runs(root: str | Path) -> list[Run]:
    """Every run under ``root`` (folders with ``summary.json``, at any depth, so a
    ``multirun/`` folder of several sweeps works too), except the continuations that
    ``resume=`` writes into ``<run>/resumed/``: report one of those by passing its folder."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory: pass the folder of a Hydra sweep "
                          "(hydra.sweep.dir, by default multirun/<date>/<time>).")
    paths = sorted(
        file.parent for file in root.rglob("summary.json")
        if "resumed" not in file.parent.relative_to(root).parts
    )
    if not paths:
        raise ReportError(
            f"No runs under {root}: no folder there has a summary.json. A run writes it when it "
            "finishes; start a sweep with `python -m torchrl_hier.train -m seed=0,1,2` and pass "
            "its directory."
        )
    return [_load_run(path) for path in paths]


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Groups runs whose configs are equal once the seed (and :data:`IGNORED_KEYS`) is
    dropped. A group's label is its command-line overrides without those every group shares
    (else its task and hierarchy). Two runs of one group with the same seed are refused."""
    by_config: dict[str, list[Run]] = {}
    for run in runs:
        by_config.setdefault(json.dumps(run.config, sort_keys=True, default=str), []).append(run)
    groups = [sorted(members, key=lambda r: r.seed) for members in by_config.values()]
    for members in groups:
        seeds = [r.seed for r in members]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            paths = [str(r.path) for r in members if r.seed in repeated]
            raise ReportError(
                f"Runs {paths} have the same config and seed {repeated}: the sweep was run twice "
                "into this folder. Pass one sweep's directory, or remove the duplicates."
            )
    shared = set.intersection(*(set(m[0].overrides) for m in groups))
    labels, bases = [], []
    for members in groups:
        own = [o for o in members[0].overrides if o not in shared]
        config = members[0].config
        bases.append(" ".join(own) or f"{config.get('task.name')} / {config.get('hierarchy.name')}")
        same = bases.count(bases[-1])  # configs that differ beyond their overrides
        labels.append(bases[-1] if same == 1 else f"{bases[-1]} #{same}")
    return sorted((Group(label, members) for label, members in zip(labels, groups)),
                  key=lambda g: g.label)


# ----------------------------------------------------------------------------- aggregating
def _interval(values: np.ndarray, confidence: float, n_boot: int) -> dict[str, Any]:
    stats = {}
    for name, fn in (("mean", _mean), ("iqm", iqm)):
        low, high = bootstrap_ci(values, fn, confidence, n_boot)
        stats[name] = float(fn(values, 0))
        stats[f"{name}_ci"] = [float(low), float(high)]
    return stats


def _final(run: Run, metric: str) -> float | None:
    """The run's final greedy evaluation (``summary.json``), else its last training window."""
    final = run.summary.get("eval")
    if final is not None:
        return final.get("success_rate" if metric == "success" else "return_mean")
    return run.summary.get("train_success_last" if metric == "success" else "train_return_last")


def _curve(runs: Sequence[Run], name: str, confidence: float, n_boot: int) -> dict | None:
    """Mean and CI across runs at the steps every run logged (None if some run lacks it)."""
    if any(name not in r.curves for r in runs):
        return None
    steps = sorted(set.intersection(*(set(r.curves[name][0].tolist()) for r in runs)))
    if not steps:
        return None
    by_step = [dict(zip(*(c.tolist() for c in r.curves[name]))) for r in runs]
    values = np.array([[points[s] for s in steps] for points in by_step])
    low, high = bootstrap_ci(values, _mean, confidence, n_boot)
    return {"frames": steps, "mean": values.mean(0).tolist(), "ci_low": low.tolist(),
            "ci_high": high.tolist(), "per_seed": values.tolist()}


def aggregate(groups: Sequence[Group], confidence: float = 0.95, n_boot: int = 10_000) -> dict:
    """The report's numbers: per group, its seeds, the final success and return (mean, IQM,
    bootstrap CIs) and the learning curves (mean and CI per logged step)."""
    every_eval = all(any(name in r.curves for _, name, _ in EVAL_CURVES)
                     for g in groups for r in g.runs)
    curves = EVAL_CURVES if every_eval else TRAIN_CURVES
    out = []
    for group in groups:
        entry: dict[str, Any] = {
            "label": group.label,
            "seeds": [r.seed for r in group.runs],
            "runs": [str(r.path) for r in group.runs],
            "frames": [r.summary.get("frames") for r in group.runs],
            "final": {},
            "curves": {},
        }
        for metric in ("success", "return"):
            finals = [_final(r, metric) for r in group.runs]
            if all(v is not None for v in finals):
                entry["final"][metric] = {"per_seed": finals,
                                          **_interval(np.array(finals), confidence, n_boot)}
        for metric, name, ylabel in curves:
            curve = _curve(group.runs, name, confidence, n_boot)
            if curve is not None:
                entry["curves"][metric] = {"source": name, "ylabel": ylabel, **curve}
        out.append(entry)
    return {"confidence": confidence, "n_boot": n_boot, "groups": out}


# ----------------------------------------------------------------------------- writing
def _cell(stats: Mapping[str, Any] | None, name: str) -> str:
    if stats is None:
        return "n/a"
    low, high = stats[f"{name}_ci"]
    return f"{stats[name]:.3g} [{low:.3g}, {high:.3g}]"


def markdown_table(report: Mapping[str, Any]) -> str:
    """The final-performance table of :func:`aggregate`'s report, in markdown."""
    pct = f"{100 * report['confidence']:g} %"
    lines = [
        f"| config | seeds | success: mean [{pct} CI] | success: IQM [CI] "
        f"| return: mean [{pct} CI] | return: IQM [CI] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for g in report["groups"]:
        success, ret = g["final"].get("success"), g["final"].get("return")
        lines.append(
            f"| {g['label']} | {len(g['seeds'])} | {_cell(success, 'mean')} "
            f"| {_cell(success, 'iqm')} | {_cell(ret, 'mean')} | {_cell(ret, 'iqm')} |"
        )
    return "\n".join(lines)


def plot_report(report: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """One panel per metric (success rate, return): each group's mean curve across seeds
    and its bootstrap confidence band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("success", "return")
               if any(m in g["curves"] for g in report["groups"])]
    if not metrics:
        raise ReportError("None of the runs logged a learning curve to plot (CSV scalars "
                          "eval/* or train/*): were they run with logger=csv?")
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.5), squeeze=False)
    pct = f"{100 * report['confidence']:g} %"
    for ax, metric in zip(axes[0], metrics):
        for g in report["groups"]:
            curve = g["curves"].get(metric)
            if curve is None:
                continue
            (line,) = ax.plot(curve["frames"], curve["mean"], marker=".",
                              label=f"{g['label']} ({len(g['seeds'])} seeds)")
            ax.fill_between(curve["frames"], curve["ci_low"], curve["ci_high"],
                            color=line.get_color(), alpha=0.2)
            ax.set_ylabel(curve["ylabel"])
        ax.set_xlabel("env frames")
        ax.set_title(f"mean over seeds, {pct} bootstrap CI")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(
    root: str | Path, out: str | Path | None = None, confidence: float = 0.95,
    n_boot: int = 10_000,
) -> dict[str, Path]:
    """Reads the sweep under ``root`` and writes ``report.json``, ``report.md`` and
    ``report.png`` into ``out`` (default ``<root>/report``); returns their paths."""
    root = Path(root)
    out = root / "report" if out is None else Path(out)
    report = aggregate(group_runs(find_runs(root)), confidence, n_boot)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "report.png"}
    plot_report(report, paths["png"], title=str(root))
    paths["json"].write_text(json.dumps(report, indent=1))
    paths["md"].write_text(
        f"# Sweep report: {root}\n\nFinal greedy evaluation of each run (its last training "
        "window where it has none), across seeds; bootstrap over seeds, "
        f"{n_boot} resamples.\n\n{markdown_table(report)}\n\n![learning curves]({paths['png'].name})\n"
    )
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m torchrl_hier.report <multirun dir> [--out DIR]``: prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a Hydra sweep's directory (hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, default=None, help="default: <sweep>/report")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples")
    args = parser.parse_args(argv)
    if not 0 < args.confidence < 1:
        parser.error(f"--confidence {args.confidence}: give a level between 0 and 1, e.g. 0.95")
    if args.n_boot < 1:
        parser.error(f"--n-boot {args.n_boot}: give a positive number of resamples")
    try:
        paths = write_report(args.sweep, args.out, args.confidence, args.n_boot)
    except ReportError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
