# %% [markdown]
# # 1. Your first hierarchy
#
# A hierarchy in `torchrl_hier` is a stack of **levels**, highest first. Each level emits an
# action for the level below; the lowest level emits the environment's action. A higher level
# keeps its action until the level below **hands control back**, so it acts less often and
# lives in a *semi-MDP*: each of its transitions spans τ ≥ 1 environment steps.
#
# There is no training loop of its own. A hierarchy is two ordinary TorchRL objects:
#
# * `hier.policy`, a `TensorDictModule` (the **forward pass**: who chooses, who keeps its action),
# * `hier.transform`, an env `Transform` (the **backward pass**: who completed a transition,
#   with which reward and τ),
#
# and all of its state travels in the TensorDict under the `"hier"` key. So anything that runs a
# TorchRL policy in a TorchRL env runs a hierarchy: `env.rollout`, `Collector` (called
# `SyncDataCollector` before TorchRL 0.14), `MultiSyncCollector`, `ParallelEnv`, on CPU or GPU.
#
# This notebook builds a two-level hierarchy by hand on a built-in maze, runs it in a
# `Collector`, and looks at what it produced. Nothing learns yet: that is notebook 2.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector  # SyncDataCollector before TorchRL 0.14
from torchrl.data import Categorical
from torchrl.envs import TransformedEnv, check_env_specs

from torchrl_hier import Hierarchy, Level, ModuleRule, Timeout
from torchrl_hier.envs import make_env
from torchrl_hier.levels import random_level

SEED = 0
N_ENVS = 8  # env instances, stepped together as one batch
device = torch.device("cpu")  # everything below runs unchanged on "cuda"
torch.manual_seed(SEED)

# %% [markdown]
# ## The task
#
# `GridMaze-FourRooms` is a batched, pure-torch maze: 8 instances here, each with its own start
# (red) and goal (green). The observation is `(agent_row, agent_col, goal_row, goal_col)`
# scaled to [0, 1]; the 4 actions move up, down, left, right; reaching the goal gives reward 1
# and ends the episode, which is otherwise truncated after 100 steps. (The collector below
# resets the instances again, so its episodes start elsewhere.)

# %%
env = make_env("GridMaze-FourRooms", batch_size=N_ENVS, device=device, seed=SEED)
env.reset()
print("observation:", env.observation_spec["observation"])
print("action:", env.action_spec)

fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
for i, ax in enumerate(axes):
    ax.imshow(env.render(i))
    ax.set_title(f"instance {i}")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Two levels
#
# * **`option`** (top) picks one of 4 *options* uniformly at random: "go up / down / left /
#   right". A `random_level` is a `Level` whose policy samples its action spec.
# * **`walker`** (lowest) emits the env action. Its policy is a hand-written `TensorDictModule`
#   that reads the option it was given (`"parent_action"`) and follows it, with a little noise.
#
# A level's **return-control rule** says when it hands control back to the level above. The
# walker hands back after 6 of its steps (`Timeout(6)`) *or* when it bumps into a wall (a
# `ModuleRule` on a plain callable). Rules compose with `|` and `&`. An episode end always hands
# control back through every level.

# %%
class FollowOption(nn.Module):
    """Moves in the direction of the parent's option (0..3 = up, down, left, right), and in a
    random direction with probability ``noise``."""

    def __init__(self, noise: float = 0.2):
        super().__init__()
        self.noise = noise

    def forward(self, parent_action: torch.Tensor) -> torch.Tensor:
        random_move = torch.randint_like(parent_action, 4)
        explore = torch.rand(parent_action.shape, device=parent_action.device) < self.noise
        return torch.where(explore, random_move, parent_action)


def bumped_into_a_wall(step):
    """The agent did not move: its cell (first two observation entries) is unchanged."""
    return (step.next_observation[..., :2] == step.observation[..., :2]).all(-1)


option = random_level("option", Categorical(4))
walker = Level(
    "walker",
    TensorDictModule(FollowOption(), in_keys=["parent_action"], out_keys=["action"]),
    control=Timeout(6) | ModuleRule(bumped_into_a_wall),
)
hier = Hierarchy([option, walker], env)  # validates the stack with a dry run
print(hier.names)

