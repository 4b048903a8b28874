# %% [markdown]
# # 4. Subgoals and hindsight
#
# In a subgoal hierarchy (HAC, Levy et al. 2019) the top level does not pick a skill: it names
# a **state to reach**, here a cell of the maze, and the level below is *goal-conditioned*: it
# is rewarded for reaching that subgoal (−1 per step, 0 on the step it gets there) and hands
# control back when it does, or after H steps.
#
# Learning from these transitions as they come fails in two ways, and hindsight fixes both:
#
# * the level below almost never reaches a random subgoal early on, so its reward is −1
#   everywhere. **Hindsight goals** (HER) copy each transition with the goal replaced by a
#   position it *did* reach later in the episode, and recompute the reward;
# * the top level's transitions depend on how good the level below is *today*. **Hindsight
#   actions** replace each subgoal by the position the level below actually reached, which is
#   what that action "meant"; **subgoal testing** occasionally runs the level below greedily
#   and penalises subgoals it then fails to reach, so the top level learns what is reachable.
#
# `torchrl_hier.levels` has ready-made levels for this (`subgoal_level`,
# `goal_conditioned_level`) and the hindsight steps as functions on transition TensorDicts,
# applied before a learner's `extend`.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from torchrl.collectors import Collector  # SyncDataCollector before TorchRL 0.14
from torchrl.envs import ExplorationType, TransformedEnv, set_exploration_type

from torchrl_hier import Hierarchy, Timeout
from torchrl_hier.envs import GridMaze
from torchrl_hier.learning import LevelLearner
from torchrl_hier.levels import (
    GoalReward,
    GoalSlot,
    HindsightGoals,
    LevelEpisodes,
    SubgoalSpace,
    anneal_exploration,
    goal_conditioned_level,
    hindsight_actions,
    random_level,
    subgoal_level,
    subgoal_test_penalties,
    subgoal_transitions,
)

SEED = 0
N_ENVS = 16
MAX_STEPS = 40
HORIZON = 8  # H: walker steps per subgoal, at most
FRAMES_PER_BATCH = 256
N_BATCHES = 30
INF = float("inf")
device = torch.device("cpu")
torch.manual_seed(SEED)
torch.set_num_threads(1)  # small networks: more threads only contend

# %% [markdown]
# ## Task and goal space
#
# A 9×9 `GridMaze` room (7×7 free cells inside the wall), random start and goal at least 6
# steps apart, 40 steps per episode.
# The observation is `(agent_row, agent_col, goal_row, goal_col)` scaled to [0, 1], so a cell
# is 1/8 wide. A `SubgoalSpace` says which observation entries are the *achieved goal* (the
# agent's position, entries 0 and 1) and where subgoals may lie (the free cells' range). A
# subgoal counts as reached within half a cell in each coordinate (`norm=inf`): the same cell.

# %%
def make_room(seed: int) -> GridMaze:
    return GridMaze(batch_size=[N_ENVS], rooms=1, room_size=7, max_steps=MAX_STEPS,
                    min_distance=6, device=device, seed=seed)


env = make_room(SEED)
CELL = 1.0 / float(env.scale[0])  # one cell in observation units
TOL = 0.5 * CELL
space = SubgoalSpace((0, 1), low=CELL, high=1.0 - CELL)  # absolute positions, inside the wall
print(space, f"tolerance {TOL:.3f}")

# %% [markdown]
# ## The two levels
#
# * **`subgoal`** (top): a TD3 actor-critic that reads the full observation and emits a
#   subgoal in `space`. What it hands below is `[row, col, test flag]`: with probability 0.3
#   the subgoal is *tested*, and the level below then acts without exploration.
# * **`walker`** (lowest): a goal-conditioned DQN that sees only its own position (an
#   `obs_map`) and the subgoal; `GoalReward` gives −1 per step and 0 on reaching it, and its
#   return-control rule is `GoalReached(tolerance) | Timeout(HORIZON)`.
#
# Each factory returns `(level, loss)`: a stock `TD3Loss` and `DQNLoss` on the networks the
# level's policy runs.

