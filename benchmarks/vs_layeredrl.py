"""Env steps/s of ``torchrl_hier.layered`` against LayeredRL itself, side by side in one process.

Setting (issue 10): the manual loop of the LayeredRL docs (``get_action`` -> numpy ->
``env.step`` -> ``process_transition`` -> ``learn``, with gymnasium 1.x's ``final_obs``) on
CartPole-v1 in a gymnasium ``SyncVectorEnv`` with ``SAME_STEP`` autoreset, random levels, each
level below the top handing control back after 5 of its own steps, for 1, 2 and 3 levels at 1,
16 and 256 env instances. Three paths per config:

* ``torchrl_hier``: ``torchrl_hier.layered.RandomHierarchy`` (1 level) or
  ``torchrl_hier.layered.Hierarchy`` of ``torchrl_hier.levels.random_level`` s with
  ``Timeout(5)`` below the top, in the docs' loop.
* ``layeredrl``: ``layeredrl.hierarchies.RandomHierarchy`` (1 level) or ``Hierarchy`` of
  ``RandomLevel`` s (the ones below the top hand control back after 5 steps, as LayeredRL's
  DADS/SPlaTES levels do with ``control_interval``), in the same loop (the same function).
* ``torchrl``: the same torchrl_hier levels as ``torchrl_hier.Hierarchy`` in a TorchRL
  ``Collector`` (ex-``SyncDataCollector``) over ``TransformedEnv(GymWrapper(SyncVectorEnv(...,
  autoreset_mode=DISABLED)), hierarchy.transform)``; batches of 32 vector steps, transitions
  not extracted (neither manual loop stores any: random levels have no learners).

Per config the three paths are measured in interleaved rounds of ``--steps`` vector steps each
(the order rotates each round, after one untimed warm-up round), ``torch.set_num_threads(1)``;
the table shows median env steps/s (vector steps x instances per second) and the median over
rounds of the per-round ratio torchrl_hier / LayeredRL. Both hierarchies make the same decisions:
per level, their transition counts agree to within the randomness of the episodes.

LayeredRL's indexing bug: with 3 or more levels, ``Hierarchy.process_transition`` indexes the
full-size ``active_level`` and ``n_steps_in_control`` with masks over the *active* instances
only, so it raises ``IndexError`` as soon as a middle level is active in some but not all of
>= 2 instances. For those configs (and only those) this script runs a fixed copy of that method,
made at run time from LayeredRL's own source by replacing exactly two lines (``FIXES``):
``self.active_level[rc_or_term_or_trunc] = i - 1`` and
``self.levels[i].n_steps_in_control[return_control_or_terminated] = 0`` index with
``active_instances.nonzero().squeeze(-1)[mask]`` instead of ``mask``. ``--unpatched`` runs
LayeredRL as it is (those configs are then reported as crashing).

LayeredRL is not on PyPI and needs old deps (tianshou 0.5.1), so it runs from a scratch venv
outside the repo that has the pinned torch stack, LayeredRL (commit 37111d3538e1 of
github.com/nicoguertler/layeredrl, ``--no-deps``) and this repo (editable, ``--no-deps``)::

    git clone https://github.com/nicoguertler/layeredrl /tmp/layeredrl_src  # or unpack a copy
    git -C /tmp/layeredrl_src checkout 37111d3538e1
    python3 -m venv /tmp/lrl_venv
    /tmp/lrl_venv/bin/pip install torch==2.13.0 torchrl==0.14.1 tensordict==0.14.3 \\
        gymnasium==1.4.0 tensorboard pyyaml h5py numba pettingzoo tqdm scipy wandb moviepy \\
        hydra-core colorednoise matplotlib
    /tmp/lrl_venv/bin/pip install --no-deps tianshou==0.5.1 /tmp/layeredrl_src
    /tmp/lrl_venv/bin/pip install --no-deps -e .        # from the repo root

    /tmp/lrl_venv/bin/python benchmarks/vs_layeredrl.py [--levels 1 2 3] [--instances 1 16 256]
        [--steps 500] [--rounds 5] [--unpatched] [--out benchmarks/results/vs_layeredrl.json]
    /tmp/lrl_venv/bin/python benchmarks/vs_layeredrl.py --profile --levels 3 --instances 1

The editable install measures this working tree; to measure another checkout of torchrl_hier
(e.g. a clean clone of a commit), put it first: ``PYTHONPATH=/path/to/checkout``. The JSON
records the commit of the checkout that was imported (``+dirty`` if its ``torchrl_hier/`` has
uncommitted changes). ``--profile [torchrl_hier|layeredrl]`` prints a cProfile summary (top 25
by cumulative time) of that library's manual loop for each selected config instead of
benchmarking.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import inspect
import json
import math
import platform
import pstats
import statistics
import subprocess
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode
from torchrl.collectors import Collector
from torchrl.data import Categorical
from torchrl.envs import GymWrapper, TransformedEnv

import torchrl_hier
from torchrl_hier import Hierarchy as EngineHierarchy
from torchrl_hier import Level, Timeout
from torchrl_hier.layered import Hierarchy, RandomHierarchy
from torchrl_hier.levels import random_level

try:
    import layeredrl
    import layeredrl.hierarchies as lrl
    from layeredrl.levels import RandomLevel
except ImportError as err:
    raise SystemExit(
        f"LayeredRL is not importable ({err}). Run this script with the python of the scratch "
        f"venv whose set-up commands are at the top of {__file__}."
    ) from err

ENV_ID = "CartPole-v1"
N_OPTIONS = 3  # the action space of every level above the lowest
TIMEOUT = 5  # each level below the top hands control back after this many of its steps
COLLECTOR_BATCH = 32  # vector steps per Collector batch
WARMUP_STEPS = 20  # vector steps of the untimed warm-up of each path
PATHS = ("torchrl_hier", "layeredrl", "torchrl")
RESULTS = Path(__file__).parent / "results"
FIXES = {
    "self.active_level[rc_or_term_or_trunc] = i - 1": (
        "self.active_level[active_instances.nonzero().squeeze(-1)[rc_or_term_or_trunc]] = i - 1"
    ),
    "self.levels[i].n_steps_in_control[return_control_or_terminated] = 0": (
        "self.levels[i].n_steps_in_control["
        "active_instances.nonzero().squeeze(-1)[return_control_or_terminated]] = 0"
    ),
}


# ----------------------------------------------------------------------------- LayeredRL side
class TimeoutRandomLevel(RandomLevel):
    """LayeredRL's ``RandomLevel`` with an input space (so a level can sit above it) that hands
    control back after ``timeout`` of its steps (the ``control_interval`` rule of LayeredRL's
    DADS and SPlaTES levels)."""

    def __init__(self, timeout: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.timeout = timeout

    def get_input_space(self) -> gym.Space:
        return gym.spaces.Discrete(N_OPTIONS)

    def process_transition(
        self,
        mapped_env_obs: torch.Tensor,
        level_input: torch.Tensor | None,
        action: torch.Tensor,
        next_mapped_env_obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        active_instances: torch.Tensor,
    ) -> torch.Tensor:
        expired = self.n_steps_in_control[active_instances] + 1 >= self.timeout
        super().process_transition(
            mapped_env_obs, level_input, action, next_mapped_env_obs, terminated, truncated,
            active_instances,
        )
        return expired


def fixed_process_transition() -> Callable:
    """LayeredRL's ``Hierarchy.process_transition`` with the two ``FIXES`` applied to its source."""
    source = textwrap.dedent(inspect.getsource(lrl.Hierarchy.process_transition))
    for bug, fix in FIXES.items():
        if source.count(bug) != 1:
            raise RuntimeError(f"LayeredRL's process_transition changed: {bug!r} not found once.")
        source = source.replace(bug, fix)
    namespace: dict[str, Any] = {}
    module = inspect.getmodule(lrl.Hierarchy)
    exec(compile(source, "<LayeredRL process_transition, fixed>", "exec"), vars(module).copy(), namespace)
    return namespace["process_transition"]


