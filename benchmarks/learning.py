"""Learning benchmark: does a hierarchy pay on long-horizon, sparse-reward mazes?

Success rate against environment steps, on CPU, with the same env-step budget for every agent:

- ``grid-flat-dqn``: a flat TorchRL DQN (``QValueActor`` + ``EGreedyModule`` + ``DQNLoss``) on
  ``GridMaze-9Rooms`` (19x19, start and goal >= 16 steps apart, 200-step episodes, reward 1
  only on reaching the goal; coordinates rescaled to cells by ``ObservationNorm``);
- ``grid-options``: an option level (DQN over 4 options) above an option-conditioned DQN
  that runs each option for 8 steps; both learn from the env reward;
- ``grid-subgoals``: HAC-style subgoals with hindsight: a DQN subgoal level over a lattice of
  displacements (hindsight actions, hindsight goals, subgoal testing, bounded Q-values) above a
  goal-conditioned DQN (hindsight goals);
- ``grid-flat-dqn-her``: flat DQN with hindsight goals (HER), with the learner of
  ``grid-subgoals``' lower level, on the env goal;
- ``grid-subgoals-planned``: a planning top level (graph-based subgoal selection over a
  ``ReachabilityMemory`` filled from the lower level's episodes) above the same
  goal-conditioned DQN; ``grid-subgoals`` with ``reach_steps=k`` masks its DQN subgoal level
  to the subgoals seen reached within k steps instead (HRAC-style). Both are measured at 500k
  steps in ``benchmarks/nine_rooms.py``;
- ``point-flat-td3``: a flat TorchRL TD3 on ``PointMaze-Medium`` (continuous point mass,
  velocity control, 300-step episodes, reward 1 only within 0.5 cells of the goal);
- ``point-subgoals``: the same two-level HAC set-up with a TD3 level at the bottom.

Every run trains with TorchRL's ``Collector`` and evaluates greedily
(``ExplorationType.DETERMINISTIC``) on fresh episodes of a separately seeded env at fixed
checkpoints; the success rate is the fraction of those episodes that reach the goal. Each run
is one process with ``torch.set_num_threads(1)``; ``--workers`` runs that many at once.

    python benchmarks/learning.py                       # everything: 7 configs x 3 seeds
    python benchmarks/learning.py --configs grid-subgoals --seeds 0 --frames-scale 0.25

Writes ``benchmarks/results/learning.json`` (every curve), ``learning_grid.png``,
``learning_point.png`` and ``learning.md`` (a table of success at checkpoints: mean over seeds
with a 95 % bootstrap CI and the IQM, from ``torchrl_hier.report``); ``--report-only`` rewrites
the table and plots from an existing ``learning.json``.
The seeds reported are 0, 1, 2; the hyperparameters were chosen on seed 100.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor
from torchrl.collectors import Collector
from torchrl.envs import EnvBase, ObservationNorm, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_hier import Hierarchy
from torchrl_hier.envs import make_env
from torchrl_hier.learning import LevelLearner
from torchrl_hier.levels import (
    EpisodeBuffer,
    GoalReward,
    GoalSlot,
    HindsightGoals,
    LevelEpisodes,
    ReachabilityMemory,
    SubgoalSpace,
    actor_critic_head,
    anneal_exploration,
    dqn_head,
    goal_conditioned_level,
    goal_distance,
    option_conditioned_level,
    option_level,
    planned_subgoal_level,
    stream_ids,
    subgoal_level,
    subgoal_transitions,
)
from torchrl_hier.report import bootstrap_ci, iqm

RESULTS = Path(__file__).parent / "results"
INF = float("inf")


# ----------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Task:
    """A registered env plus the settings the benchmark overrides."""

    env: str
    kwargs: dict = field(default_factory=dict)
    frames: int = 200_000  # env-step budget of every agent on this task
    checkpoints: int = 10  # greedy evaluations, evenly spaced over the budget (plus one at 0)
    obs_scale: float | None = None  # multiplies the observation and goals (ObservationNorm)


TASKS: dict[str, Task] = {
    # 9 rooms of 5x5 (19x19 with walls), start and goal >= 16 steps apart, 200-step episodes,
    # reward 1 only on reaching the goal
    "grid": Task("GridMaze-9Rooms", frames=150_000, checkpoints=8, obs_scale=18.0),
    # the U-maze point mass (velocity control), reward 1 only within 0.5 cells of the goal
    "point": Task("PointMaze-Medium", frames=150_000, checkpoints=8),
}


def wide_door_rooms(rooms: int, room_size: int, door: int) -> list[str]:
    """A grid of ``rooms x rooms`` square rooms whose neighbours share a door ``door`` cells
    wide in the middle of their wall, as text rows for ``GridMaze(layout=...)``."""
    step = room_size + 1
    size = rooms * step + 1
    grid = [["#" if r % step == 0 or c % step == 0 else "." for c in range(size)]
            for r in range(size)]
    first = 1 + (room_size - door) // 2
    for k in range(1, rooms):
        for room in range(rooms):
            for d in range(first, first + door):
                grid[k * step][room * step + d] = "."  # doors in horizontal walls
                grid[room * step + d][k * step] = "."  # doors in vertical walls
    return ["".join(row) for row in grid]


def make_task_env(task: Task, batch: int, seed: int) -> EnvBase:
    """The task's env; with ``obs_scale``, its observation and goals rescaled by TorchRL's
    ``ObservationNorm`` (e.g. grid coordinates from [0, 1] to cells, which networks resolve
    far more easily than steps of 1/18)."""
    env = make_env(task.env, batch_size=batch, seed=seed, **task.kwargs)
    if task.obs_scale is None:
        return env
    keys = ["observation", "achieved_goal", "desired_goal"]
    return TransformedEnv(env, ObservationNorm(loc=0.0, scale=task.obs_scale, in_keys=keys,
                                               standard_normal=False))


def position(observation: Tensor) -> Tensor:
    """The agent's position in a maze observation (its first two entries)."""
    return observation[..., :2]