# %% [markdown]
# `hier.transform` is the backward pass as a TorchRL transform; the transformed env declares
# the hierarchy state in its specs, so `check_env_specs` passes and collectors keep it.
# `Collector` is TorchRL's single-process collector (it was `SyncDataCollector`). With 8
# instances, `frames_per_batch=800` gives batches of shape `[8, 100]`: 100 steps per instance.

# %%
hier_env = TransformedEnv(env, hier.transform)
check_env_specs(hier_env)

collector = Collector(
    hier_env,
    hier.policy,
    frames_per_batch=N_ENVS * 100,
    total_frames=N_ENVS * 100,
    auto_register_policy_transforms=False,
)
batch = next(iter(collector))
collector.shutdown()
print(batch.batch_size)

# %% [markdown]
# ## What the TensorDict carries
#
# Besides the usual TorchRL entries, every step holds the hierarchy state under `"hier"`
# (before the step) and `("next", "hier")` (after it). Per instance and level (last dim = 2
# levels, `option` first):
#
# | entry | dtype | meaning |
# |---|---|---|
# | `completed` | bool | the level completed a transition at this step |
# | `steps` | int64 | env steps in the level's running transition (τ when completed) |
# | `return` | float | its discounted reward so far, $\sum_k \gamma^k r_k$ |
# | `count` | int64 | transitions it completed since it took control (what `Timeout` counts) |
#
# and for each level above the lowest, `("hier", f"{name}_action")` (its pending action) and
# `("hier", f"{name}_observation")` (its observation when it chose it).

# %%
print(batch["next", "hier"])

# %%
i = 0  # one instance, first 20 steps
t = slice(0, 20)
print("walker action    ", batch["action"][i, t].tolist())
print("pending option   ", batch["hier", "option_action"][i, t].tolist())
print("option completed ", batch["next", "hier", "completed"][i, t, 0].int().tolist())
print("option steps (τ) ", batch["next", "hier", "steps"][i, t, 0].tolist())

# %% [markdown]
# ### Which level completed when
#
# The walker completes a transition at every env step. The option level completes one only
# when the walker hands control back (timeout or wall) or the episode ends (dashed lines); the
# next option is chosen at the following step.

# %%
completed = batch["next", "hier", "completed"]  # [envs, time, levels]
done = batch["next", "done"].squeeze(-1)  # [envs, time]
fig, axes = plt.subplots(4, 1, figsize=(10, 4.5), sharex=True)
for i, ax in enumerate(axes):
    for row, name in enumerate(hier.names):
        steps = completed[i, :, row].nonzero().squeeze(-1).numpy()
        y = len(hier.names) - 1 - row  # the top level on top
        ax.scatter(steps, np.full(len(steps), y), marker="|", s=120, color=f"C{row}")
    for end in done[i].nonzero().squeeze(-1).tolist():
        ax.axvline(end, color="k", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(hier.names)), hier.names[::-1])
    ax.set_ylim(-0.6, 1.6)
    ax.set_ylabel(f"#{i}", rotation=0, labelpad=15)
axes[0].set_title("completed transitions per level (dashed: episode end)")
axes[-1].set_xlabel("env step")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### The walk, coloured by option
#
# Instance 0's path through the maze, one colour per option; dots mark where the option level
# chose again. The walker follows each option until it hits a wall or 6 steps pass.

# %%
i = 0
cells = (batch["observation"][i, :, :2] * env.scale).round()  # [time, (row, col)]
first_end = int(done[i].nonzero()[0]) + 1 if done[i].any() else done.shape[1]
cells = cells[:first_end]
options = batch["hier", "option_action"][i, :first_end]
chose = torch.cat([torch.tensor([True]), completed[i, : first_end - 1, 0]])
colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
names = ["up", "down", "left", "right"]

fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.imshow(env.walls.cpu(), cmap="Greys", vmin=0, vmax=1.6)
jitter = torch.randn_like(cells) * 0.08  # so that revisited cells stay visible
for k in range(len(cells) - 1):
    a, b = cells[k] + jitter[k], cells[k + 1] + jitter[k + 1]
    ax.plot([a[1], b[1]], [a[0], b[0]], color=colors[options[k]], linewidth=2)
starts = cells[chose] + jitter[chose]
ax.scatter(starts[:, 1], starts[:, 0], color="k", s=12, zorder=3)
goal = (batch["observation"][i, 0, 2:] * env.scale).round()
ax.scatter([goal[1]], [goal[0]], color="green", marker="*", s=250, zorder=3)
for color, name in zip(colors, names):
    ax.plot([], [], color=color, label=name)
ax.legend(loc="upper right", fontsize=7)
ax.set_title(f"instance {i}: {first_end} steps, {int(chose.sum())} options")
ax.axis("off")
plt.show()

# %% [markdown]
# ## Each level's transitions
#
# `hier.transitions(batch)` cuts the batch into each level's **completed** semi-MDP
# transitions, as flat TensorDicts in standard TorchRL keys, ready for a replay buffer and a
# `torchrl.objectives` loss:
#
# * `observation`, `action` (and `parent_action` below the top): what the level saw and did
#   when it chose;
# * `steps_to_next_obs`: τ, the env steps the transition spans; TorchRL's value estimators and
#   `DQNLoss` read this key and bootstrap with $\gamma^\tau$;
# * `("next", ...)`: the observation after the last step, the level's reward
#   $\sum_{k<\tau} \gamma^k r_k$, and `done` / `terminated` / `truncated` from the env.

# %%
transitions = hier.transitions(batch)
for name, data in transitions.items():
    keys = sorted("/".join(key) if isinstance(key, tuple) else key for key in data.keys(True, True))
    print(f"{name}: {data.batch_size[0]} transitions with {keys}")

options_td = transitions["option"]
print("\nfirst option transitions of the batch:")
print("action τ   observation (cell) -> next observation (cell)")
for k in range(5):
    start = (options_td["observation"][k, :2] * env.scale).round().int().tolist()
    end = (options_td["next", "observation"][k, :2] * env.scale).round().int().tolist()
    print(f"{names[options_td['action'][k]]:>6} {int(options_td['steps_to_next_obs'][k]):2d}"
          f"   {start} -> {end}")

# %% [markdown]
# The distribution of τ for the option level: at most 6 (the timeout), shorter when the walker
# bumped into a wall or the episode ended. The walker's τ is always 1.

# %%
tau = options_td["steps_to_next_obs"].squeeze(-1)
fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(*torch.unique(tau, return_counts=True), color="C0")
ax.set_xlabel("τ (env steps per option transition)")
ax.set_ylabel("transitions")
ax.set_title(f"option level: {tau.numel()} transitions, mean τ = {tau.float().mean():.2f}")
plt.show()
assert (transitions["walker"]["steps_to_next_obs"] == 1).all()

# %% [markdown]
# ## Durations tile the episode
#
# Per instance, the τ of the completed option transitions plus the steps of the one still
# running at the end of the batch add up to the 100 steps collected: nothing is lost or
# counted twice, including across episode ends. (Cutting the rollout into batches elsewhere,
# or running it in a `MultiSyncCollector` or a `ParallelEnv`, gives the same transitions.)

# %%
env_index = torch.arange(N_ENVS)[:, None].expand(N_ENVS, 100)[completed[..., 0]]
tau_per_instance = torch.zeros(N_ENVS, dtype=torch.int64).index_add_(0, env_index, tau)
running = torch.where(
    completed[:, -1, 0], 0, batch["next", "hier", "steps"][:, -1, 0]
)  # steps of the option still running after the last step
print("sum of τ + running steps:", (tau_per_instance + running).tolist())
assert ((tau_per_instance + running) == 100).all()

# %% [markdown]
# ## Where next
#
# * Notebook 2 trains both levels with `DQNLoss` in a custom loop.
# * Notebook 3 drives the same machinery with the LayeredRL-style `get_action` /
#   `process_transition` API.
# * Notebook 4 uses ready-made subgoal levels and hindsight relabelling.