def layeredrl_hierarchy(env: gym.vector.VectorEnv, n_levels: int, patch: bool) -> lrl.Hierarchy:
    """LayeredRL's hierarchy for a config; ``patch`` runs the fixed ``process_transition``."""
    if n_levels == 1:
        return lrl.RandomHierarchy(env, torch.device("cpu"))
    levels = [RandomLevel()] + [TimeoutRandomLevel(TIMEOUT) for _ in range(n_levels - 1)]
    hierarchy = lrl.Hierarchy(levels, env)
    if patch:
        hierarchy.process_transition = fixed_process_transition().__get__(hierarchy)
    return hierarchy


# ----------------------------------------------------------------------------- torchrl_hier side
def torchrl_hier_levels(n_levels: int, action_spec: Categorical) -> list[Level]:
    """Random levels, highest first, the lowest acting in ``action_spec``; every level below the
    top has ``Timeout(TIMEOUT)``."""
    levels = [
        random_level(f"level{i}", Categorical(N_OPTIONS), Timeout(TIMEOUT) if i else None)
        for i in range(n_levels - 1)
    ]
    control = Timeout(TIMEOUT) if n_levels > 1 else None
    levels.append(random_level(f"level{n_levels - 1}", action_spec, control, lowest=True))
    return levels


def torchrl_hier_hierarchy(env: gym.vector.VectorEnv, n_levels: int) -> Hierarchy:
    """torchrl_hier's LayeredRL-style hierarchy for a config."""
    if n_levels == 1:
        return RandomHierarchy(env)
    levels = torchrl_hier_levels(n_levels, Categorical(env.single_action_space.n))
    return Hierarchy(levels, env, keep_params=True)


