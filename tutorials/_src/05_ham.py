# %% [markdown]
# # 5. Hierarchies of Abstract Machines (HAMs)
#
# A HAM (Parr & Russell, 1997) constrains what an agent may do with *programs*: machines that
# emit actions, call each other, and leave some decisions open at **choice points**, which are
# what the agent learns. In `torchrl_hier.ham` machines are plain Python functions:
#
# * **ACTION** machine: returns a primitive action, which goes to the env;
# * **CHOICE** machine: a named choice point with its own choice spec, decided by a learnable
#   `TensorDictModule` that sees the *joint state* (observation + machine stack [+ args]);
# * **CALL**: `result = yield ham.CALL(machine, args)` runs another machine (recursion allowed);
# * **STOP**: `return value` (the caller gets `value`);
# * and any free ("functional") Python code in between.
#
# Unlike the coroutine library this design comes from, the machines do not drive the env: a
# HAM is a TorchRL **policy** (`ham.policy`: runs each env instance's machines to its next
# action, making the choices of all instances at a choice point in one batched module call)
# plus an env **transform** (`ham.transform`: accumulates, per choice point, the discounted
# reward and the number of env steps τ since its last choice). So `env.rollout`, `Collector`
# (`SyncDataCollector` before TorchRL 0.14) and `MultiSyncCollector` run it, and
# `ham.transitions(batch)` gives each choice point's semi-MDP transitions for `DQNLoss`.

# %%
import time

import gymnasium
import matplotlib.pyplot as plt
import torch
from tensordict.nn import TensorDictModule
from torchrl.collectors import Collector  # SyncDataCollector before TorchRL 0.14
from torchrl.data import Categorical, LazyTensorStorage, ReplayBuffer
from torchrl.envs import ExplorationType, TransformedEnv, set_exploration_type

from torchrl_hier.ham import HAM
from torchrl_hier.ham.taxi import LOCATIONS, decode, make_taxi_env, q_table

torch.manual_seed(0)
torch.set_num_threads(1)

# %% [markdown]
# ## The seed example
#
# The original library's example: a loop machine makes ten repetition choices and repeats an
# action machine that many times. Two things change: machines `yield` their calls (so they
# can pause while the env steps), and a choice is made by a module, not by the machine's body.
# Here the module is a fixed rule (`args % 3`), so we know the result: 19 actions. The env is
# Gymnasium's Taxi (`Taxi-v4`), whose episodes only end with a drop-off, so "north" forever
# never terminates.

# %%
env = make_taxi_env(1, seed=0)  # one Taxi-v4 instance as a batched TorchRL env
myham = HAM(env)

repetition_module = TensorDictModule(lambda args: args % 3, in_keys=["args"], out_keys=["action"])


@myham.learnable_choice_machine(Categorical(3), repetition_module, args_spec=Categorical(10))
def repetition_choice(ham, args, choice):
    return choice + 1  # the value the caller receives


@myham.action_machine
def action_machine(ham, args):
    return args["my action"]  # an action to be executed


@myham.functional_machine
def loop_machine(ham, args):
    for i in range(10):
        rep = yield ham.CALL(repetition_choice, i)
        for _ in range(rep):
            yield ham.CALL(action_machine, {"my action": 1})  # north
    return None


assert myham.machine_count == 3
myham.set_root(loop_machine)

rollout = TransformedEnv(env, myham.transform).rollout(19, myham.policy, break_when_any_done=False)
transitions = myham.transitions(rollout)["repetition_choice"]
print("transitions:", transitions.shape[0])  # ten choice points, no episode end: nine
print("args:       ", transitions["args"].tolist())
print("choices:    ", transitions["action"].tolist())
print("tau:        ", transitions["steps_to_next_obs"].flatten().tolist())
print("rewards:    ", [round(r, 3) for r in transitions["next", "reward"].flatten().tolist()])

# %% [markdown]
# Each transition runs from one choice to the next choice *of the same choice point*. Its
# `("next", "reward")` is `sum_k gamma**k r_k` over the τ env steps in between (Taxi pays -1 a
# step: `-1 - 0.99 = -1.99` for τ = 2) and `steps_to_next_obs` is τ, which TorchRL's value
# estimators and `DQNLoss` read to discount the next value by `gamma**τ`. The joint state is
# `observation` + `stack` (ids of the machines on the call stack) + `args`:

# %%
print(transitions[:2])
print("machine ids:", {name: m.index for name, m in myham.machines.items()})
print("stack of the first choice:", transitions["stack"][0].tolist())

# %% [markdown]
# ## A HAM for Taxi
#
# A taxi must fetch a passenger at one of four spots (R, G, Y, B) and drop them at another:
# +20 for the drop-off, -10 for a pickup or drop-off in the wrong place, -1 per step. The HAM
# below only leaves navigation open: `navigate(target)` *chooses* a move until the taxi is at
# the target, and the code decides the rest (get, then put), so pickups and drop-offs only
# happen where they make sense. The choice point `nav` sees the Taxi state and the target.

# %%
N_ENVS = 32


def state_of(ham):
    return decode(int(ham.observation))  # (row, col, passenger location (4 = in taxi), dest)


def build_taxi_ham(env, nav_policy):
    ham = HAM(env)

    @ham.choice_machine(Categorical(4), nav_policy, args_spec=Categorical(4), gamma=0.99)
    def nav(ham, target, choice):
        return choice  # a move: 0 south, 1 north, 2 east, 3 west

    @ham.functional_machine
    def navigate(ham, target):
        while (state_of(ham)[0], state_of(ham)[1]) != LOCATIONS[target]:
            move = yield ham.CALL(nav, target)
            yield ham.ACTION(move)

    @ham.functional_machine
    def get(ham, args):
        yield ham.CALL(navigate, state_of(ham)[2])
        yield ham.ACTION(4)  # pickup

    @ham.functional_machine
    def put(ham, args):
        yield ham.CALL(navigate, state_of(ham)[3])
        yield ham.ACTION(5)  # drop-off

    @ham.functional_machine
    def root(ham, args):
        while True:
            yield ham.CALL(put if state_of(ham)[2] == 4 else get)

    ham.set_root(root)
    return ham


