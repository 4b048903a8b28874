"""HAM agent vs flat agent on Gymnasium's Taxi (Taxi-v4), same learner and budget.

Both agents are HAMs run by the same code: ``ham.policy`` in ``TransformedEnv(env,
ham.transform)`` inside a TorchRL ``Collector``, ``ham.transitions(batch)`` into one replay
buffer per choice point, and ``DQNLoss`` (``delay_value=False``, TD(0) with
``gamma**steps_to_next_obs``) on tabular Q values (:class:`torchrl_hier.ham.taxi.TableQ`,
squared TD errors averaged per table entry), i.e. semi-MDP Q-learning with replay. The flat agent's HAM has one choice point deciding one of
the 6 primitive actions every step; the Taxi HAM (``torchrl_hier/ham/taxi.py``) runs
get/put/navigate machines and learns only the navigation moves (choice point ``nav``).

Evaluation is exact: every ``--eval-every`` env steps the greedy policy plays one episode from
each of Taxi's 300 start states (all equally likely), so the score is the policy's expected
return, without sampling noise. The optimal policy's expected return is 7.93, *below* Taxi's
nominal reward threshold of 8 (which sampled averages only reach by luck), so the runs report
when each agent's expected greedy return first reaches 7.8 (within 0.13 of optimal), when it
first becomes optimal, and whether it ever reached 8.

Writes ``benchmarks/results/ham_taxi.json`` and ``ham_taxi.png``. Run
``python benchmarks/ham_taxi.py`` (about 7 minutes on 2 busy CPU cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium
import torch
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.envs import ExplorationType, TransformedEnv, set_exploration_type

from torchrl_hier.ham.taxi import N_STATES, flat_ham, make_taxi_env, q_table, taxi_ham

NOMINAL_THRESHOLD = 8.0  # Taxi's reward_threshold in gymnasium's registry
SOLVED = 7.8
RESULTS = Path(__file__).parent / "results"


def build(agent: str, env, eps_steps: int):
    """The agent's HAM and its choice points' tabular learners, by choice-point name."""
    if agent == "ham":
        nav = q_table(N_STATES, 4, n_args=4, annealing_num_steps=eps_steps)
        return taxi_ham(env, nav.policy), {"nav": nav}
    flat = q_table(N_STATES, 6, annealing_num_steps=eps_steps)
    return flat_ham(env, flat.policy), {"primitive": flat}


def start_states() -> torch.Tensor:
    """Taxi's 300 possible start states (uniformly likely)."""
    taxi = gymnasium.make("Taxi-v4").unwrapped
    return torch.as_tensor(taxi.initial_state_distrib > 0).nonzero().flatten()


def optimal_returns(states: torch.Tensor) -> torch.Tensor:
    """Undiscounted optimal return from each state (value iteration on Taxi's model)."""
    model = gymnasium.make("Taxi-v4").unwrapped.P
    value = [0.0] * 500
    for _ in range(100):
        new = [
            max(r + (0.0 if done else value[s2]) for (_, s2, r, done), in (model[s][a] for a in range(6)))
            for s in range(500)
        ]
        if new == value:
            break
        value = new
    return torch.tensor([value[s] for s in states.tolist()])


def evaluate(env, policy, starts: torch.Tensor, max_steps: int) -> float:
    """Exact expected return of the greedy policy: one episode from each start state."""
    vector = env.base_env._env
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        td = env.reset()
        for sub_env, state in zip(vector.envs, starts.tolist()):
            sub_env.unwrapped.s = state
        td.set("observation", starts.clone().reshape(td.get("observation").shape))
        n = starts.numel()
        returns = torch.zeros(n)
        alive = torch.ones(n, dtype=torch.bool)
        for _ in range(max_steps):
            td, next_td = env.step_and_maybe_reset(policy(td))
            returns += td.get(("next", "reward")).reshape(n) * alive
            alive &= ~td.get(("next", "done")).reshape(n)
            if not alive.any():
                break
            td = next_td
    return returns.mean().item()


