# %% [markdown]
# # 2. Training each level with a `torchrl.objectives` loss
#
# Every level of a hierarchy learns from its **own** semi-MDP transitions, with a stock TorchRL
# loss and replay buffer. This notebook trains both levels of a two-level hierarchy with
# `DQNLoss` in a plain loop over a TorchRL `Collector`:
#
# ```python
# for batch in collector:
#     learners.extend(hier.transitions(batch))  # each level's SMDP transitions -> its buffer
#     learners.update()                          # each level's gradient steps
# ```
#
# `torchrl_hier.learning.LevelLearner` bundles what one level needs (replay buffer, loss,
# optimizer, target-network updates, warm-up and update ratio counted in *that level's*
# transitions) and `HierarchyLearner` routes each level's transitions to its learner.
#
# The task: reach a fixed goal in a small four-rooms maze.
#
# * **`navigator`** (top) chooses a direction, *up / down / left / right*, every few steps.
# * **`walker`** (lowest) moves in the maze. It is rewarded for moving in the direction it was
#   told (its own, *intrinsic* reward), and hands control back after 3 steps or when it bumps
#   into a wall.
#
# Both are DQN agents built from stock TorchRL modules. The budget is tiny (about 12k env
# steps, well under a minute on a laptop CPU), so expect a clear improvement, not a solved maze.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torch import nn
from torchrl.collectors import Collector  # SyncDataCollector before TorchRL 0.14
from torchrl.data import Categorical
from torchrl.envs import ExplorationType, TransformedEnv, set_exploration_type
from torchrl.modules import MLP, EGreedyModule, QValueActor
from torchrl.objectives import DQNLoss

from torchrl_hier import Hierarchy, Level, ModuleRule, Timeout
from torchrl_hier.envs import GridMaze, path_distances
from torchrl_hier.learning import HierarchyLearner, LevelLearner
from torchrl_hier.levels import random_level

SEED = 0
N_ENVS = 16
FRAMES_PER_BATCH = 256  # 16 steps of 16 envs
TOTAL_FRAMES = 48 * FRAMES_PER_BATCH
MAX_STEPS = 30  # per episode
HORIZON = 3  # walker steps per option, at most
device = torch.device("cpu")
torch.manual_seed(SEED)
torch.set_num_threads(1)  # small networks: more threads only contend

# %% [markdown]
# ## The maze
#
# A text layout: `#` walls, `.` free cells, `G` the only goal cell. Starts are sampled among
# the free cells at least 3 cells away from the goal.

# %%
LAYOUT = [
    "#########",
    "#...#...#",
    "#.......#",
    "#...#...#",
    "##.###.##",
    "#...#...#",
    "#.......#",
    "#...#..G#",
    "#########",
]


def make_maze(n_envs: int, seed: int) -> GridMaze:
    return GridMaze(
        batch_size=[n_envs], layout=LAYOUT, max_steps=MAX_STEPS, min_distance=3,
        device=device, seed=seed,
    )


env = make_maze(N_ENVS, SEED)
ROWS, COLS = env.walls.shape
MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]], device=device)  # up, down, left, right


def cell(observation: torch.Tensor) -> torch.Tensor:
    """The agent's (row, col) from an observation (coordinates scaled to [0, 1])."""
    return (observation[..., :2] * env.scale).round().long()


# %% [markdown]
# ## Each level's observation and reward
#
# A `Level` can see a *mapped* observation (`obs_map`) and earn its *own* reward (`reward`,
# a function of the `LevelStep` the backward pass hands it, called every env step; the
# level's transition reward is $\sum_{k<\tau} \gamma^k r_k$).
#
# * The navigator sees only the agent's cell, one-hot (the goal never moves), and earns, per
#   env step, how much closer to the goal (in maze steps) the agent got: a shaped version of
#   the sparse env reward that keeps the same optimal paths.
# * The walker sees the observation and the direction it was told (`parent_action`), and earns
#   1 when it moved one cell in that direction, 0 otherwise.