# ----------------------------------------------------------------------------- agents
@dataclass
class Agent:
    """What a run needs: the policy the collector runs, the env transform it runs in (the
    hierarchy's backward pass; ``None`` for a flat agent) and ``learn(batch) -> logs``."""

    policy: TensorDictModuleBase
    transform: Callable[[], object] | None
    learn: Callable[[TensorDictBase], dict[str, float]]

    def wrap(self, env: EnvBase) -> EnvBase:
        return env if self.transform is None else TransformedEnv(env, self.transform())


def learner(loss, gamma: float, updates_per_transition: float, **kwargs) -> LevelLearner:
    """A LevelLearner with the benchmark's common settings."""
    settings = dict(
        lr=1e-3, batch_size=512, buffer_size=200_000, target_update="soft", tau=0.01,
        max_grad_norm=10.0, warmup=2_000,
    )
    settings.update(kwargs)
    return LevelLearner(loss, gamma=gamma, update_ratio=updates_per_transition, **settings)


def flat_transitions(batch: TensorDictBase) -> TensorDictBase:
    """A flat agent's collected steps as one-step transitions (tau = 1)."""
    data = batch.reshape(-1)
    data.set("steps_to_next_obs", torch.ones(data.shape[0], 1, dtype=torch.int64))
    return data