def run(agent: str, seed: int, args, starts: torch.Tensor, optimum: float, eval_base) -> dict:
    torch.manual_seed(seed)
    env = make_taxi_env(args.envs, seed=seed)
    ham, points = build(agent, env, args.eps_steps)
    collector = Collector(
        TransformedEnv(env, ham.transform),
        ham.policy,
        frames_per_batch=args.envs * args.steps_per_batch,
        total_frames=args.frames,
        auto_register_policy_transforms=False,
    )
    losses, buffers = {}, {}
    for name, learner in points.items():
        losses[name] = learner.loss(gamma=ham.choice_points[name].gamma)
        buffers[name] = ReplayBuffer(storage=LazyTensorStorage(args.buffer), batch_size=args.batch_size)
    params = [p for learner in points.values() for p in learner.actor.parameters()]
    # step_loss averages the squared TD errors per table entry: SGD with lr = alpha / 2 is
    # tabular Q-learning with step size alpha.
    optim = torch.optim.SGD(params, lr=args.alpha / 2)
    eval_env = TransformedEnv(eval_base, ham.transform)
    eval_policy = ham.make_policy()

    curve, frames, next_eval, transitions = [], 0, 0, {name: 0 for name in points}
    start = time.perf_counter()
    for batch in collector:
        frames += batch.numel()
        for name, data in ham.transitions(batch).items():
            if data.shape[0]:
                buffers[name].extend(data)
                transitions[name] += data.shape[0]
        for learner in points.values():
            learner.egreedy.step(batch.numel())
        for _ in range(args.updates_per_batch):
            for name, loss in losses.items():
                if len(buffers[name]) < args.batch_size:
                    continue
                optim.zero_grad()
                points[name].step_loss(loss, buffers[name].sample()).backward()
                optim.step()
        if frames >= next_eval:
            score = evaluate(eval_env, eval_policy, starts, args.eval_steps)
            curve.append((frames, round(score, 4)))
            next_eval += args.eval_every
            print(f"  {agent} seed {seed}: {frames:7d} env steps, greedy expected return {score:8.3f}", flush=True)
    collector.shutdown()

    def first(level: float) -> int | None:
        return next((f for f, score in curve if score >= level), None)

    return {
        "agent": agent,
        "seed": seed,
        "curve": curve,
        "first_at": {
            f"{SOLVED}": first(SOLVED),
            "optimal": first(optimum - 1e-3),
            f"{NOMINAL_THRESHOLD}": first(NOMINAL_THRESHOLD),
        },
        "final": curve[-1][1],
        "transitions": transitions,
        "seconds": round(time.perf_counter() - start, 1),
    }


def plot(results: list[dict], optimum: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"ham": "tab:blue", "flat": "tab:orange"}
    labels = {"ham": "HAM (get/put/navigate, learns nav)", "flat": "flat (6 primitive actions)"}
    for agent in ("ham", "flat"):
        runs = [r for r in results if r["agent"] == agent]
        if not runs:
            continue
        x = [f for f, _ in runs[0]["curve"]]
        mean = torch.tensor([[s for _, s in r["curve"]] for r in runs]).mean(0)
        for axis in (ax, zoom):
            for r in runs:
                axis.plot(*zip(*r["curve"]), color=colors[agent], alpha=0.3, lw=1)
            axis.plot(x, mean, color=colors[agent], lw=2, label=f"{labels[agent]}, mean of {len(runs)} seeds")
    for axis in (ax, zoom):
        axis.axhline(NOMINAL_THRESHOLD, color="gray", ls="--", lw=1, label="Taxi's threshold (8)")
        axis.axhline(optimum, color="black", ls=":", lw=1, label=f"optimal policy ({optimum:.2f})")
        axis.set_xlabel("env steps")
    ax.set_ylabel("greedy policy's expected return")
    ax.set_title("Taxi-v4: tabular SMDP Q-learning (DQNLoss)")
    zoom.set_ylim(0, 9)
    zoom.set_title("zoom near the optimum")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=80_000, help="env steps per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--steps-per-batch", type=int, default=4)
    parser.add_argument("--updates-per-batch", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--buffer", type=int, default=50_000)
    parser.add_argument("--alpha", type=float, default=0.8, help="tabular Q-learning step size")
    parser.add_argument("--eps-steps", type=int, default=10_000, help="epsilon 1 -> 0.05 over these env steps")
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument(
        "--eval-steps", type=int, default=40, help="eval episodes are cut here (optimal ones take <= 18 steps)"
    )
    parser.add_argument("--agents", default="ham,flat")
    parser.add_argument("--out", default=str(RESULTS / "ham_taxi"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    starts = start_states()
    optimum = optimal_returns(starts).mean().item()
    agents = args.agents.split(",")
    eval_base = make_taxi_env(starts.numel())  # one instance per start state
    results = [
        run(agent, seed, args, starts, optimum, eval_base) for seed in range(args.seeds) for agent in agents
    ]
    summary = {}
    for agent in agents:
        runs = [r for r in results if r["agent"] == agent]
        summary[agent] = {
            "first_at": {key: [r["first_at"][key] for r in runs] for key in runs[0]["first_at"]},
            "final": [r["final"] for r in runs],
            "seconds": [r["seconds"] for r in runs],
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    report = {
        "config": config,
        "optimal_expected_return": round(optimum, 4),
        "nominal_threshold": NOMINAL_THRESHOLD,
        "solved_level": SOLVED,
        "summary": summary,
        "runs": results,
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    plot(results, optimum, out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
