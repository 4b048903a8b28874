"""On-policy benchmark: flat PPO, two-level PPO and option-critic on GridMaze-FourRooms.

Every agent trains with TorchRL's ``Collector`` and the library's ``OnPolicyLearner`` on the
same env-step budget, on CPU:

- ``flat-ppo``: one PPO level emitting the moves (``on_policy_level``, ``ClipPPOLoss`` + GAE);
- ``options-ppo``: a PPO option level (4 options) above an option-conditioned PPO level that
  runs each option for 8 steps; the option level's GAE runs over its semi-MDP steps
  (``gamma**tau``);
- ``option-critic``: ``option_critic_levels`` (epsilon-greedy over Q_Omega, 4 intra-option
  policies with learned terminations, deliberation cost 0.01), ``OptionCriticLoss``.

GridMaze-FourRooms: an 11x11 maze of four rooms joined by hallways, start and goal drawn per
episode at least 10 steps apart, reward 1 on reaching the goal, 100-step episodes. Success is
measured greedily (``ExplorationType.DETERMINISTIC``; option-critic's terminations then fire
when their probability exceeds 0.5) on 100 fresh episodes of a separately seeded env, and while
training (the exploring agent's episodes), and sampling as while training on the fresh
episodes (stochastic policies that only take their most likely move can get stuck against a
wall, so both are reported). The option-critic run of the first seed also draws
each option's termination probability over the map, for one goal (``on_policy_terminations.png``).

    python benchmarks/on_policy.py                      # 3 agents x 3 seeds, 200k frames each
    python benchmarks/on_policy.py --agents flat-ppo --seeds 0 --frames 50000

Writes ``benchmarks/results/on_policy.json``, ``on_policy.png`` and
``on_policy_terminations.png``; ``--report-only`` redraws them from the JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_hier import Hierarchy, Timeout
from torchrl_hier.envs import make_env
from torchrl_hier.learning import HierarchyLearner, OnPolicyLearner
from torchrl_hier.levels import on_policy_level, option_critic_levels, option_spec

TASK = "GridMaze-FourRooms"
AGENTS = ("flat-ppo", "options-ppo", "option-critic")
RESULTS = Path(__file__).resolve().parent / "results"
OBS_DIM, N_OPTIONS = 4, 4


def build(agent: str, env) -> tuple[Hierarchy, HierarchyLearner]:
    """The agent's hierarchy and learners (common PPO settings, not tuned on this task)."""
    moves = env.action_spec_unbatched
    if agent == "flat-ppo":
        level, loss = on_policy_level("agent", OBS_DIM, moves, hidden=(64, 64), gamma=0.99)
        hierarchy = Hierarchy([level], env)
        learners = {"agent": OnPolicyLearner(loss, level=level, epochs=4, batch_size=256, lr=1e-3)}
        return hierarchy, HierarchyLearner(learners, hierarchy=hierarchy)
    if agent == "options-ppo":
        top, top_loss = on_policy_level(
            "option", OBS_DIM, option_spec(N_OPTIONS), lowest=False, gamma=0.99
        )
        low, low_loss = on_policy_level(
            "primitive", OBS_DIM, moves, parent_dim=N_OPTIONS, control=Timeout(8), gamma=0.99
        )
        hierarchy = Hierarchy([top, low], env)
        learners = {
            "option": OnPolicyLearner(top_loss, level=top, epochs=4, batch_size=64, lr=1e-3),
            "primitive": OnPolicyLearner(low_loss, level=low, epochs=4, batch_size=256, lr=1e-3),
        }
        return hierarchy, HierarchyLearner(learners, hierarchy=hierarchy)
    if agent == "option-critic":
        top, low, loss = option_critic_levels(
            OBS_DIM, N_OPTIONS, moves, gamma=0.99, epsilon=0.05, deliberation_cost=0.01
        )
        hierarchy = Hierarchy([top, low], env)
        learners = {"primitive": OnPolicyLearner(loss, level=low, epochs=1, batch_size=1024, lr=1e-3)}
        return hierarchy, HierarchyLearner(learners, hierarchy=hierarchy, frozen=["option"])
    raise ValueError(f"unknown agent {agent!r}; choose from {AGENTS}")


@torch.no_grad()
def success(hierarchy: Hierarchy, episodes: int, seed: int, mode: ExplorationType) -> float:
    """Fraction of ``episodes`` fresh episodes (one per instance) that reach the goal, acting
    in ``mode`` (DETERMINISTIC: greedy; RANDOM: sampling, as while training)."""
    env = TransformedEnv(make_env(TASK, batch_size=episodes, seed=seed), hierarchy.transform)
    with set_exploration_type(mode):
        rollout = env.rollout(100, hierarchy.policy, break_when_any_done=False)
    done = rollout["next", "done"].squeeze(-1)
    first = (done.cumsum(-1) - done.long()) == 0
    return float((rollout["next", "is_success"].squeeze(-1) & first & done).any(-1).float().mean())