# ----------------------------------------------------------------------------- measurements
def vector_env(n: int, mode: AutoresetMode) -> gym.vector.VectorEnv:
    """``n`` CartPoles in a gymnasium ``SyncVectorEnv`` (as the LayeredRL docs make it)."""
    return gym.make_vec(
        ENV_ID, num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}
    )


def manual_loop(hierarchy: Any, env: gym.vector.VectorEnv, n_vec_steps: int, seed: int) -> float:
    """Env steps/s of the LayeredRL docs' loop (gymnasium 1.x ``final_obs``)."""
    obs, info = env.reset(seed=seed)
    hierarchy.train()
    hierarchy.reset()
    start = time.perf_counter()
    for _ in range(n_vec_steps):
        with torch.no_grad():
            action = hierarchy.get_action(obs)
        action = action.cpu().numpy()
        obs_next, reward, terminated, truncated, info = env.step(action)
        if "_final_obs" in info:
            obs_next_transition = obs_next.copy()
            for i, env_final_obs in enumerate(info["final_obs"]):
                if env_final_obs is not None:
                    obs_next_transition[i] = env_final_obs
        else:
            obs_next_transition = obs_next
        hierarchy.process_transition(
            obs_next=obs_next_transition, rew=reward, terminated=terminated, truncated=truncated
        )
        hierarchy.learn()
        obs = obs_next
    return n_vec_steps * env.num_envs / (time.perf_counter() - start)


class ManualPath:
    """One library's hierarchy in the docs' loop on its own SAME_STEP vector env."""

    def __init__(self, build: Callable[[gym.vector.VectorEnv], Any], n: int):
        self.env = vector_env(n, AutoresetMode.SAME_STEP)
        self.hierarchy = build(self.env)
        self.seed = 0

    def measure(self, n_vec_steps: int) -> float:
        self.seed += 1
        return manual_loop(self.hierarchy, self.env, n_vec_steps, self.seed)


class CollectorPath:
    """The torchrl_hier levels as ``torchrl_hier.Hierarchy`` in a TorchRL ``Collector``."""

    def __init__(self, n_levels: int, n: int):
        base = GymWrapper(vector_env(n, AutoresetMode.DISABLED), categorical_action_encoding=True)
        hierarchy = EngineHierarchy(torchrl_hier_levels(n_levels, base.action_spec_unbatched), base)
        env = TransformedEnv(base, hierarchy.transform)
        env.set_seed(0)
        self.collector = Collector(
            env,
            hierarchy.policy,
            frames_per_batch=n * COLLECTOR_BATCH,
            total_frames=-1,
            auto_register_policy_transforms=False,
        )
        self.batches = iter(self.collector)

    def measure(self, n_vec_steps: int) -> float:
        frames = 0
        start = time.perf_counter()
        for _ in range(math.ceil(n_vec_steps / COLLECTOR_BATCH)):
            frames += next(self.batches).numel()
        return frames / (time.perf_counter() - start)


def run_config(n_levels: int, n: int, steps: int, rounds: int, patch: bool) -> dict[str, Any]:
    """Interleaved rounds of the three paths for one config (``steps`` vector steps each)."""
    patched = patch and n_levels >= 3 and n >= 2
    paths = {
        "torchrl_hier": ManualPath(lambda env: torchrl_hier_hierarchy(env, n_levels), n),
        "layeredrl": ManualPath(lambda env: layeredrl_hierarchy(env, n_levels, patched), n),
        "torchrl": CollectorPath(n_levels, n),
    }
    fps: dict[str, list[float]] = {name: [] for name in PATHS}
    crashed: dict[str, str] = {}
    for r in range(-1, rounds):  # round -1 is the warm-up
        order = PATHS[r % len(PATHS):] + PATHS[: r % len(PATHS)]
        for name in order:
            if name in crashed:
                continue
            try:
                value = paths[name].measure(WARMUP_STEPS if r < 0 else steps)
            except Exception as err:  # LayeredRL's indexing bug, with --unpatched
                crashed[name] = f"{type(err).__name__}: {err}"
                continue
            if r >= 0:
                fps[name].append(value)
    paths["torchrl"].collector.shutdown()
    row: dict[str, Any] = {
        "levels": n_levels,
        "instances": n,
        "layeredrl_patched": patched,
        "crashed": crashed,
        "env_steps_per_s": fps,
    }
    for name in PATHS:
        row[name] = statistics.median(fps[name]) if fps[name] else None
    for num in ("torchrl_hier", "torchrl"):
        ratios = [a / b for a, b in zip(fps[num], fps["layeredrl"])]
        row[f"{num}_over_layeredrl"] = statistics.median(ratios) if ratios else None
    return row