# %%
# Maze distance of every cell to the goal, from the free cells' shortest-path table.
free = env.free_cells
goal_index = (free == torch.tensor([7, 7], device=device)).all(-1).nonzero().item()
DIST = torch.zeros(ROWS, COLS, device=device)
DIST[free[:, 0], free[:, 1]] = path_distances(env.walls, free)[:, goal_index].float().to(device)


def agent_cell_one_hot(observation: torch.Tensor) -> torch.Tensor:
    c = cell(observation)
    return nn.functional.one_hot(c[..., 0] * COLS + c[..., 1], ROWS * COLS).float()


def progress_to_goal(step) -> torch.Tensor:
    """Maze steps gained towards the goal during this env step (root/next: the env's TDs)."""
    before, after = cell(step.root["observation"]), cell(step.next["observation"])
    return DIST[before[..., 0], before[..., 1]] - DIST[after[..., 0], after[..., 1]]


def moved_as_told(step) -> torch.Tensor:
    moved = cell(step.next_observation) - cell(step.observation)
    return (moved == MOVES[step.parent_action]).all(-1).float()


def bumped_into_a_wall(step) -> torch.Tensor:
    return (cell(step.next_observation) == cell(step.observation)).all(-1)


# %% [markdown]
# ## Two DQN levels
#
# A DQN level is a Q-network (`QValueActor`: Q-values, then the greedy action) followed by
# epsilon-greedy exploration (`EGreedyModule`); its loss is `DQNLoss` on the Q-network alone.
# The walker's Q-network also reads `"parent_action"`, one-hot encoded.
# (`torchrl_hier.levels.option_level` builds the same kind of level in one call.)

# %%
class WalkerQNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = MLP(in_features=4 + 4, out_features=4, num_cells=[64, 64])

    def forward(self, observation, parent_action):
        told = nn.functional.one_hot(parent_action, 4).float()
        return self.mlp(torch.cat([observation, told], -1))


def dqn_policy(qnet, in_keys, spec, eps_frames):
    qvalue = QValueActor(qnet, in_keys=in_keys, spec=spec)
    explore = EGreedyModule(spec, eps_init=1.0, eps_end=0.05, annealing_num_steps=eps_frames)
    return qvalue, explore, TensorDictSequential(qvalue, explore)


nav_q, nav_explore, nav_policy = dqn_policy(
    MLP(in_features=ROWS * COLS, out_features=4, num_cells=[64, 64]),
    ["observation"], Categorical(4), eps_frames=TOTAL_FRAMES // 2,
)
walk_q, walk_explore, walk_policy = dqn_policy(
    WalkerQNet(), ["observation", "parent_action"], env.action_spec_unbatched,
    eps_frames=TOTAL_FRAMES // 4,
)
navigator = Level(
    "navigator", nav_policy, action_spec=Categorical(4),
    obs_map=agent_cell_one_hot, obs_shape=ROWS * COLS, reward=progress_to_goal, gamma=0.9,
)
walker = Level(
    "walker", walk_policy,
    control=Timeout(HORIZON) | ModuleRule(bumped_into_a_wall), reward=moved_as_told, gamma=0.5,
)
hier = Hierarchy([navigator, walker], env)

# %% [markdown]
# ## One learner per level
#
# `LevelLearner(loss, level=level, ...)` sets the loss's value estimator to TD(0) with the
# level's gamma, so the target is $R + \gamma^{\tau}(1 - \text{terminated})\max_a Q'(s', a)$
# with τ read from `steps_to_next_obs`. `warmup` and `update_ratio` count the level's own
# transitions: the navigator completes about one transition every 2-3 env steps, the walker
# one per env step, so equal ratios would starve the navigator or drown the walker.

