"""End-of-run artefacts: the learning-curve PNG and the summary (``summary.json``/``summary.md``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["smoothed", "plot_learning_curve", "write_summary", "window_rate"]


def window_rate(
    history: Sequence[Mapping[str, Any]], key: str, fraction: float, last: bool, start: int = 0
) -> float | None:
    """The per-episode mean of ``key`` (``success_sum``/``return_sum``) over the first or last
    ``fraction`` of the batches that ended episodes after ``start`` frames."""
    rows = [
        h for h in history
        if h.get("episodes", 0) > 0 and h.get(key) is not None and h["frames"] > start
    ]
    if not rows:
        return None
    n = max(1, int(round(len(rows) * fraction)))
    rows = rows[-n:] if last else rows[:n]
    episodes = sum(h["episodes"] for h in rows)
    return float(sum(h[key] for h in rows) / episodes)


def smoothed(
    history: Sequence[Mapping[str, Any]], key: str, window: int, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Frames and an episode-weighted moving average of ``key`` over ``window`` batches,
    from ``start`` frames on."""
    rows = [h for h in history if h.get(key) is not None and h["frames"] > start]
    if not rows:
        return np.zeros(0), np.zeros(0)
    frames = np.array([h["frames"] for h in rows], dtype=float)
    sums = np.array([h[key] for h in rows], dtype=float)
    counts = np.array([h["episodes"] for h in rows], dtype=float)
    kernel = np.ones(max(1, window))
    num = np.convolve(sums, kernel)[: len(sums)]
    den = np.convolve(counts, kernel)[: len(counts)]
    keep = den > 0
    return frames[keep], num[keep] / den[keep]


def plot_learning_curve(
    history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "", start: int = 0
) -> Path:
    """Success rate (or return) while training, greedy evaluations, and each level's loss.

    The training curve starts after ``start`` frames: before every env instance could have
    finished an episode, the episodes that ended are the short, successful ones.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    window = max(1, len(history) // 15)
    has_success = any(h.get("success_sum") is not None for h in history)
    key, label = ("success_sum", "success rate") if has_success else ("return_sum", "episode return")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    frames, values = smoothed(history, key, window, start)
    top.plot(frames, values, label=f"training (exploring), {window}-batch average")
    evals = [h for h in history if h.get("eval") is not None]
    eval_key = "success_rate" if has_success else "return_mean"
    if evals:
        top.plot(
            [h["frames"] for h in evals], [h["eval"][eval_key] for h in evals], "o-",
            label="evaluation (deterministic)",
        )
    baseline = next((h["baseline"] for h in history if h.get("baseline") is not None), None)
    if baseline is not None and baseline.get(eval_key) is not None:
        top.axhline(
            baseline[eval_key], color="gray", ls="--", lw=1,
            label="untrained policy, exploring (random baseline)",
        )
    top.set_ylabel(label)
    top.grid(alpha=0.3)
    top.legend(loc="best")
    top.set_title(title)
    levels = sorted({name for h in history for name in h.get("losses", {})})
    for name in levels:
        rows = [(h["frames"], h["losses"][name]) for h in history if name in h.get("losses", {})]
        terms = sorted({k for _, logs in rows for k in logs if k.startswith("loss")})
        for term in terms:
            xs = [f for f, logs in rows if term in logs]
            ys = [abs(logs[term]) for _, logs in rows if term in logs]
            bottom.plot(xs, ys, label=f"{name}/{term}", lw=1)
    if levels:
        bottom.set_yscale("log")
        bottom.legend(loc="best", fontsize="small")
    bottom.set_ylabel("|loss|")
    bottom.set_xlabel("env frames")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _flat_note(flat: Mapping[str, Any]) -> str:
    """Where the flat agent stands on the task: the task config's ``baseline_flat`` (its greedy
    success, ``{mean, min, max}`` over ``seeds``, at ``total_frames``; how it was measured)."""
    success = flat.get("success_rate")
    if isinstance(success, Mapping):
        success = f"{_fmt(success.get('mean'))} (min {_fmt(success.get('min'))}, max {_fmt(success.get('max'))})"
    seeds = flat.get("seeds")
    line = (
        f"Flat baseline on this task: `hierarchy={flat.get('hierarchy', 'flat')}"
        + (f" {flat['overrides']}" if flat.get("overrides") else "")
        + f"` reaches greedy success {_fmt(success)}"
        + (f" over seeds {', '.join(map(str, seeds))}" if seeds else "")
        + f" at {_fmt(flat.get('total_frames'))} frames"
    )
    return line + (f"; {flat['note']}" if flat.get("note") else "") + "."


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_summary(run_dir: str | Path, summary: Mapping[str, Any]) -> tuple[Path, Path]:
    """Writes ``summary.json`` and a short ``summary.md`` table in ``run_dir``."""
    run_dir = Path(run_dir)
    json_path = run_dir / "summary.json"
    json_path.write_text(json.dumps(summary, indent=2, default=str))
    lines = [
        f"# {summary.get('task')} / {summary.get('hierarchy')} (seed {summary.get('seed')})",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in (
        "frames", "wall_time_s", "frames_per_s", "train_success_first", "train_success_last",
        "train_return_first", "train_return_last",
    ):
        lines.append(f"| {key} | {_fmt(summary.get(key))} |")
    for key, value in (summary.get("eval") or {}).items():
        lines.append(f"| eval.{key} | {_fmt(value)} |")
    baseline = summary.get("baseline_exploring") or {}
    for key in ("success_rate", "return_mean"):
        if key in baseline:
            lines.append(f"| baseline (untrained, exploring).{key} | {_fmt(baseline[key])} |")
    for name, level in (summary.get("levels") or {}).items():
        own = " (frozen: no learner of its own)" if level.get("frozen") else ""
        lines.append(
            f"| level {name} | {level['transitions']} transitions, {level['updates']} updates{own} |"
        )
    flat = summary.get("baseline_flat")
    if flat:
        lines += ["", _flat_note(flat)]
    lines += ["", "![learning curve](learning_curve.png)", ""]
    md_path = run_dir / "summary.md"
    md_path.write_text("\n".join(lines))
    return json_path, md_path