# %%
top, top_loss = subgoal_level("subgoal", 4, space, test_probability=0.3, gamma=0.99,
                              noise_std=0.2, env=env)
walker, walker_loss = goal_conditioned_level(
    "walker", 2, env.action_spec_unbatched, space, tolerance=TOL, norm=INF, horizon=HORIZON,
    gamma=0.95, annealing_num_steps=5_000,
    obs_map=lambda observation: observation[..., :2], obs_shape=(2,),
)
hier = Hierarchy([top, walker], env)
print("walker's return-control rule:", walker.control)
print("losses:", type(top_loss).__name__, type(walker_loss).__name__)

# %% [markdown]
# ## A first rollout
#
# Before any learning: instance 0's walk (grey), the subgoals it was given (crosses, filled
# when reached) and where each subgoal ended (dots).

# %%
def cells(xy: torch.Tensor) -> np.ndarray:
    """Observation units -> (row, col) cell coordinates, for plotting."""
    return (xy / CELL).cpu().numpy()


def plot_subgoals(ax, batch, i=0, title=""):
    """Instance i's first episode in batch: path, subgoals and where each one ended."""
    done = batch["next", "done"][i].squeeze(-1)
    end = int(done.nonzero()[0]) + 1 if done.any() else done.numel()
    path = cells(torch.cat([batch["observation"][i, :end, :2],
                            batch["next", "observation"][i, end - 1 : end, :2]]))
    goal = cells(batch["observation"][i, 0, 2:])
    completed = batch["next", "hier", "completed"][i, :end, 0]
    subgoals = batch["hier", "subgoal_action"][i, :end][completed]
    ends = cells(batch["next", "observation"][i, :end, :2][completed])
    sub = cells(subgoals[:, :2])
    reached = np.abs(ends - sub).max(-1) <= 0.5 + 1e-6  # the same cell
    ax.imshow(env.walls.cpu(), cmap="Greys", vmin=0, vmax=1.6)
    ax.plot(path[:, 1], path[:, 0], color="grey", linewidth=1.5)
    for k in range(len(sub)):
        ax.plot([ends[k, 1], sub[k, 1]], [ends[k, 0], sub[k, 0]], color="C0", linestyle=":",
                linewidth=1)
    ax.scatter(sub[:, 1], sub[:, 0], marker="x", color="C0", s=50, label="subgoal")
    ax.scatter(sub[reached, 1], sub[reached, 0], marker="o", s=80,
               facecolors="none", edgecolors="C2", label="reached")
    ax.scatter(ends[:, 1], ends[:, 0], color="C1", s=15, zorder=3, label="where it ended")
    ax.scatter([goal[1]], [goal[0]], marker="*", color="green", s=250, zorder=3, label="goal")
    ax.set_title(title or f"{end} steps, {len(sub)} subgoals, {int(reached.sum())} reached")
    ax.axis("off")


def rollout(hierarchy, n_steps=MAX_STEPS, exploration=ExplorationType.RANDOM, seed=1):
    eval_env = TransformedEnv(make_room(seed), hierarchy.transform)
    with torch.no_grad(), set_exploration_type(exploration):
        return eval_env.rollout(n_steps, hierarchy.policy, break_when_any_done=False)


before = rollout(hier)
fig, ax = plt.subplots(figsize=(4, 4))
plot_subgoals(ax, before)
ax.legend(fontsize=7, loc="lower left")
plt.show()
sub = hier.transitions(before)["subgoal"]
print("subgoal transitions:", sub.batch_size[0], "| action = [row, col, test flag], e.g.",
      sub["action"][0].tolist())