# %%
common = dict(lr=3e-3, batch_size=256, warmup=256, target_update="hard", period=20)
learners = HierarchyLearner(
    {
        "navigator": LevelLearner(
            DQNLoss(nav_q, action_space=Categorical(4), delay_value=True),
            level=navigator, update_ratio=1 / 8, **common,
        ),
        "walker": LevelLearner(
            DQNLoss(walk_q, action_space=env.action_spec_unbatched, delay_value=True),
            level=walker, update_ratio=1 / 16, **common,
        ),
    },
    hierarchy=hier,  # checks each learner against its level (gamma, keys)
)
print(learners)

# %% [markdown]
# ## The training loop
#
# The `Collector` runs `hier.policy` in the transformed env, in exploration mode. Per batch:
# route each level's transitions to its learner, take the gradient steps each one is owed,
# anneal epsilon, and log.

# %%
collector = Collector(
    TransformedEnv(env, hier.transform),
    hier.policy,
    frames_per_batch=FRAMES_PER_BATCH,
    total_frames=TOTAL_FRAMES,
    auto_register_policy_transforms=False,
)
log = {"frames": [], "success": [], "told": [], "navigator": [], "walker": []}
frames = 0
for batch in collector:
    transitions = hier.transitions(batch)
    learners.extend(transitions)
    losses = learners.update()  # {level: {"loss": mean over this batch's steps}}
    nav_explore.step(batch.numel())
    walk_explore.step(batch.numel())

    frames += batch.numel()
    ended = batch["next", "done"]
    log["frames"].append(frames)
    log["success"].append(batch["next", "is_success"][ended].float().mean().item()
                          if ended.any() else np.nan)
    walker_data = transitions["walker"]
    followed = walker_data["action"] == walker_data["parent_action"]
    log["told"].append(followed.float().mean().item())
    for name in ("navigator", "walker"):
        log[name].append(losses.get(name, {}).get("loss", np.nan))
collector.shutdown()
print("transitions:", learners.n_transitions, " gradient steps:", learners.n_updates)

# %% [markdown]
# ## Learning curves
#
# Left: the fraction of training episodes (with exploration) that reached the goal, per batch
# (dots) and smoothed. Middle: how often the walker's move is the direction it was told
# (its ε-greedy exploration included). Right: each level's DQN loss.

# %%
def smooth(values, k=8):
    values = np.asarray(values, dtype=float)
    out = np.full_like(values, np.nan)
    for i in range(len(values)):
        window = values[max(0, i - k + 1): i + 1]
        if np.isfinite(window).any():
            out[i] = np.nanmean(window)
    return out


fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
axes[0].plot(log["frames"], log["success"], ".", alpha=0.3, color="C0")
axes[0].plot(log["frames"], smooth(log["success"]), color="C0")
axes[0].set(title="training episodes that reached the goal", xlabel="env frames", ylim=(0, 1))
axes[1].plot(log["frames"], smooth(log["told"]), color="C1")
axes[1].set(title="walker: moves in the direction told", xlabel="env frames", ylim=(0, 1))
for name, color in (("navigator", "C0"), ("walker", "C1")):
    axes[2].plot(log["frames"], log[name], color=color, label=name)
axes[2].set(title="DQN loss", xlabel="env frames", yscale="log")
axes[2].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## γ^τ: what the navigator's loss bootstraps with
#
# A navigator transition spans τ env steps, so its target discounts the next state's value by
# $\gamma^\tau$, not $\gamma$. The loss does this itself, reading `steps_to_next_obs` from the
# sampled transitions. Below, the target the loss computes on a sample from the navigator's
# replay buffer, against the SMDP backup computed by hand.

# %%
loss = learners["navigator"].loss
sample = learners["navigator"].buffer.sample()  # a batch of 256
with torch.no_grad():
    target = loss.value_estimator.value_estimate(
        sample.clone(), target_params=loss.target_value_network_params
    ).squeeze(-1)
    # by hand: the target network's best Q-value in the next observation
    with loss.target_value_network_params.to_module(loss.value_network):
        next_value = loss.value_network(sample["next"].clone())["action_value"].max(-1).values