def profile(library: str, n_levels: int, n: int, steps: int) -> None:
    """Prints the top 25 functions by cumulative time of one library's manual loop."""
    if library == "torchrl_hier":
        path = ManualPath(lambda env: torchrl_hier_hierarchy(env, n_levels), n)
    else:
        path = ManualPath(lambda env: layeredrl_hierarchy(env, n_levels, n_levels >= 3 and n >= 2), n)
    path.measure(WARMUP_STEPS)
    profiler = cProfile.Profile()
    profiler.runcall(path.measure, steps)
    print(f"\n## cProfile: {library}, {n_levels} level(s), {n} instance(s), {steps} vector steps")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


# ----------------------------------------------------------------------------- report
def fmt(value: float | None, spec: str, missing: str = "crash") -> str:
    return missing if value is None else format(value, spec)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| levels | instances | torchrl_hier steps/s | LayeredRL steps/s | torchrl_hier / LayeredRL "
        "| TorchRL Collector steps/s | Collector / LayeredRL |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        mark = " (fixed)" if row["layeredrl_patched"] else ""
        lines.append(
            f"| {row['levels']} | {row['instances']} | {fmt(row['torchrl_hier'], ',.0f')} "
            f"| {fmt(row['layeredrl'], ',.0f')}{mark} | {fmt(row['torchrl_hier_over_layeredrl'], '.2f', '-')} "
            f"| {fmt(row['torchrl'], ',.0f')} | {fmt(row['torchrl_over_layeredrl'], '.2f', '-')} |"
        )
    return "\n".join(lines)


def git_commit() -> str:
    """The commit of the checkout that ``torchrl_hier`` was imported from (``+dirty`` when its
    ``torchrl_hier/`` has uncommitted changes)."""
    root = Path(torchrl_hier.__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "torchrl_hier"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument(
        "--steps", type=int, default=500,
        help="vector steps per measurement (env steps = steps x instances)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per config")
    parser.add_argument(
        "--unpatched", action="store_true",
        help="run LayeredRL without the indexing fix (3 levels at >= 2 instances then crash)",
    )
    parser.add_argument(
        "--profile", nargs="?", const="torchrl_hier", choices=["torchrl_hier", "layeredrl"],
        help="print a cProfile summary of this library's manual loop instead of benchmarking",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "vs_layeredrl.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)

    configs = [(levels, n) for levels in args.levels for n in args.instances]
    if args.profile:
        for n_levels, n in configs:
            profile(args.profile, n_levels, n, args.steps)
        return

    rows = []
    for n_levels, n in configs:
        rows.append(run_config(n_levels, n, args.steps, args.rounds, not args.unpatched))
        row = rows[-1]
        print(
            f"{n_levels} level(s) {n:4d} instances: torchrl_hier {fmt(row['torchrl_hier'], '9.0f')} "
            f"LayeredRL {fmt(row['layeredrl'], '9.0f')} Collector {fmt(row['torchrl'], '9.0f')} "
            f"steps/s, ratio {fmt(row['torchrl_hier_over_layeredrl'], '.2f')}",
            flush=True,
        )
    commit = git_commit()
    today = datetime.date.today().isoformat()
    print(f"\n{today}, torchrl_hier {commit}, LayeredRL {layeredrl.__version__}, {ENV_ID}, "
          f"median env steps/s of {args.rounds} interleaved rounds, 1 torch thread\n")
    print(markdown(rows))
    result = {
        "date": today,
        "torchrl_hier_commit": commit,
        "torchrl_hier_file": torchrl_hier.__file__,
        "layeredrl_version": layeredrl.__version__,
        "layeredrl_fixes": FIXES if not args.unpatched else {},
        "env": ENV_ID,
        "timeout": TIMEOUT,
        "steps": args.steps,
        "rounds": args.rounds,
        "torch_threads": 1,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
