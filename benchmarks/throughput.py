"""Frames/s of a 3-level hierarchy against a flat policy of equal FLOPs, in one TorchRL Collector.

The flat policy runs the same three MLPs in sequence (top -> middle -> bottom) every step; the
hierarchy runs them as three levels (each level runs every step on every instance and masks,
so the FLOPs are equal). Both are measured side by side, interleaved over several rounds, on
the batched GridMaze with 1, 16, 256 and 1024 instances. A second table splits one step of
the hierarchy into its parts.

    python benchmarks/throughput.py [--device cuda] [--sizes 1 16 256 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import Unbounded
from torchrl.envs import TransformedEnv
from torchrl.modules import MLP

from torchrl_hier import Hierarchy, Level, Timeout
from torchrl_hier.envs import GridMaze

HIDDEN = [64, 64]
SKILL = 8
RESULTS = Path(__file__).parent / "results"


class ArgmaxMLP(nn.Module):
    """An MLP whose greedy output is a discrete action."""

    def __init__(self, in_features: int, n_actions: int):
        super().__init__()
        self.mlp = MLP(in_features=in_features, out_features=n_actions, num_cells=HIDDEN)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.mlp(*inputs).argmax(-1)


def make_nets(obs_dim: int, n_actions: int) -> list[nn.Module]:
    return [
        MLP(in_features=obs_dim, out_features=SKILL, num_cells=HIDDEN),
        MLP(in_features=obs_dim + SKILL, out_features=SKILL, num_cells=HIDDEN),
        ArgmaxMLP(obs_dim + SKILL, n_actions),
    ]


def hierarchy_setup(env: GridMaze, device: str):
    top, middle, bottom = (net.to(device) for net in make_nets(4, 4))
    levels = [
        Level("top", TensorDictModule(top, ["observation"], ["action"]), Unbounded(SKILL)),
        Level(
            "middle",
            TensorDictModule(middle, ["observation", "parent_action"], ["action"]),
            Unbounded(SKILL),
            control=Timeout(2),
        ),
        Level(
            "bottom",
            TensorDictModule(bottom, ["observation", "parent_action"], ["action"]),
            control=Timeout(4),
        ),
    ]
    hierarchy = Hierarchy(levels, env, device=device)
    return TransformedEnv(env, hierarchy.transform), hierarchy.policy


def flat_setup(env: GridMaze, device: str):
    top, middle, bottom = (net.to(device) for net in make_nets(4, 4))
    policy = TensorDictSequential(
        TensorDictModule(top, ["observation"], ["skill"]),
        TensorDictModule(middle, ["observation", "skill"], ["subskill"]),
        TensorDictModule(bottom, ["observation", "subskill"], ["action"]),
    )
    return env, policy


def frames_per_second(setup, n_envs: int, steps: int, device: str) -> float:
    env = GridMaze(batch_size=[n_envs], max_steps=50, device=device, seed=0)
    env, policy = setup(env, device)
    frames_per_batch = n_envs * 25
    collector = Collector(
        env,
        policy,
        frames_per_batch=frames_per_batch,
        total_frames=frames_per_batch * (1 + max(1, steps // 25)),
        device=device,
        auto_register_policy_transforms=False,
    )
    batches = iter(collector)
    next(batches)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    frames = sum(batch.numel() for batch in batches)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    collector.shutdown()
    return frames / elapsed


def step_breakdown(n_envs: int, device: str, number: int = 300) -> dict[str, float]:
    """Microseconds per call of each part of one hierarchy step."""
    env = GridMaze(batch_size=[n_envs], max_steps=50, device=device, seed=0)
    env, policy = hierarchy_setup(env, device)
    td = env.reset()
    with torch.no_grad():
        policy(td)
        stepped = env.step(td.clone())
        transform = env.transform

        def sync():
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        def timed(fn) -> float:
            fn()
            sync()
            start = time.perf_counter()
            for _ in range(number):
                fn()
            sync()
            return (time.perf_counter() - start) / number * 1e6

        next_td = stepped["next"]
        clone_cost = timed(next_td.clone)
        _, flat_policy = flat_setup(env, device)
        return {
            "hierarchy policy (forward pass)": timed(lambda: policy(td)),
            "flat policy (same 3 MLPs)": timed(lambda: flat_policy(td.clone())),
            "transform step (backward pass)": timed(lambda: transform._step(td, next_td.clone()))
            - clone_cost,
            "base env step": timed(lambda: env.base_env._step(td)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 256, 1024])
    parser.add_argument("--steps", type=int, default=200, help="measured env steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats per size")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for n_envs in args.sizes:
        flat, hier = [], []
        for _ in range(args.rounds):
            flat.append(frames_per_second(flat_setup, n_envs, args.steps, args.device))
            hier.append(frames_per_second(hierarchy_setup, n_envs, args.steps, args.device))
        ratios = [h / f for h, f in zip(hier, flat)]
        row = {
            "envs": n_envs,
            "flat_fps": statistics.median(flat),
            "hierarchy_fps": statistics.median(hier),
            "ratio": statistics.median(ratios),
        }
        rows.append(row)
        print(
            f"{n_envs:5d} envs  flat {row['flat_fps']:10.0f} f/s  hierarchy "
            f"{row['hierarchy_fps']:10.0f} f/s  ratio {row['ratio']:.2f}",
            flush=True,
        )
    by_size = {row["envs"]: row for row in rows}
    scaling = None
    if 1 in by_size and max(by_size) > 1:
        scaling = by_size[max(by_size)]["hierarchy_fps"] / by_size[1]["hierarchy_fps"]
        print(f"hierarchy frames/s at {max(by_size)} envs / at 1 env: {scaling:.0f}x")
    breakdown_size = 256 if 256 in by_size else max(by_size)
    breakdown = step_breakdown(breakdown_size, args.device)
    print(f"\none hierarchy step at {breakdown_size} envs (microseconds per call):")
    for name, micros in breakdown.items():
        print(f"  {name:40s} {micros:8.0f}")

    result = {
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "torch_threads": args.threads,
        "rows": rows,
        "scaling_max_over_1": scaling,
        "breakdown_envs": breakdown_size,
        "breakdown_us": breakdown,
    }
    out = args.out or RESULTS / f"throughput_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