tau = sample["steps_to_next_obs"].squeeze(-1)
reward = sample["next", "reward"].squeeze(-1)
alive = (~sample["next", "terminated"]).squeeze(-1).float()
gamma = navigator.gamma
by_hand = reward + gamma**tau * alive * next_value
one_step = reward + gamma * alive * next_value
print("max |loss target - SMDP backup|  :", (target - by_hand).abs().max().item())
print("max |loss target - 1-step backup|:", (target - one_step).abs().max().item())
assert torch.allclose(target, by_hand, atol=1e-5)

fig, ax = plt.subplots(figsize=(5, 3))
taus, counts = torch.unique(tau, return_counts=True)
ax.bar(taus, counts, color="C0")
for t, c in zip(taus.tolist(), counts.tolist()):
    ax.annotate(f"γ^τ = {gamma**t:.2f}", (t, c), ha="center", va="bottom", fontsize=8)
ax.set(xlabel="τ", ylabel="sampled transitions", title="navigator: τ and its discount",
       xticks=taus.tolist(), ylim=(0, counts.max().item() * 1.2))
plt.show()

# %% [markdown]
# ## What the navigator learned
#
# Its greedy direction in every cell (the argmax of its Q-values on the one-hot cell). With
# this budget a few cells are still wrong; a wrong arrow next to a wall traps a *fully* greedy
# hierarchy, since it repeats the same choice forever, so we measure success as the hierarchy
# acts at the end of training (ε = 0.05 on each level), on fresh starts, against a hierarchy of
# two random levels.

# %%
with torch.no_grad():
    cells_obs = torch.cat([free.float() / env.scale, torch.zeros_like(free, dtype=torch.float)], -1)
    greedy = nav_q(TensorDict(observation=agent_cell_one_hot(cells_obs), batch_size=[len(free)]))
fig, ax = plt.subplots(figsize=(3.5, 3.5))
ax.imshow(env.walls.cpu(), cmap="Greys", vmin=0, vmax=1.6)
for (r, c), a in zip(free.tolist(), greedy["action"].tolist()):
    label, color = ("G", "green") if (r, c) == (7, 7) else ("↑↓←→"[a], "C0")
    ax.text(c, r, label, ha="center", va="center", fontsize=13, color=color)
ax.set_title("navigator's greedy direction")
ax.axis("off")
plt.show()


@torch.no_grad()
def success_rate(hierarchy, n_envs=128, seed=123):
    """Fraction of n_envs fresh episodes that reach the goal (exploring as in training)."""
    eval_env = TransformedEnv(make_maze(n_envs, seed), hierarchy.transform)
    with set_exploration_type(ExplorationType.RANDOM):
        rollout = eval_env.rollout(MAX_STEPS, hierarchy.policy, break_when_any_done=False)
    done = rollout["next", "done"].squeeze(-1)
    first_episode = (done.cumsum(-1) - done.long()) == 0
    return (rollout["next", "is_success"].squeeze(-1) & first_episode).any(-1).float().mean().item()


random_hier = Hierarchy(
    [random_level("navigator", Categorical(4)),
     random_level("walker", env.action_spec_unbatched, control=Timeout(HORIZON), lowest=True)],
    env,
)
trained, baseline = success_rate(hier), success_rate(random_hier)
print(f"success rate: trained {trained:.2f}, random levels {baseline:.2f}")

fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(["random levels", "trained (ε = 0.05)"], [baseline, trained], color=["grey", "C0"])
ax.set(ylabel="success rate", ylim=(0, 1), title=f"{MAX_STEPS}-step episodes from fresh starts")
plt.show()

# %% [markdown]
# ## Where next
#
# * Raise `TOTAL_FRAMES` and watch the navigator's map settle; try `HORIZON = 1` (a flat agent
#   in disguise) to see what temporal abstraction buys.
# * `LevelLearner` takes any `torchrl.objectives` loss: `DiscreteSACLoss` for options, `SACLoss`
#   / `TD3Loss` for continuous subgoals (notebook 4).
# * `examples/train_cartpole.py` is the same loop as a script, flat and two-level, on CartPole.
