# %% [markdown]
# # 3. The LayeredRL-style API
#
# Code written for LayeredRL drives a hierarchy
# step by step on a gymnasium vector env:
#
# ```python
# action = hierarchy.get_action(obs)                  # forward pass
# obs_next, reward, terminated, truncated, info = env.step(action)
# hierarchy.process_transition(obs_next, reward, terminated, truncated)  # backward pass
# hierarchy.learn()
# ```
#
# `torchrl_hier.layered` keeps that API (`Hierarchy`, `RandomHierarchy`, `Collector`) on top of
# the same engine as notebooks 1 and 2: the levels are `torchrl_hier.Level`s, the learners
# `LevelLearner`s, and the per-instance state is the engine's `"hier"` TensorDict, so the
# transitions are the ones a TorchRL `Collector` would produce.
#
# **One difference from the LayeredRL docs:** gymnasium 1.x reports the last observation of an
# episode as `info["final_obs"]` (mask `info["_final_obs"]`), not `info["final_observation"]`,
# and only when the vector env autoresets in the `SAME_STEP` mode. With the old key the check
# never fires and the hierarchy silently learns from *reset* observations.

# %%
import tempfile
from pathlib import Path

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from tensordict.nn import TensorDictSequential
from torch import nn
from torchrl.data import Categorical
from torchrl.modules import MLP, EGreedyModule, QValueActor
from torchrl.objectives import DQNLoss

from torchrl_hier import Level, Timeout
from torchrl_hier.layered import Collector, Hierarchy, RandomHierarchy
from torchrl_hier.learning import LevelLearner

SEED = 0
N_ENVS = 8
device = torch.device("cpu")
torch.manual_seed(SEED)
torch.set_num_threads(1)  # small networks: more threads only contend


def make_cartpoles(n: int) -> gym.vector.VectorEnv:
    """n CartPoles that reset in the same step an episode ends (SAME_STEP autoreset)."""
    return gym.make_vec(
        "CartPole-v1", num_envs=n, vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )


env, eval_env = make_cartpoles(N_ENVS), make_cartpoles(4)
print(env.single_observation_space, env.single_action_space)

# %% [markdown]
# ## A random baseline
#
# `RandomHierarchy(env, device)` is one level acting uniformly at random. `Collector` steps
# the vector env with it and reports statistics of the episodes that ended.

# %%
random_hierarchy = RandomHierarchy(env, device)
collector = Collector(hierarchy=random_hierarchy, env=env, progress=False)
collector.reset(seed=SEED)
stats = collector.collect(n_steps=100, learn=False)
random_return = stats["mean_return"]
print(f"{stats['episodes']} episodes, mean return {random_return:.1f}, "
      f"{stats['steps_per_second']:.0f} env steps/s")

# %% [markdown]
# ## Two levels
#
# * **`option`** (top) picks one of 2 options every 4 steps. Through an *env observation map*
#   it sees only the pole (angle and angular velocity), not the cart: LayeredRL's
#   `env_obs_maps` / `mapped_env_obs_shapes`, where `-2` means "2 entries fewer than the env
#   observation".
# * **`balance`** (lowest) pushes the cart left or right, from the full observation and the
#   option (`parent_action`, one-hot); it hands control back after 4 steps.
#
# Both are DQN levels from stock TorchRL modules, each with a `LevelLearner` (replay buffer,
# `DQNLoss`, target network) passed to the hierarchy as `learners=`.

# %%
def dqn_policy(qnet, in_keys, spec, annealing_num_steps):
    """A Q-value actor and its epsilon-greedy policy; epsilon anneals over that many of the
    level's own transitions (hierarchy.learn() steps it)."""
    qvalue = QValueActor(qnet, in_keys=in_keys, spec=spec)
    explore = EGreedyModule(spec, eps_init=1.0, eps_end=0.05, annealing_num_steps=annealing_num_steps)
    return qvalue, TensorDictSequential(qvalue, explore)


class BalanceQNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = MLP(in_features=4 + 2, out_features=2, num_cells=[64, 64])

    def forward(self, observation, parent_action):
        option = nn.functional.one_hot(parent_action, 2).float()
        return self.mlp(torch.cat([observation, option], -1))


# An option lasts 4 steps, so 750 option transitions span the same 3,000 env steps.
option_q, option_policy = dqn_policy(
    MLP(in_features=2, out_features=2, num_cells=[64, 64]), ["observation"], Categorical(2), 750
)
balance_q, balance_policy = dqn_policy(BalanceQNet(), ["observation", "parent_action"],
                                       Categorical(2), 3_000)
option = Level("option", option_policy, action_spec=Categorical(2), gamma=0.99)
balance = Level("balance", balance_policy, control=Timeout(4), gamma=0.99)

common = dict(lr=2.5e-3, batch_size=128, target_update="hard", period=50)
learners = {
    "option": LevelLearner(
        DQNLoss(option_q, action_space=Categorical(2), delay_value=True),
        level=option, warmup=250, update_ratio=1 / 4, **common,
    ),
    "balance": LevelLearner(
        DQNLoss(balance_q, action_space=Categorical(2), delay_value=True),
        level=balance, warmup=1000, update_ratio=1 / 8, **common,
    ),
}
hierarchy = Hierarchy(
    levels=[option, balance],
    env=env,
    env_obs_maps=[lambda obs: obs[..., 2:], None],  # the option level sees the pole only
    mapped_env_obs_shapes=[-2, None],
    learners=learners,
    device=device,
)
print(hierarchy)