def build_flat(env: EnvBase, hp: dict) -> Agent:
    """A flat TorchRL agent: DQN for discrete actions, TD3 for continuous ones."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    spec = env.action_spec_unbatched
    if hp["algorithm"] == "dqn":
        policy, _, loss = dqn_head(
            obs_dim, spec, hidden=hp["hidden"], gamma=hp["gamma"], eps_init=1.0,
            eps_end=hp["eps_end"], annealing_num_steps=hp["anneal"],
        )
    else:
        policy, _, loss = actor_critic_head(
            obs_dim, spec, algorithm=hp["algorithm"], hidden=hp["hidden"], gamma=hp["gamma"],
            noise_std=hp["noise_std"],
        )
    learn_ = learner(loss, hp["gamma"], hp["updates"], warmup=hp["warmup"])

    def learn(batch: TensorDictBase) -> dict[str, float]:
        learn_.extend(flat_transitions(batch))
        anneal_exploration(policy, batch.numel())
        return learn_.update()

    return Agent(policy, None, learn)


def build_flat_her(env: EnvBase, hp: dict) -> Agent:
    """A flat goal-conditioned DQN with hindsight goals (HER): the learner of a subgoal
    hierarchy's lowest level (``dqn_head``, bounded Q-values, ``HindsightGoals`` with the
    -1 / 0 goal reward), pursuing the env goal in the observation itself. Its steps are cut into
    whole episodes per env instance (``EpisodeBuffer``) so that HER can draw future goals."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    policy, _, loss = dqn_head(
        obs_dim, env.action_spec_unbatched, hidden=hp["hidden"], gamma=hp["gamma"],
        eps_init=1.0, eps_end=hp["eps_end"], annealing_num_steps=hp["anneal"],
        value_range=hp["value_range"],
    )
    space = SubgoalSpace((0, 1), 0.0, float(hp["size"]))
    her = HindsightGoals(
        GoalReward(space, hp["tolerance"], goal=GoalSlot.observation((obs_dim - 2, obs_dim - 1)),
                   reached=0.0, not_reached=-1.0, norm=hp["norm"]),
        gamma=hp["gamma"], k=hp["her_k"], level="flat",
    )
    episodes = EpisodeBuffer()
    learn_ = learner(loss, hp["gamma"], hp["updates"], warmup=hp["warmup"], tau=hp["tau"])

    def learn(batch: TensorDictBase) -> dict[str, float]:
        ready = episodes.add(flat_transitions(batch), stream_ids(batch).reshape(-1))
        learn_.extend(her(ready))
        anneal_exploration(policy, batch.numel())
        return learn_.update()

    return Agent(policy, None, learn)