# %% [markdown]
# ## Hindsight, on whole episodes
#
# Relabelling with *future* positions needs the rest of the episode, which a collector batch
# cut anywhere does not hold. `LevelEpisodes(hier).add(batch)` keeps each level's transitions
# per env instance and releases **whole episodes**, in time order, with an `"episode"` id.
#
# Then, for the walker, `HindsightGoals(GoalReward(...), k=4)` keeps every transition and adds
# 4 copies whose goal is a position reached later in the same episode, recomputing reward and
# termination. On the untrained rollout above:

# %%
episodes = LevelEpisodes(hier)
ready = episodes.add(before)  # {level: transitions of the episodes that ended}
walker_reward = GoalReward(space, TOL, norm=INF)
walker_her = HindsightGoals(walker_reward, gamma=walker.gamma, k=4, level="walker")
original = ready["walker"]  # rewards as the walker collected them: 0 where it reached
relabelled = walker_her(original)
rate = {
    "as collected": (original["next", "reward"] == 0).float().mean().item(),
    "with HER (k=4)": (relabelled["next", "reward"] == 0).float().mean().item(),
}
print(f"walker transitions: {len(original)} collected, {len(relabelled)} after HER")

fig, ax = plt.subplots(figsize=(4.5, 3))
ax.bar(list(rate), list(rate.values()), color=["grey", "C0"])
ax.set(ylabel="transitions that reach their goal", title="walker: hindsight goals")
plt.show()

# %% [markdown]
# For the subgoal level, `hindsight_actions` replaces each subgoal by where the walker actually
# ended (the arrows below), and `subgoal_test_penalties` keeps the tested subgoals the walker
# missed, as terminal transitions with a penalty. `subgoal_transitions` chains both (plus
# hindsight goals for the env goal in the observation) and puts the subgoal back in the actor's
# frame, ready for `TD3Loss`.

# %%
sub = ready["subgoal"]
relabelled_actions = hindsight_actions(sub, space, level="subgoal")
tested_misses = subgoal_test_penalties(sub, space, tolerance=TOL, penalty=0.0, norm=INF,
                                       level="subgoal")
print(f"{len(sub)} subgoal transitions, {int((sub['action'][:, 2] > 0.5).sum())} tested, "
      f"{len(tested_misses)} tested and missed")

fig, ax = plt.subplots(figsize=(4, 4))
ax.imshow(env.walls.cpu(), cmap="Greys", vmin=0, vmax=1.6)
proposed, achieved = cells(sub["action"][:25, :2]), cells(relabelled_actions["action"][:25, :2])
for p, q in zip(proposed, achieved):
    ax.annotate("", xy=(q[1], q[0]), xytext=(p[1], p[0]),
                arrowprops=dict(arrowstyle="->", color="C0", alpha=0.6))
ax.scatter(proposed[:, 1], proposed[:, 0], marker="x", color="C0", s=30, label="proposed")
ax.scatter(achieved[:, 1], achieved[:, 0], color="C1", s=15, label="hindsight action")
ax.legend(fontsize=7, loc="lower left")
ax.set_title("subgoal level: hindsight actions")
ax.axis("off")
plt.show()

# %% [markdown]
# ## Training
#
# The loop of notebook 2, with the hindsight steps between the collector and the learners.
# The subgoal level's own hindsight goals relabel the *env* goal, which lives in entries 2-3 of
# its observation (`GoalSlot.observation((2, 3))`), with the env's 0/1 reward. A missed tested
# subgoal ends its transition with value `penalty` (HAC uses −H with its −1/0 rewards; with
# this level's 0/1 reward, 0 is already the worst). `update_ratio` counts the relabelled
# transitions too (5 per real one here).

