"""Frames/s of a hierarchy in TorchRL's Ray collector (1 and 2 workers) against the sync collector.

The 3-level hierarchy of ``throughput.py`` (small MLPs, ``Timeout(2)``/``Timeout(4)``) on the
batched ``GridMaze`` with ``--envs`` instances in all (split across the Ray workers), batches of
``--envs x --steps`` frames. Each batch is followed by ``update_policy_weights_()``, as in
training (for Ray this is TorchRL's weight sync through the object store). Configs run in
interleaved rounds, median frames/s reported; building a collector (starting the workers) is
timed apart. Also measures what a batch carries per frame: the bytes of the hierarchy state
(the ``"hier"`` entries of root and ``"next"``) and of the whole batch.

This is a correctness-and-overhead figure on one small machine, not a scaling claim.

    python benchmarks/ray_collector.py [--envs 64] [--steps 32] [--batches 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import ray
import torch
from omegaconf import OmegaConf
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv

from throughput import hierarchy_setup
from torchrl_hier.envs import GridMaze
from torchrl_hier.experiment.ray_collector import make_ray_collector

RESULTS = Path(__file__).parent / "results"


def make_env(n_envs: int, seed: int, transform) -> TransformedEnv:
    return TransformedEnv(GridMaze(batch_size=[n_envs], max_steps=50, seed=seed), transform)


def build(kind: str, workers: int, n_envs: int, steps: int, batches: int):
    """The collector, the policy and the seconds its construction took."""
    torch.manual_seed(0)
    env, policy = hierarchy_setup(GridMaze(batch_size=[n_envs // workers], max_steps=50), "cpu")
    transform = env.transform
    frames = n_envs * steps
    start = time.perf_counter()
    if kind == "sync":
        collector = Collector(
            make_env(n_envs, 0, transform.clone()), policy, frames_per_batch=frames,
            total_frames=frames * (batches + 1), auto_register_policy_transforms=False,
        )
    else:
        factories = [
            functools.partial(make_env, n_envs // workers, i, transform.clone())
            for i in range(workers)
        ]
        collector = make_ray_collector(
            OmegaConf.create({"address": "auto"}), factories, policy, frames_per_batch=frames,
            total_frames=frames * (batches + 1), device="cpu",
        )
    return collector, time.perf_counter() - start


def measure(kind: str, workers: int, n_envs: int, steps: int, batches: int) -> dict:
    collector, build_s = build(kind, workers, n_envs, steps, batches)
    try:
        it = iter(collector)
        first = next(it)  # warm-up
        start = time.perf_counter()
        frames = 0
        for _ in range(batches):
            batch = next(it)
            frames += batch.numel()
            collector.update_policy_weights_()
        elapsed = time.perf_counter() - start
    finally:
        collector.shutdown()
    return {"fps": frames / elapsed, "build_s": build_s, "bytes": batch_bytes(first)}


def batch_bytes(batch: TensorDictBase) -> dict[str, float]:
    """Bytes per frame of the hierarchy state and of the whole batch."""
    def nbytes(td: TensorDictBase) -> int:
        return sum(t.numel() * t.element_size() for t in td.values(True, True))

    hier = nbytes(batch.get("hier")) + nbytes(batch.get(("next", "hier")))
    return {"hier_per_frame": hier / batch.numel(), "batch_per_frame": nbytes(batch) / batch.numel()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=64, help="env instances in all")
    parser.add_argument("--steps", type=int, default=32, help="steps per instance and batch")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_collector.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    configs = [("sync", 1), ("ray", 1), ("ray", 2)]
    runs: dict[str, list[dict]] = {f"{k}-{w}": [] for k, w in configs}
    for _ in range(args.rounds):
        for kind, workers in configs:
            result = measure(kind, workers, args.envs, args.steps, args.batches)
            runs[f"{kind}-{workers}"].append(result)
            print(f"{kind:4s} {workers} worker(s): {result['fps']:9.0f} frames/s "
                  f"(built in {result['build_s']:.1f} s)", flush=True)
    ray.shutdown()
    sync_fps = statistics.median(r["fps"] for r in runs["sync-1"])
    rows = []
    for name, results in runs.items():
        fps = statistics.median(r["fps"] for r in results)
        rows.append({
            "config": name, "fps": fps, "vs_sync": fps / sync_fps,
            "build_s": statistics.median(r["build_s"] for r in results),
            **results[0]["bytes"],
        })
    print("\n| collector | workers | frames/s | / sync | start-up s | hier bytes/frame | batch bytes/frame |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        kind, workers = row["config"].split("-")
        print(f"| {kind} | {workers} | {row['fps']:,.0f} | {row['vs_sync']:.2f} | "
              f"{row['build_s']:.1f} | {row['hier_per_frame']:.0f} | {row['batch_per_frame']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "envs": args.envs, "steps": args.steps, "rows": rows,
    }, indent=2))
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