def build_options(env: EnvBase, hp: dict) -> Agent:
    """Options on the grid: a DQN option level over K options above an option-conditioned DQN
    that runs each option for ``timeout`` steps; both learn from the env reward."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    k = hp["n_options"]
    top, top_loss = option_level(
        "option", obs_dim, k, hidden=hp["hidden"], gamma=hp["gamma"], eps_end=hp["eps_end"],
        annealing_num_steps=hp["anneal"] // hp["timeout"],
    )
    low, low_loss = option_conditioned_level(
        "primitive", obs_dim, k, env.action_spec_unbatched, timeout=hp["timeout"],
        hidden=hp["hidden"], gamma=hp["gamma"], eps_end=hp["eps_end"],
        annealing_num_steps=hp["anneal"],
    )
    hier = Hierarchy([top, low], env)
    learners = {
        "option": learner(top_loss, top.gamma, hp["top_updates"], warmup=hp["top_warmup"]),
        "primitive": learner(low_loss, low.gamma, hp["updates"], warmup=hp["warmup"]),
    }

    def learn(batch: TensorDictBase) -> dict[str, float]:
        logs = {}
        for name, data in hier.transitions(batch).items():
            learners[name].extend(data)
            anneal_exploration(hier.levels[hier.names.index(name)].policy, data.shape[0])
            logs.update({f"{name}/{k}": v for k, v in learners[name].update().items()})
        return logs

    return Agent(hier.policy, lambda: hier.transform, learn)


SEGMENT = "segment"


def subgoal_segments(td: TensorDictBase) -> TensorDictBase:
    """Numbers the subgoal attempts in a goal-conditioned level's whole episodes (as
    ``LevelEpisodes`` releases them): a new attempt starts with each episode and each new
    subgoal in ``parent_action``. HAC relabels a level with goals from the same attempt."""
    episode, subgoal = td.get("episode"), td.get("parent_action")
    start = torch.ones_like(episode, dtype=torch.bool)
    if episode.numel() > 1:
        start[1:] = (episode[1:] != episode[:-1]) | (subgoal[1:] != subgoal[:-1]).any(-1)
    td.set(SEGMENT, start.long().cumsum(0))
    return td


def build_subgoals(env: EnvBase, hp: dict) -> Agent:
    """HAC with two levels: a DQN subgoal level picking a displacement of the agent's position
    from a lattice (``resolution`` points per axis within ``subgoal_range``) above a
    goal-conditioned level (DQN on the grid, TD3 on the point maze) that sees only its position
    and the subgoal, and hands control back on reaching it or after ``horizon`` steps.

    Hindsight, as HAC: the level below relabels its subgoals with positions it reached later in
    the same subgoal attempt (HER "future"); the subgoal level replaces each subgoal with the
    lattice point nearest to what was actually reached (hindsight actions), relabels the env
    goal with reached positions (reward -1 per step, 0 on reaching), and learns a penalty for
    tested subgoals that were missed. Both levels' Q-values are bounded (``value_range``).
    """
    obs_dim = env.observation_spec["observation"].shape[-1]
    reach = hp["subgoal_range"]
    space = SubgoalSpace((0, 1), -reach, reach, relative=True, resolution=hp["resolution"])
    tol, norm = hp["tolerance"], hp["norm"]
    memory = None
    if hp.get("reach_steps"):  # adjacency-constrained subgoals, from the bounds of positions
        bounds = env.observation_spec["observation"].space
        memory = ReachabilityMemory(space, bounds.low[..., :2].reshape(-1, 2)[0],
                                    bounds.high[..., :2].reshape(-1, 2)[0],
                                    steps=hp["reach_steps"], tolerance=tol, norm=norm,
                                    reliability=hp.get("reliability"))
    if hp.get("planner"):  # graph-based subgoals over the memory: no top-level learner
        top = planned_subgoal_level(
            "subgoal", obs_dim, memory, (obs_dim - 2, obs_dim - 1),
            test_probability=hp["test_probability"], eps_end=hp["top_eps_end"],
            annealing_num_steps=hp["top_anneal"], norm=hp["env_norm"], gamma=hp["top_gamma"],
            env=env,
        )
    else:
        top, top_loss = subgoal_level(
            "subgoal", obs_dim, space, algorithm="dqn", test_probability=hp["test_probability"],
            hidden=hp["hidden"], gamma=hp["top_gamma"], eps_end=hp["top_eps_end"],
            annealing_num_steps=hp["top_anneal"], value_range=hp["top_value_range"], env=env,
            reachability=memory,
        )
    low, low_loss = goal_conditioned_level(
        "primitive", 2, env.action_spec_unbatched, space, tolerance=tol, norm=norm,
        horizon=hp["horizon"], hidden=hp["hidden"], gamma=hp["gamma"], eps_end=hp["eps_end"],
        annealing_num_steps=hp["anneal"], noise_std=hp["noise_std"],
        value_range=(-float(hp["horizon"]), 0.0), obs_map=position, obs_shape=(2,),
        pre_tanh_penalty=hp.get("pre_tanh_penalty", 0.0),
    )
    hier = Hierarchy([top, low], env)
    episodes = LevelEpisodes(hier)
    low_her = HindsightGoals(
        GoalReward(space, tol, norm=norm), gamma=low.gamma, k=hp["her_k"], level="primitive",
        episode_key=SEGMENT,
    )
    env_goal = GoalSlot.observation(tuple(range(obs_dim - 2, obs_dim)))
    top_her = HindsightGoals(
        GoalReward(space, hp["env_tolerance"], goal=env_goal, reached=0.0, not_reached=-1.0,
                   norm=hp["env_norm"]),
        gamma=top.gamma, k=hp["her_k"], level="subgoal",
    )
    learners = {
        "primitive": learner(low_loss, low.gamma, hp["updates"], warmup=hp["warmup"],
                             tau=hp["tau"]),
    }
    if not hp.get("planner"):
        learners["subgoal"] = learner(top_loss, top.gamma, hp["top_updates"],
                                      warmup=hp["top_warmup"])

    def learn(batch: TensorDictBase) -> dict[str, float]:
        ready = episodes.add(batch)
        if memory is not None:  # what the level below reached within reach_steps (and, with
            memory.update(ready["primitive"])  # reliability, how often it reaches its subgoals)
        anneal_exploration(low.policy, ready["primitive"].shape[0])
        anneal_exploration(top.policy, ready["subgoal"].shape[0])
        learners["primitive"].extend(low_her(subgoal_segments(ready["primitive"])).exclude(SEGMENT))
        if "subgoal" in learners:
            learners["subgoal"].extend(
                subgoal_transitions(
                    ready["subgoal"], space, tolerance=tol, norm=norm, penalty=hp["penalty"],
                    goals=top_her, level="subgoal",
                )
            )
        logs = {}
        for name, lrn in learners.items():
            logs.update({f"{name}/{k}": v for k, v in lrn.update().items()})
        sub = ready["subgoal"]
        if sub.shape[0]:  # how far subgoals are set, and how often the level below reaches them
            subgoal, tested = sub["action"][:, :2], sub["action"][:, 2] > 0.5
            start = space.achieved(sub["observation"])
            logs["subgoal_distance"] = float(goal_distance(subgoal, start, norm).mean())
            reached = GoalReward(space, tol, norm=norm).is_reached(
                space.achieved(sub["next", "observation"]), subgoal)
            logs["reached"] = float(reached.float().mean())
            if tested.any():
                logs["reached_tested"] = float(reached[tested].float().mean())
        if memory is not None:
            logs["reachable"] = float(memory.table.float().mean())
        return logs

    return Agent(hier.policy, lambda: hier.transform, learn)


@dataclass(frozen=True)
class Config:
    task: str
    build: Callable[[EnvBase, dict], Agent]
    hp: dict


CONFIGS: dict[str, Config] = {
    "grid-flat-dqn": Config(
        "grid", build_flat,
        dict(algorithm="dqn", hidden=(64, 64), gamma=0.99, eps_end=0.05, anneal=100_000,
             updates=0.1, warmup=2_000),
    ),
    "grid-flat-dqn-her": Config(  # the grid-subgoals lower level's learner, on the env goal
        "grid", build_flat_her,
        dict(hidden=(64, 64), gamma=0.98, value_range=(-50.0, 0.0), eps_end=0.05,
             anneal=20_000, tau=0.05, tolerance=0.5, norm=INF, her_k=4, size=18.0,
             updates=0.02, warmup=2_000),
    ),
    "grid-options": Config(
        "grid", build_options,
        dict(n_options=4, timeout=8, hidden=(64, 64), gamma=0.99, eps_end=0.05,
             anneal=100_000, updates=0.1, warmup=2_000, top_updates=0.5, top_warmup=500),
    ),
    "grid-subgoals": Config(  # grid units are cells (Task.obs_scale)
        "grid", build_subgoals,
        dict(hidden=(64, 64), gamma=0.95, eps_end=0.05, anneal=20_000, tau=0.05, noise_std=None,
             top_gamma=0.98, top_eps_end=0.05, top_anneal=5_000, top_value_range=(-50.0, 0.0),
             subgoal_range=3.0, resolution=7, horizon=8, tolerance=0.5, norm=INF,
             env_tolerance=0.5, env_norm=INF, her_k=4, test_probability=0.3, penalty=-50.0,
             updates=0.02, warmup=2_000, top_updates=0.1, top_warmup=500),
    ),
    "grid-subgoals-planned": Config(  # graph-based subgoals over the reachability memory
        "grid", build_subgoals,
        dict(hidden=(64, 64), gamma=0.95, eps_end=0.05, anneal=20_000, tau=0.05, noise_std=None,
             top_gamma=0.98, top_eps_end=0.05, top_anneal=5_000, subgoal_range=3.0,
             resolution=7, horizon=8, tolerance=0.5, norm=INF, env_tolerance=0.5, env_norm=INF,
             her_k=4, test_probability=0.3, updates=0.02, warmup=2_000, reach_steps=3,
             reliability=0.2, planner=True),
    ),
    "point-subgoals": Config(
        "point", build_subgoals,
        dict(hidden=(64, 64), gamma=0.95, eps_end=None, anneal=50_000, tau=0.05, noise_std=0.2,
             top_gamma=0.98, top_eps_end=0.05, top_anneal=5_000, top_value_range=(-50.0, 0.0),
             subgoal_range=1.5, resolution=7, horizon=12, tolerance=0.3, norm=2.0,
             env_tolerance=0.5, env_norm=2.0, her_k=4, test_probability=0.3, penalty=-50.0,
             updates=0.02, warmup=2_000, top_updates=0.1, top_warmup=500,
             pre_tanh_penalty=0.01),  # keeps the TD3 actor off its tanh bounds (README)
    ),
    "point-flat-td3": Config(
        "point", build_flat,
        dict(algorithm="td3", hidden=(64, 64), gamma=0.99, noise_std=0.2, updates=0.1,
             warmup=2_000, eps_end=None, anneal=None),
    ),
}


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def success_rate(env: EnvBase, policy: TensorDictModuleBase, max_steps: int) -> float:
    """Greedy success on one fresh episode per env instance: reset, act deterministically
    until every instance has ended its first episode (at most ``max_steps``), and count the
    first episodes that reached the goal."""
    finished = torch.zeros(env.batch_size, dtype=torch.bool)
    success = torch.zeros(env.batch_size, dtype=torch.bool)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        td = env.reset()
        for step in range(max_steps):
            td, td_next = env.step_and_maybe_reset(policy(td))
            done = td["next", "done"].reshape(env.batch_size)
            success |= done & ~finished & td["next", "is_success"].reshape(env.batch_size)
            finished |= done
            if step % 10 == 9 and bool(finished.all()):  # evaluation only: a sync is fine
                break
            td = td_next
    return float(success.float().mean())


# ----------------------------------------------------------------------------- one run
def train(name: str, seed: int, frames_scale: float = 1.0, n_envs: int = 32,
          eval_episodes: int = 100, steps_per_batch: int = 16,
          overrides: dict | None = None, task: Task | None = None) -> dict:
    """Trains config ``name`` with ``seed``; returns its success curve and timings.

    ``overrides`` replaces some of the config's hyperparameters and ``task`` its task (the
    tests use both for tiny versions)."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    os.environ.setdefault("RL_WARNINGS", "False")
    config = CONFIGS[name]
    task = TASKS[config.task] if task is None else task
    torch.manual_seed(seed)
    env = make_task_env(task, n_envs, seed)
    hp = {**config.hp, **(overrides or {})}
    agent = config.build(env, hp)
    eval_env = agent.wrap(make_task_env(task, eval_episodes, 10_000 + seed))
    max_steps = eval_env.base_env.max_steps if hasattr(eval_env, "base_env") else eval_env.max_steps
    frames_per_batch = n_envs * steps_per_batch
    total = max(int(task.frames * frames_scale) // frames_per_batch, 1) * frames_per_batch
    every = max(total // task.checkpoints // frames_per_batch, 1) * frames_per_batch
    collector = Collector(
        agent.wrap(env), agent.policy, frames_per_batch=frames_per_batch, total_frames=total,
        auto_register_policy_transforms=False,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    curve = [(0, success_rate(eval_env, agent.policy, max_steps))]
    frames, logs = 0, {}
    for batch in collector:
        frames += batch.numel()
        logs = agent.learn(batch) or logs
        if frames % every == 0 or frames >= total:
            curve.append((frames, success_rate(eval_env, agent.policy, max_steps)))
            print(f"[{name} seed {seed}] {frames:>7} frames  success {curve[-1][1]:.2f}  "
                  f"{time.perf_counter() - wall:6.0f}s  {_short(logs)}", flush=True)
    collector.shutdown()
    return {
        "config": name, "task": config.task, "env": task.env, "seed": seed,
        "frames": [f for f, _ in curve], "success": [s for _, s in curve],
        "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
        "hp": {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
               for k, v in hp.items()},
    }


@torch.no_grad()
def random_success(task: Task, seed: int, episodes: int = 100) -> float:
    """The success rate of uniformly random actions on ``episodes`` fresh episodes of ``task``:
    the floor every agent must beat."""
    from torchrl.envs.utils import RandomPolicy

    env = make_task_env(task, episodes, 10_000 + seed)
    torch.manual_seed(seed)
    return success_rate(env, RandomPolicy(env.full_action_spec), env.max_steps)


def _short(logs: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3g}" for k, v in sorted(logs.items()))


def _train_star(args: tuple) -> dict:
    return train(*args)


# ----------------------------------------------------------------------------- reporting
def plot(runs: list[dict], task: str, path: Path) -> None:
    """Each config's mean success curve over seeds with its 95 % bootstrap confidence band
    (``torchrl_hier.report``, as for a Hydra sweep)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted({r["config"] for r in runs if r["task"] == task}):
        group = [r for r in runs if r["config"] == name]
        success = np.array([r["success"] for r in group])
        low, high = bootstrap_ci(success)
        ax.plot(group[0]["frames"], success.mean(0), label=f"{name} ({len(group)} seeds)")
        ax.fill_between(group[0]["frames"], low, high, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("greedy success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{_task_env(runs, task)}: mean, 95 % bootstrap CI over seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _task_env(runs: list[dict], task: str) -> str:
    return next(r["env"] for r in runs if r["task"] == task)


def table(runs: list[dict]) -> str:
    """A markdown table: success at a few checkpoints, mean over seeds [95 % bootstrap CI], the
    interquartile mean at the end of the budget, and time per run."""
    lines = [
        "| config | env | seeds | success at 25% | 50% | 100% of budget | IQM at 100% "
        "| cpu s / run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in CONFIGS:
        group = [r for r in runs if r["config"] == name]
        if not group:
            continue
        frames = group[0]["frames"]
        cells = []
        for frac in (0.25, 0.5, 1.0):
            i = min(range(len(frames)), key=lambda j: abs(frames[j] - frac * frames[-1]))
            values = np.array([r["success"][i] for r in group])
            low, high = bootstrap_ci(values)
            cells.append(f"{values.mean():.2f} [{low:.2f}, {high:.2f}] @{frames[i] // 1000}k")
        final = np.array([r["success"][-1] for r in group])
        low, high = bootstrap_ci(final, iqm)
        cells.append(f"{iqm(final):.2f} [{low:.2f}, {high:.2f}]")
        cpu = sum(r["cpu_s"] for r in group) / len(group)
        lines.append(f"| {name} | {group[0]['env']} | {len(group)} | " + " | ".join(cells)
                     + f" | {cpu:.0f} |")
    return "\n".join(lines)


def write_report(runs: list[dict], meta: dict, out: Path, tag: str) -> str:
    """Writes ``<tag>.json`` (every curve), a PNG per task and ``<tag>.md``; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    for task in sorted({r["task"] for r in runs}):
        plot(runs, task, out / f"{tag}_{task}.png")
    text = table(runs)
    footer = (f"\nWall time {meta['wall_s'] / 60:.1f} min with {meta['workers']} workers; total CPU "
              f"time {meta['cpu_s'] / 60:.1f} min.\n")
    (out / f"{tag}.md").write_text(text + "\n" + footer)
    return text + footer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--frames-scale", type=float, default=1.0,
                        help="multiplies every task's env-step budget")
    parser.add_argument("--envs", type=int, default=32, help="env instances per collector")
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="learning", help="prefix of the result files")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: rewrite the table and plots from <out>/<tag>.json")
    args = parser.parse_args()

    if args.report_only:
        saved = json.loads((args.out / f"{args.tag}.json").read_text())
        print(write_report(saved["runs"], saved["meta"], args.out, args.tag))
        return
    jobs = [(name, seed, args.frames_scale, args.envs, args.eval_episodes)
            for name in args.configs for seed in args.seeds]
    start = time.perf_counter()
    if args.workers > 1:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            runs = pool.map(_train_star, jobs, chunksize=1)
    else:
        runs = [_train_star(job) for job in jobs]
    wall = time.perf_counter() - start
    meta = {"wall_s": wall, "workers": args.workers, "cpu_s": sum(r["cpu_s"] for r in runs),
            "machine": platform.platform(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()}}
    print(write_report(runs, meta, args.out, args.tag))


if __name__ == "__main__":
    main()