# %%
top_her = HindsightGoals(
    GoalReward(space, TOL, goal=GoalSlot.observation((2, 3)), reached=1.0, not_reached=0.0,
               norm=INF),
    gamma=top.gamma, k=4, level="subgoal",
)
common = dict(lr=1e-3, batch_size=256, target_update="soft", tau=0.01, max_grad_norm=10.0)
learners = {
    "subgoal": LevelLearner(top_loss, level=top, update_ratio=0.1, warmup=500, **common),
    "walker": LevelLearner(walker_loss, level=walker, update_ratio=0.02, warmup=1000, **common),
}
collector = Collector(
    TransformedEnv(env, hier.transform), hier.policy, frames_per_batch=FRAMES_PER_BATCH,
    total_frames=N_BATCHES * FRAMES_PER_BATCH, auto_register_policy_transforms=False,
)
episodes = LevelEpisodes(hier)
log = {"frames": [], "hit": [], "successes": [], "episodes": []}
frames = 0
for batch in collector:
    ready = episodes.add(batch)
    learners["walker"].extend(walker_her(ready["walker"]))
    learners["subgoal"].extend(subgoal_transitions(
        ready["subgoal"], space, tolerance=TOL, norm=INF, penalty=0.0, goals=top_her,
        level="subgoal",
    ))
    anneal_exploration(walker.policy, batch.numel())
    for learner in learners.values():
        learner.update()

    sub = hier.transitions(batch)["subgoal"]  # this batch's subgoals: reached or not?
    reached = walker_reward.is_reached(space.achieved(sub["next", "observation"]),
                                       sub["action"][:, :2])
    ended = batch["next", "done"]
    frames += batch.numel()
    log["frames"].append(frames)
    log["hit"].append(reached.float().mean().item())
    log["successes"].append(int(batch["next", "is_success"][ended].sum()))
    log["episodes"].append(int(ended.sum()))
collector.shutdown()
print("transitions (relabelled included):", {k: l.n_transitions for k, l in learners.items()},
      "| gradient steps:", {k: l.n_updates for k, l in learners.items()})

# %% [markdown]
# Left: the fraction of subgoals the walker reached, per batch: the goal-conditioned walker
# learns from hindsight goals long before it reaches many of the subgoals it is given. Right:
# the fraction of training episodes that reached the env goal (over the last 4 batches),
# against a hierarchy of two random levels (dashed). The subgoal level can only make progress
# once the walker reaches what it is told.

# %%
random_hier = Hierarchy(
    [random_level("subgoal", top.action_spec),
     random_level("walker", env.action_spec_unbatched, control=Timeout(HORIZON), lowest=True)],
    env,
)
baseline = rollout(random_hier, n_steps=4 * MAX_STEPS)
ended = baseline["next", "done"]
random_success = baseline["next", "is_success"][ended].float().mean().item()

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(log["frames"], log["hit"], color="C0")
axes[0].set(title="walker reaches its subgoal", xlabel="env frames", ylim=(0, 1))
window = lambda values: np.convolve(values, np.ones(4))[: len(values)]  # sums of last 4
ended_recently = window(log["episodes"])
success_rate = np.where(ended_recently >= 8, window(log["successes"]) / ended_recently, np.nan)
axes[1].plot(log["frames"], success_rate, color="C2")
axes[1].axhline(random_success, color="grey", linestyle="--", label="random levels")
axes[1].set(title="training episodes that reached the goal", xlabel="env frames", ylim=(0, 1.05))
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The same instance as before, after training, with deterministic actions (no exploration,
# no subgoal tests).

# %%
after = rollout(hier, exploration=ExplorationType.DETERMINISTIC)
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
plot_subgoals(axes[0], before, title="before training (exploring)")
plot_subgoals(axes[1], after, title="after training (greedy)")
plt.show()

# %% [markdown]
# ## Where next
#
# * `SubgoalSpace(..., relative=True)` makes subgoals displacements from where they were set
#   (the level below still gets the absolute target); `subgoal_level(..., goal_space=...,
#   tolerance=...)` stacks a middle level for 3-level HAC.
# * `PointMaze` is the continuous version of these mazes: use `goal_conditioned_level` with its
#   `Bounded` action spec (TD3 or SAC) at the bottom.
# * `benchmarks/learning.py` compares these hierarchies with flat agents on larger mazes.
