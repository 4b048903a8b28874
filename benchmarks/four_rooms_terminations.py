"""Option-critic's four-rooms termination picture (Bacon, Harb & Precup 2017), tabular.

The paper's setting, with the library's pieces: ``GridMaze-FourRooms`` (104 free cells, four
hallways) with one-hot observations (``observation="onehot"``), the goal fixed in the east
hallway (``goal=(6, 9)``), starts drawn uniformly over the other cells (``min_distance=1``),
moves that slip to one of the other three with probability 1/3 (``slip=1/3``), 1000-step
episodes; ``option_critic_levels(net="linear")`` (bias-free linear layers on one-hot features:
tables for ``Q_Omega``, the intra-option softmax policies and the sigmoid terminations, all
starting from constants), 4 options, gamma 0.99, epsilon-greedy 0.01 over options, no
deliberation cost; trained by ``OnPolicyLearner`` with plain SGD at the paper's per-transition
learning rates (critic 0.5, intra-option policies and terminations 0.25: the loss averages a
batch, so the optimizer's rate is the per-transition rate times the batch size). Collected by
TorchRL's ``Collector`` over ``--envs`` instances.

Draws each option's termination probability over the map (``four_rooms_terminations.png``)
and reports, per option, the mean termination probability at the four hallway cells
(``torchrl_hier.envs.doorways``) against the mean elsewhere, its mean by distance to the
hallways, and the episode lengths. ``--action-critic`` adds the paper's intra-option
action-value critic ``Q_U(s, w, a)`` (policy advantage ``Q_U - Q_Omega``; ``--no-baseline``:
``Q_U``); the defaults are the run of ``benchmarks/README.md``, without it.

    python benchmarks/four_rooms_terminations.py                 # seeds 0-2, 2000 episodes each
    python benchmarks/four_rooms_terminations.py --seeds 0 --episodes 500

Writes ``benchmarks/results/four_rooms_terminations.json`` and ``.png``; ``--report-only``
redraws from the JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv

from torchrl_hier import Hierarchy
from torchrl_hier.envs import doorways, make_env
from torchrl_hier.learning import HierarchyLearner, OnPolicyLearner
from torchrl_hier.levels import option_critic_levels

RESULTS = Path(__file__).resolve().parent / "results"
GOAL = (6, 9)  # the east hallway (Bacon et al.'s first goal)
N_OPTIONS = 4


def four_rooms(envs: int, seed: int, slip: float, max_steps: int):
    """The paper's four rooms: tabular features, fixed goal, slippery moves."""
    return make_env(
        "GridMaze-FourRooms", batch_size=envs, seed=seed, goal=GOAL, slip=slip,
        observation="onehot", min_distance=1, max_steps=max_steps,
    )


def build(env, args) -> tuple[Hierarchy, HierarchyLearner, object]:
    """The tabular option-critic stack and its SGD learner."""
    top, low, loss = option_critic_levels(
        env.observation_size, N_OPTIONS, env.action_spec_unbatched, net="linear",
        gamma=args.gamma, epsilon=args.epsilon, deliberation_cost=args.xi,
        entropy_coeff=args.entropy, termination_bias=args.termination_bias,
        critic_coeff=args.lr_critic / args.lr_policy,
        termination_coeff=args.lr_termination / args.lr_policy,
        action_critic=args.action_critic,
    )
    loss.baseline = args.baseline
    hierarchy = Hierarchy([top, low], env)
    batch = args.envs * args.steps
    learner = OnPolicyLearner(
        loss, level=low, epochs=1, batch_size=batch, max_grad_norm=None,
        optimizer=functools.partial(torch.optim.SGD, lr=args.lr_policy * batch),
    )
    return hierarchy, HierarchyLearner({"primitive": learner}, hierarchy=hierarchy, frozen=["option"]), loss


def _on_map(env, per_cell: torch.Tensor) -> np.ndarray:
    """``[k, cells]`` values per free cell as ``[k, rows, cols]`` (NaN on walls)."""
    rows, cols = env.walls.shape
    grid = torch.full((per_cell.shape[0], rows, cols), float("nan"))
    grid[:, env.free_cells[:, 0], env.free_cells[:, 1]] = per_cell.float()
    return grid.numpy()


@torch.no_grad()
def termination_map(env, loss) -> tuple[np.ndarray, np.ndarray]:
    """``[options, rows, cols]`` termination probabilities and ``[rows, cols]`` the option
    ``Q_Omega`` prefers in each cell (NaN on walls)."""
    obs = env.cell_observations(GOAL)
    beta = torch.sigmoid(loss.termination.net(obs))  # [cells, options]
    values = loss._values(obs)
    return _on_map(env, beta.T), _on_map(env, values.argmax(-1)[None])[0]


