"""HAM decisions/s on Taxi: the Taxi HAM (get / put / navigate machines) with random choices
in a TorchRL ``Collector`` (``ham.policy`` in ``TransformedEnv(env, ham.transform)``), its
per-choice-point transitions extracted from every batch (``ham.transitions``), no learning.

    python benchmarks/ham_speed.py [--envs 1 32 256] [--ref 2689478]

``--ref`` also measures the library at that git commit ("before"): each measurement runs in
its own process, alternating between the commit (a ``git worktree`` under the system temp
dir, put first on ``PYTHONPATH``) and this checkout, so both see the same machine load.
Prints a table and saves ``results/ham_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def measure(n_envs: int, frames: int) -> dict[str, float]:
    """Env steps/s and choices/s of one collection run (warm-up batch excluded)."""
    import torch
    from torchrl.collectors import Collector
    from torchrl.envs import TransformedEnv

    from torchrl_hier.ham.taxi import make_taxi_env, q_table, taxi_ham

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    env = make_taxi_env(n_envs, seed=0)
    nav = q_table(500, 4, n_args=4, annealing_num_steps=1)  # epsilon 1 -> 0.05 at once
    nav.egreedy.step(1)
    ham = taxi_ham(env, nav.policy)
    frames_per_batch = n_envs * 16
    collector = Collector(
        TransformedEnv(env, ham.transform),
        ham.policy,
        frames_per_batch=frames_per_batch,
        total_frames=frames_per_batch * (1 + max(1, frames // frames_per_batch)),
        auto_register_policy_transforms=False,
    )
    batches = iter(collector)
    ham.transitions(next(batches))  # warm-up
    steps = choices = 0
    start = time.perf_counter()
    for batch in batches:
        steps += batch.numel()
        choices += sum(data.shape[0] for data in ham.transitions(batch).values())
    elapsed = time.perf_counter() - start
    collector.shutdown()
    return {"env_steps_per_s": steps / elapsed, "choices_per_s": choices / elapsed}


def worktree(ref: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"torchrl_hier_{ref}"
    if not path.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-f", str(path), ref],
            cwd=ROOT, check=True, capture_output=True,
        )
    return path


def in_process(source: Path, n_envs: int, frames: int) -> dict[str, float]:
    """:func:`measure` in a fresh process importing ``torchrl_hier`` from ``source``."""
    env = dict(os.environ, PYTHONPATH=f"{source}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(n_envs), str(frames)],
        cwd=tempfile.gettempdir(), env=env, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--frames", type=int, default=8_000, help="measured env steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ref", default=None, help="git commit to compare against")
    parser.add_argument("--worker", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(*args.worker)))
        return
    sources = {"now": ROOT}
    if args.ref:
        sources = {f"at {args.ref}": worktree(args.ref), **sources}
    rows = []
    for n_envs in args.envs:
        runs: dict[str, list[dict]] = {name: [] for name in sources}
        for _ in range(args.rounds):
            for name, source in sources.items():
                runs[name].append(in_process(source, n_envs, args.frames))
        row = {"envs": n_envs}
        for name, results in runs.items():
            for key in ("env_steps_per_s", "choices_per_s"):
                row[f"{key} ({name})"] = statistics.median(r[key] for r in results)
        if args.ref:
            row["ratio now / ref (choices/s)"] = statistics.median(
                n["choices_per_s"] / r["choices_per_s"]
                for n, r in zip(runs["now"], runs[f"at {args.ref}"])
            )
        rows.append(row)
        print("  ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "ham_speed.json"
    out.write_text(json.dumps({"ref": args.ref, "rounds": args.rounds, "rows": rows}, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