@torch.no_grad()
def termination_map(hierarchy: Hierarchy, goal: tuple[int, int]) -> dict:
    """Each option's termination probability at every free cell, the goal fixed."""
    env = make_env(TASK, batch_size=1, seed=0)
    walls = env.walls.cpu()
    rows, cols = walls.shape
    cells = env.free_cells
    termination = hierarchy.levels[1].control.module
    beta = torch.sigmoid(termination.net(env.cell_observations(goal)))  # [cells, options]
    grid = torch.full((N_OPTIONS, rows, cols), float("nan"))
    grid[:, cells[:, 0], cells[:, 1]] = beta.T
    return {"walls": walls.tolist(), "goal": list(goal), "beta": grid.tolist()}


def run(job: tuple[str, int, int, int, int, int]) -> dict:
    agent, seed, frames, envs, eval_every, eval_episodes = job
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    env = make_env(TASK, batch_size=envs, seed=seed)
    hierarchy, learners = build(agent, env)
    collector = Collector(
        TransformedEnv(env, hierarchy.transform), hierarchy.policy, frames_per_batch=envs * 32,
        total_frames=frames, auto_register_policy_transforms=False,
    )
    curves = {"greedy": [], "sampled": [], "training": []}
    done_frames, t0 = 0, time.perf_counter()
    successes, episodes = 0.0, 0

    def evaluate() -> None:
        for key, mode in (("greedy", ExplorationType.DETERMINISTIC), ("sampled", ExplorationType.RANDOM)):
            curves[key].append((done_frames, success(hierarchy, eval_episodes, 10_000 + seed, mode)))

    evaluate()
    for batch in collector:
        done_frames += batch.numel()
        learners.extend_batch(batch)
        learners.update()
        done = batch["next", "done"]
        successes += float(batch["next", "is_success"][done].float().sum())
        episodes += int(done.sum())
        if done_frames % eval_every < batch.numel():
            evaluate()
            curves["training"].append((done_frames, successes / max(episodes, 1)))
            successes, episodes = 0.0, 0
    collector.shutdown()
    out = {
        "agent": agent, "seed": seed, "frames": done_frames, **curves,
        "wall_s": round(time.perf_counter() - t0, 1), "transitions": learners.n_transitions,
    }
    if agent == "option-critic":
        top_options = hierarchy.transitions(batch)["option"]["steps_to_next_obs"].float()
        out["mean_option_length"] = float(top_options.mean())
        if seed == 0:
            out["termination_map"] = termination_map(hierarchy, goal=(9, 9))
    print(f"{agent} seed {seed}: success greedy {curves['greedy'][-1][1]:.2f}, sampled "
          f"{curves['sampled'][-1][1]:.2f}, {out['wall_s']} s", flush=True)
    return out


def report(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("greedy", "sampled", "training")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for agent in AGENTS:
        runs = [r for r in results if r["agent"] == agent]
        if not runs:
            continue
        for ax, key in zip(axes, keys):
            frames = np.array([f for f, _ in runs[0][key]])
            values = np.array([[v for _, v in r[key]] for r in runs])
            ax.plot(frames, values.mean(0), label=f"{agent} ({len(runs)} seeds)")
            ax.fill_between(frames, values.min(0), values.max(0), alpha=0.2)
    titles = ("greedy (deterministic), fresh episodes", "sampled, fresh episodes",
              "training episodes (sampled)")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("env frames")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{TASK} success rate\n(mean, min-max over seeds)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "on_policy.png", dpi=120)
    maps = [r["termination_map"] for r in results if "termination_map" in r]
    if maps:
        data = maps[0]
        beta, walls = np.array(data["beta"]), np.array(data["walls"])
        fig, axes = plt.subplots(1, N_OPTIONS, figsize=(3 * N_OPTIONS, 3.2))
        for w, ax in enumerate(axes):
            image = ax.imshow(np.where(walls, np.nan, beta[w]), vmin=0, vmax=1, cmap="viridis")
            ax.imshow(np.where(walls, 1.0, np.nan), cmap="gray_r", vmin=0, vmax=1)
            ax.plot(data["goal"][1], data["goal"][0], "r*", markersize=12)
            ax.set_title(f"option {w}")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"option-critic on {TASK}: termination probability per cell (goal: red star)")
        fig.colorbar(image, ax=axes, shrink=0.8)
        fig.savefig(out / "on_policy_terminations.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=list(AGENTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=200_000, help="env frames per run")
    parser.add_argument("--envs", type=int, default=64, help="env instances per collector")
    parser.add_argument("--eval-every", type=int, default=20_480)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    path = args.out / "on_policy.json"
    if args.report_only:
        report(json.loads(path.read_text())["runs"], args.out)
        return
    jobs = [
        (agent, seed, args.frames, args.envs, args.eval_every, args.eval_episodes)
        for agent in args.agents for seed in args.seeds
    ]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(run, jobs, chunksize=1)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"task": TASK, "frames": args.frames, "envs": args.envs, "torch": torch.__version__,
            "machine": platform.platform(), "date": time.strftime("%Y-%m-%d")}
    path.write_text(json.dumps({"meta": meta, "runs": results}))
    report(results, args.out)
    for agent in args.agents:
        runs = [r for r in results if r["agent"] == agent]
        line = [f"{agent}:"]
        for key in ("greedy", "sampled"):
            start = np.mean([r[key][0][1] for r in runs])
            finals = [r[key][-1][1] for r in runs]
            line.append(f"{key} {start:.2f} -> {np.mean(finals):.2f} "
                        f"({', '.join(f'{v:.2f}' for v in finals)})")
        print(" ".join(line))


if __name__ == "__main__":
    main()