# A Q table (500 states x 4 targets) -> 4 moves, with epsilon-greedy exploration:
# nav.actor is a QValueActor, nav.policy adds EGreedyModule (the choice point's module).
nav = q_table(500, 4, n_args=4, annealing_num_steps=8_000)
env = make_taxi_env(N_ENVS, seed=0)
ham = build_taxi_ham(env, nav.policy)
print(ham)

# %% [markdown]
# ## Learning the choice point with `DQNLoss`
#
# Standard TorchRL from here on: a `Collector` runs `ham.policy` in `TransformedEnv(env,
# ham.transform)`; `ham.transitions(batch)["nav"]` goes into a replay buffer; `DQNLoss`
# learns from it (no target network, on the Q table, squared TD errors averaged per table
# entry by `nav.step_loss`: tabular semi-MDP Q-learning with step size 0.8). A
# `nav` transition can span more than one env step: the last move before a pickup is followed
# by the pickup before the next `nav` choice. We score the greedy policy on 60 fixed start
# states every 2,000 env steps.

# %%
collector = Collector(
    TransformedEnv(env, ham.transform), ham.policy, frames_per_batch=N_ENVS * 4,
    total_frames=20_480, auto_register_policy_transforms=False,
)
loss = nav.loss(gamma=0.99)  # DQNLoss(nav.actor, delay_value=False, ...) + TD0 estimator
buffer = ReplayBuffer(storage=LazyTensorStorage(50_000), batch_size=256)
optim = torch.optim.SGD(nav.actor.parameters(), lr=0.8 / 2)

starts = torch.as_tensor(gymnasium.make("Taxi-v4").unwrapped.initial_state_distrib > 0).nonzero().flatten()
starts = starts[torch.randperm(starts.numel())[:60]]
eval_env = TransformedEnv(make_taxi_env(60), ham.transform)
eval_policy = ham.make_policy()  # its own machine state, same Q table


def greedy_return():
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        td = eval_env.reset()
        for sub_env, state in zip(eval_env.base_env._env.envs, starts.tolist()):
            sub_env.unwrapped.s = state  # put each instance in its start state
        td["observation"] = starts.clone()
        returns, alive = torch.zeros(60), torch.ones(60, dtype=torch.bool)
        for _ in range(40):
            td, next_td = eval_env.step_and_maybe_reset(eval_policy(td))
            returns += td["next", "reward"].flatten() * alive
            alive &= ~td["next", "done"].flatten()
            td = next_td
    return returns.mean().item()


curve, frames, taus, start = [], 0, [], time.perf_counter()
for batch in collector:
    frames += batch.numel()
    nav_transitions = ham.transitions(batch)["nav"]
    taus.append(nav_transitions["steps_to_next_obs"].flatten())
    buffer.extend(nav_transitions)
    nav.egreedy.step(batch.numel())
    for _ in range(2):
        optim.zero_grad()
        nav.step_loss(loss, buffer.sample()).backward()
        optim.step()
    if frames % 2048 == 0:
        curve.append((frames, greedy_return()))
collector.shutdown()
print(f"{frames} env steps in {time.perf_counter() - start:.0f} s; last greedy return {curve[-1][1]:.2f}")

# %%
taus = torch.cat(taus)
fig, (ax, hist) = plt.subplots(1, 2, figsize=(10, 3.2))
ax.plot(*zip(*curve), marker="o")
ax.axhline(7.93, color="gray", ls=":", label="optimal policy, all starts (7.93)")
ax.set_xlabel("env steps")
ax.set_ylabel("greedy return (60 start states)")
ax.legend()
hist.hist(taus.numpy(), bins=range(1, int(taus.max()) + 2), align="left")
hist.set_yscale("log")
hist.set_xlabel("τ of a nav transition (env steps)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The benchmark `benchmarks/ham_taxi.py` runs this against a flat agent (a HAM whose single
# choice point picks one of the 6 primitive actions every step) with the same learner and
# budget (80k env steps, 3 seeds): the HAM's greedy policy is within 0.13 of the optimal
# expected return after 15-25k env steps, the flat one after 40-70k.
#
# ## One step = one choice, for other libraries
#
# `ham.choice_env(env, choice=...)` (a TorchRL `EnvBase`) and `ham.gym_env(env, choice=...)`
# (a `gymnasium.Env`) turn the HAM and an unbatched env into an env whose step is one choice
# of a choice point: the machines and the env run until that choice point is reached again,
# and the step reports the joint state, the reward discounted within the step, and τ (in
# `info["tau"]`; TorchRL: `"steps_to_next_obs"`). Here a random agent makes the `nav` choices:

# %%
gym_env = ham.gym_env(gymnasium.make("Taxi-v4"), choice="nav")
obs, info = gym_env.reset(seed=3)
print("observation space:", gym_env.observation_space)
table = nav.table.table.detach()
for _ in range(30):  # act with the learned Q table, from outside TorchRL
    action = int(table[obs["observation"] * 4 + obs["args"]].argmax())
    obs, reward, terminated, truncated, info = gym_env.step(action)
    note = "move, then drop-off" if terminated else "move, then pickup" if info["tau"] > 1 else "move"
    print(f"next target {obs['args']}, tau {info['tau']}, reward {reward:6.2f} ({note})")
    if terminated or truncated:
        break