def hallway_contrast(grid: np.ndarray, walls: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per option: mean termination probability at the hallway cells, and elsewhere (free
    cells, the goal excluded: episodes end there, so its termination is never trained)."""
    hall = doorways(walls).numpy()
    free = ~walls.numpy()
    free[GOAL] = False
    hall[GOAL] = False
    other = free & ~hall
    return ([float(np.nanmean(g[hall])) for g in grid], [float(np.nanmean(g[other])) for g in grid])


def distance_profile(grid: np.ndarray, walls: torch.Tensor) -> dict[str, float]:
    """Mean termination probability (over options and cells) by Manhattan distance to the
    nearest of the three hallways other than the goal's: ``"0"`` (at them), ``"1"``, ``"2"``,
    ``"3+"``; the cells within one step of the goal apart (``"goal"``: their values are the
    goal's, not a hallway's), the goal itself left out."""
    hall = doorways(walls).numpy()
    hall[GOAL] = False
    halls = np.argwhere(hall)
    groups: dict[str, list[float]] = {}
    for cell in np.argwhere(~walls.numpy()):
        to_goal = abs(cell[0] - GOAL[0]) + abs(cell[1] - GOAL[1])
        if to_goal == 0:
            continue
        near = int(np.abs(halls - cell).sum(-1).min())
        key = "goal" if to_goal == 1 else ("3+" if near >= 3 else str(near))
        groups.setdefault(key, []).append(float(grid[:, cell[0], cell[1]].mean()))
    return {key: float(np.mean(groups[key])) for key in ("0", "1", "2", "3+", "goal")}


def run(seed: int, args) -> dict:
    torch.manual_seed(seed)
    env = four_rooms(args.envs, seed, args.slip, args.max_steps)
    hierarchy, learners, loss = build(env, args)
    collector = Collector(
        TransformedEnv(env, hierarchy.transform), hierarchy.policy,
        frames_per_batch=args.envs * args.steps, total_frames=-1,
        auto_register_policy_transforms=False,
    )
    lengths: list[int] = []
    option_lengths: list[float] = []
    running = torch.zeros(args.envs, dtype=torch.long)  # steps of each instance's episode
    frames, t0 = 0, time.perf_counter()
    for batch in collector:
        frames += batch.numel()
        learners.extend_batch(batch)
        learners.update()
        for done in batch["next", "done"].squeeze(-1).unbind(1):  # [envs] per step
            running += 1
            lengths += running[done].tolist()
            running[done] = 0
        options = hierarchy.transitions(batch)["option"]["steps_to_next_obs"].float()
        option_lengths.append(float(options.mean()) if options.numel() else float("nan"))
        if len(lengths) >= args.episodes:
            break
    collector.shutdown()
    grid, greedy = termination_map(env, loss)
    hall, other = hallway_contrast(grid, env.walls.cpu())
    out = {
        "seed": seed, "frames": frames, "episodes": len(lengths),
        "wall_s": round(time.perf_counter() - t0, 1),
        "episode_length": lengths, "option_length_last": option_lengths[-1],
        "hallway_beta": hall, "other_beta": other, "beta": grid.tolist(),
        "greedy_option": greedy.tolist(),
    }
    print(f"seed {seed}: {len(lengths)} episodes, {frames} frames, {out['wall_s']} s; last 100 "
          f"episodes {np.mean(lengths[-100:]):.1f} steps; beta hallway "
          f"{', '.join(f'{v:.2f}' for v in hall)} vs elsewhere {', '.join(f'{v:.2f}' for v in other)}",
          flush=True)
    return out


def room_purity(greedy: np.ndarray) -> float:
    """The share of each room's cells whose preferred option is that room's most preferred one
    (averaged over the four rooms; 1: the options partition the map by rooms)."""
    shares = []
    for rows in (slice(1, 6), slice(7, 12)):
        for cols in (slice(1, 6), slice(7, 12)):
            room = greedy[rows, cols].ravel()
            room = room[~np.isnan(room)].astype(int)
            shares.append(np.bincount(room).max() / len(room))
    return float(np.mean(shares))


def summarize(runs: list[dict]) -> list[str]:
    """One line per run and one for all: episode lengths, hallway vs elsewhere, room purity."""
    lines = []
    for r in runs:
        n = r["episode_length"]
        lines.append(
            f"seed {r['seed']}: {r['episodes']} episodes, {r['frames']} frames, {r['wall_s']} s; "
            f"episode length first 100 {np.mean(n[:100]):.0f}, last 100 {np.mean(n[-100:]):.1f}; "
            f"beta at hallways {np.mean(r['hallway_beta']):.3f} vs elsewhere "
            f"{np.mean(r['other_beta']):.3f} (options above: "
            f"{sum(h > o for h, o in zip(r['hallway_beta'], r['other_beta']))}/{N_OPTIONS}); "
            f"room purity {room_purity(np.array(r['greedy_option'], dtype=float)):.2f}; "
            f"by distance to a hallway {_profile_text(_profile(r))}"
        )
    hall = np.mean([r["hallway_beta"] for r in runs])
    other = np.mean([r["other_beta"] for r in runs])
    profiles = [_profile(r) for r in runs]
    mean = {key: float(np.mean([p[key] for p in profiles])) for key in profiles[0]}
    lines.append(f"all: beta at hallways {hall:.3f} vs elsewhere {other:.3f}; by distance to a "
                 f"hallway {_profile_text(mean)}")
    return lines


def _profile(r: dict) -> dict[str, float]:
    return distance_profile(np.array(r["beta"], dtype=float), four_rooms(1, 0, 0.0, 10).walls.cpu())


def _profile_text(profile: dict[str, float]) -> str:
    return ", ".join(f"{key}: {value:.3f}" for key, value in profile.items())


def report(data: dict, out: Path) -> None:
    print("\n".join(summarize(data["runs"])))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = data["runs"]
    start = float(torch.sigmoid(torch.tensor(float(data["meta"]["settings"].get("termination_bias", 0.0)))))
    vmin = min(start, *(np.nanmin(np.array(r["beta"], dtype=float)) for r in runs))
    walls = four_rooms(1, 0, 0.0, 10).walls.numpy()
    fig, axes = plt.subplots(len(runs), N_OPTIONS + 2, figsize=(3.2 * (N_OPTIONS + 2), 3 * len(runs)),
                             squeeze=False, layout="constrained")
    for row, r in zip(axes, runs):
        beta = np.array(r["beta"])
        for w in range(N_OPTIONS):
            ax = row[w]
            image = ax.imshow(np.where(walls, np.nan, beta[w]), vmin=vmin, vmax=1, cmap="viridis")
            ax.imshow(np.where(walls, 1.0, np.nan), cmap="gray_r", vmin=0, vmax=1)
            ax.plot(GOAL[1], GOAL[0], "r*", markersize=10)
            ax.set_title(f"seed {r['seed']}, option {w}\nhallways {r['hallway_beta'][w]:.2f}, "
                         f"elsewhere {r['other_beta'][w]:.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        greedy = np.array(r["greedy_option"], dtype=float)
        row[N_OPTIONS].imshow(np.where(walls, np.nan, greedy), cmap="tab10", vmin=0, vmax=9)
        row[N_OPTIONS].imshow(np.where(walls, 1.0, np.nan), cmap="gray_r", vmin=0, vmax=1)
        for (i, j), w in np.ndenumerate(greedy):
            if not np.isnan(w):
                row[N_OPTIONS].text(j, i, str(int(w)), ha="center", va="center", fontsize=6)
        row[N_OPTIONS].set_title("option Q_Omega prefers", fontsize=8)
        row[N_OPTIONS].set_xticks([])
        row[N_OPTIONS].set_yticks([])
        lengths = np.array(r["episode_length"], dtype=float)
        k = 50
        smooth = np.convolve(lengths, np.ones(k) / k, mode="valid") if len(lengths) >= k else lengths
        row[-1].plot(np.arange(len(smooth)) + min(k, len(lengths)), smooth)
        row[-1].set_yscale("log")
        row[-1].set_xlabel("episode")
        row[-1].set_ylabel(f"episode length ({k}-ep. mean)", fontsize=8)
        row[-1].grid(alpha=0.3)
    fig.suptitle("tabular option-critic, four rooms, goal in the east hallway (red star): "
                 "termination probability per option and cell")
    fig.colorbar(image, ax=axes[:, N_OPTIONS - 1].ravel().tolist(), shrink=0.6, label=f"termination prob. (start {start:.2f})")
    fig.savefig(out / "four_rooms_terminations.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--envs", type=int, default=32, help="env instances")
    parser.add_argument("--steps", type=int, default=1, help="steps per instance per batch (one update each)")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--slip", type=float, default=1 / 3)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--epsilon", type=float, default=0.01)
    parser.add_argument("--xi", type=float, default=0.0, help="deliberation cost")
    parser.add_argument("--entropy", type=float, default=0.0)
    parser.add_argument("--termination-bias", type=float, default=0.0)
    parser.add_argument("--lr-critic", type=float, default=0.5)
    parser.add_argument("--lr-policy", type=float, default=0.25)
    parser.add_argument("--lr-termination", type=float, default=0.25)
    parser.add_argument("--action-critic", action=argparse.BooleanOptionalAction, default=False,
                        help="learn Q_U(s, w, a); policy advantage Q_U - Q_Omega")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="with --action-critic: advantage Q_U - Q_Omega (else Q_U)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = args.out / "four_rooms_terminations.json"
    if not args.report_only:
        runs = [run(seed, args) for seed in args.seeds]
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "report_only")}
        meta = {"settings": settings,
                "torch": torch.__version__, "machine": platform.platform(),
                "date": time.strftime("%Y-%m-%d")}
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"meta": meta, "runs": runs}))
    report(json.loads(path.read_text()), args.out)


if __name__ == "__main__":
    main()