# %% [markdown]
# ## The manual loop
#
# The loop of the LayeredRL docs, with gymnasium 1.x's `final_obs`. Two things the docs leave
# implicit are needed, as in LayeredRL itself: `hierarchy.reset()` once at the start, and
# `obs = obs_next` at the end of each iteration. `process_transition` also *returns* each
# level's completed transitions (a mapping `{level name: TensorDict}`), in case the loop wants
# them. It extracts a level's transitions only when they are read (by that level's learner or
# by you), so a loop that ignores them does not pay for them.

# %%
hierarchy.train()
obs, info = env.reset(seed=SEED)
hierarchy.reset()
episode_ends = []

for _ in range(100):
    with torch.no_grad():
        action = hierarchy.get_action(obs)
    action = action.cpu().numpy()

    obs_next, reward, terminated, truncated, info = env.step(action)

    # Where an episode ended, the step reached info["final_obs"]; obs_next is already the
    # first observation of the next episode.
    if "_final_obs" in info:
        obs_next_transition = obs_next.copy()
        for i, env_final_obs in enumerate(info["final_obs"]):
            if env_final_obs is not None:
                obs_next_transition[i] = env_final_obs
                episode_ends.append((env_final_obs, obs_next[i]))
    else:
        obs_next_transition = obs_next

    level_transitions = hierarchy.process_transition(
        obs_next=obs_next_transition, rew=reward, terminated=terminated, truncated=truncated
    )
    hierarchy.learn()
    obs = obs_next

print("transitions per level:", hierarchy.n_transitions)
print("last step's transitions:", {k: v.batch_size for k, v in level_transitions.items()})
final, reset = episode_ends[0]
print(f"an episode end: final obs {np.round(final, 2)}, reset obs {np.round(reset, 2)}")

# %% [markdown]
# ## The `Collector`
#
# `Collector(hierarchy=..., env=...)` runs the same loop, vectorised, and
# `collect(n_steps=..., learn=True)` learns as it goes. Each `hierarchy.learn()` (which the
# loop above and `collect(learn=True)` call every step) also anneals the epsilon of every level
# that has a learner by the transitions that level completed since the last call: a high level,
# which completes one transition per option, anneals on its own clock. We call `collect` in
# chunks of 100 vector steps to log between them.

# %%
collector = Collector(hierarchy=hierarchy, env=env, eval_env=eval_env, eval_episodes=4,
                      progress=False)
collector.reset(seed=SEED)
curve = {"env_steps": [], "returns": [], "losses": []}
for chunk in range(7):
    stats = collector.collect(n_steps=100, learn=True)
    curve["env_steps"].append(collector.env_steps)
    curve["returns"].append(stats["episode_returns"])
    curve["losses"].append({name: logs["loss"] for name, logs in stats["losses"].items()})
    print(f"{collector.env_steps:5d} env steps: {stats['episodes']:3d} episodes, mean return "
          f"{stats['mean_return']:6.1f}, transitions {stats['transitions']}")

# %% [markdown]
# `collector.evaluate()` runs a copy of the hierarchy (`hierarchy.get_copy()`, sharing the
# networks, with its own per-instance state) in eval mode, with greedy actions, on the eval
# env; the training episodes in flight are untouched. (The DQN losses grow as the learned
# values grow with longer episodes: a loss is not a progress measure in RL.)

# %%
evaluation = collector.evaluate(n_episodes=8)
print(f"greedy evaluation: mean return {evaluation['mean_return']:.1f} over "
      f"{evaluation['episodes']} episodes (random: {random_return:.1f})")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.3))
for steps, returns in zip(curve["env_steps"], curve["returns"]):
    axes[0].scatter([steps] * len(returns), returns, s=8, color="C0", alpha=0.4)
means = [np.mean(r) if r else np.nan for r in curve["returns"]]
axes[0].plot(curve["env_steps"], means, color="C0", label="training episodes (ε-greedy)")
axes[0].axhline(random_return, color="grey", linestyle="--", label="random")
axes[0].axhline(evaluation["mean_return"], color="C2", linestyle=":", label="final greedy eval")
axes[0].set(xlabel="env steps", ylabel="episode return", title="CartPole-v1")
axes[0].legend(fontsize=8)
for name, color in (("option", "C0"), ("balance", "C1")):
    axes[1].plot(curve["env_steps"], [l.get(name, np.nan) for l in curve["losses"]],
                 color=color, label=name)
axes[1].set(xlabel="env steps", title="mean DQN loss per chunk", yscale="log")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Saving mid-episode
#
# `save` writes the level parameters, the learners (losses, target networks, optimizers; the
# replay buffers with `include_buffers=True`), the in-flight per-instance state and the RNG
# state, so `load` resumes with the same next actions.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "cartpole_hierarchy.pt"
    hierarchy.save(path)
    hierarchy.load(path)
    print(f"saved and loaded {path.name} ({path.stat().st_size / 1e3:.0f} kB)")

# %% [markdown]
# ## Where next
#
# * The `Collector` also steps TorchRL envs with batch size `[n]` (e.g.
#   `torchrl_hier.envs.make_env("GridMaze-FourRooms", batch_size=8)`), and gymnasium vector
#   envs in `DISABLED` autoreset mode; it refuses `NEXT_STEP`, where the step after an
#   episode end ignores the action.
# * The same `Level`s and `LevelLearner`s work in a TorchRL `Collector` with
#   `torchrl_hier.Hierarchy` (notebooks 1 and 2).
