"""A worked HAM for Gymnasium's Taxi (``Taxi-v4``; ``Taxi-v3`` raises in gymnasium 1.4).

The HAM (Parr & Russell's style): the root runs ``get`` (navigate to the passenger, pick up)
until the passenger is in the taxi, then ``put`` (navigate to the destination, drop off);
``navigate(target)`` *chooses* moves (choice point ``nav``, joint state: the Taxi state and
the target passed as args) until the taxi is at the target. Optionally the root *chooses* the
task too (choice point ``task``, seeing the passenger's location). Pickup and drop-off are
never chosen: the machines only emit them where they make sense, which is the prior
knowledge a HAM adds. The flat agent is the degenerate HAM whose only choice point picks one of
the 6 primitive actions every step, so both agents run through exactly the same code
(policy, transform, transitions, loss).

The choice modules are Q tables (:class:`TableQ` in a ``QValueActor``, see :func:`q_table`) so
that ``DQNLoss`` with ``delay_value=False`` is tabular semi-MDP Q-learning (it discounts by
``gamma**steps_to_next_obs``).

Machine functions are module-level, so HAMs built here pickle to collector workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import Tensor, nn
from torchrl.data import Categorical
from torchrl.envs import EnvBase, GymWrapper
from torchrl.modules import EGreedyModule, QValueActor
from torchrl.objectives import DQNLoss, ValueEstimators

from torchrl_hier.errors import ConfigError
from torchrl_hier.ham.ham import HAM

if TYPE_CHECKING:
    from torchrl_hier.experiment.builders import Experiment

__all__ = [
    "taxi_task",
    "taxi_ham_from_config",
    "LOCATIONS",
    "N_STATES",
    "decode",
    "make_taxi_env",
    "TableQ",
    "TabularQ",
    "q_table",
    "taxi_ham",
    "flat_ham",
]

#: Pickup / drop-off locations R, G, Y, B as (row, col).
LOCATIONS = ((0, 0), (0, 4), (4, 0), (4, 3))
SOUTH, NORTH, EAST, WEST, PICKUP, DROPOFF = range(6)
N_STATES = 500
IN_TAXI = 4


def decode(state: int) -> tuple[int, int, int, int]:
    """Taxi's state index -> (taxi row, taxi col, passenger location (4 = in taxi), destination)."""
    state, destination = divmod(state, 4)
    state, passenger = divmod(state, 5)
    row, col = divmod(state, 5)
    return row, col, passenger, destination


def make_taxi_env(num_envs: int, seed: int | None = None) -> EnvBase:
    """``num_envs`` Taxi-v4 instances as one batched TorchRL env (observation: the state index,
    action: Categorical(6)). Uses a gymnasium vector env with autoreset disabled, since
    ``GymEnv(num_envs=)`` mishandles gymnasium 1.4's autoreset."""
    vector = SyncVectorEnv(
        [lambda: gymnasium.make("Taxi-v4") for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.DISABLED,
    )
    env = GymWrapper(vector, categorical_action_encoding=True)
    if seed is not None:
        env.set_seed(seed)
    return env


# ---------------------------------------------------------------- Q tables
class TableQ(nn.Module):
    """Q values from a table: row ``observation`` (times ``n_args`` plus ``args`` when the
    joint state has args). Zero-initialised."""

    def __init__(self, n_rows: int, n_actions: int, n_args: int | None = None):
        super().__init__()
        self.n_args = n_args
        self.table = nn.Parameter(torch.zeros(n_rows * (n_args or 1), n_actions))

    def rows(self, observation: Tensor, args: Tensor | None = None) -> Tensor:
        row = observation.long()
        return row if args is None else row * self.n_args + args.long()

    def forward(self, observation: Tensor, args: Tensor | None = None) -> Tensor:
        return self.table[self.rows(observation, args)]


@dataclass
class TabularQ:
    """A choice point's tabular learner: ``actor`` (the ``QValueActor``, value network of
    ``DQNLoss``), ``policy`` (actor then epsilon-greedy: the choice point's module),
    ``egreedy`` (call ``egreedy.step(n)`` to anneal) and ``table``."""

    actor: QValueActor
    policy: TensorDictSequential
    egreedy: EGreedyModule
    table: TableQ

    def loss(self, gamma: float) -> DQNLoss:
        """``DQNLoss`` without target network, per-sample (see :meth:`step_loss`)."""
        loss = DQNLoss(
            self.actor, action_space="categorical", delay_value=False, loss_function="l2",
            reduction="none",
        )
        loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)
        return loss

    def step_loss(self, loss: DQNLoss, sample: TensorDictBase) -> Tensor:
        """The loss of :meth:`loss` on ``sample``, averaged per table entry: with SGD at
        ``lr = alpha / 2`` every sampled Q value moves by ``alpha`` times the mean TD error of
        its samples, i.e. tabular Q-learning (semi-MDP: ``DQNLoss`` discounts the next value by
        ``gamma**steps_to_next_obs``) with step size ``alpha``, whatever the duplicates."""
        per_sample = loss(sample)["loss"]
        rows = self.table.rows(sample.get("observation"), sample.get("args", None))
        entry = rows * self.table.table.shape[1] + sample.get("action").long()
        _, inverse, counts = entry.unique(return_inverse=True, return_counts=True)
        return (per_sample / counts[inverse]).sum()


def q_table(
    n_rows: int,
    n_actions: int,
    n_args: int | None = None,
    *,
    eps_init: float = 1.0,
    eps_end: float = 0.05,
    annealing_num_steps: int = 10_000,
) -> TabularQ:
    """A tabular Q learner for a choice point reading ``"observation"`` (an index below
    ``n_rows``) and, with ``n_args``, ``"args"``; epsilon-greedy from ``eps_init`` to ``eps_end``
    over ``annealing_num_steps`` calls of ``egreedy.step``."""
    spec = Categorical(n_actions)
    in_keys = ["observation"] if n_args is None else ["observation", "args"]
    table = TableQ(n_rows, n_actions, n_args)
    actor = QValueActor(
        TensorDictModule(table, in_keys=in_keys, out_keys=["action_value"]), in_keys=in_keys, spec=spec
    )
    egreedy = EGreedyModule(
        spec, eps_init=eps_init, eps_end=eps_end, annealing_num_steps=annealing_num_steps
    )
    return TabularQ(actor, TensorDictSequential(actor, egreedy), egreedy, table)


# ---------------------------------------------------------------- the HAM's machines
def _state(ham) -> tuple[int, int, int, int]:
    return decode(int(ham.observation))


def task_choice(ham, args, choice: int) -> int:
    """Choice point ``task``: 0 = get the passenger, 1 = put the passenger down."""
    return choice


def nav_choice(ham, target: int, choice: int) -> int:
    """Choice point ``nav``: the move (0-3: south, north, east, west) towards ``target``."""
    return choice


def taxi_root(ham, args):
    """Learns the task: ``task`` chooses get or put."""
    while True:
        task = yield ham.CALL(task_choice)
        yield ham.CALL(get if task == 0 else put)


def taxi_root_fixed(ham, args):
    """Knows the task: get the passenger unless it is in the taxi, then put it down."""
    while True:
        in_taxi = _state(ham)[2] == IN_TAXI
        yield ham.CALL(put if in_taxi else get)


def get(ham, args):
    passenger = _state(ham)[2]
    if passenger != IN_TAXI:
        yield ham.CALL(navigate, passenger)
    yield ham.ACTION(PICKUP)


def put(ham, args):
    yield ham.CALL(navigate, _state(ham)[3])
    yield ham.ACTION(DROPOFF)


def navigate(ham, target: int):
    while True:
        row, col, _, _ = _state(ham)
        if (row, col) == LOCATIONS[target]:
            return
        move = yield ham.CALL(nav_choice, target)
        yield ham.ACTION(move)


def taxi_cell(observation: Tensor) -> Tensor:
    """obs map of ``nav``: the taxi's cell (row * 5 + col) from the state index."""
    return observation // 20


def passenger_location(observation: Tensor) -> Tensor:
    """obs map of ``task``: the passenger's location (0-3, 4 = in the taxi)."""
    return (observation // 4) % 5


def taxi_ham(
    env: EnvBase,
    nav_policy,
    task_policy=None,
    gamma: float = 0.99,
    nav_obs_map=None,
    **ham_kwargs,
) -> HAM:
    """The Taxi HAM over ``env`` (from :func:`make_taxi_env`).

    ``nav_policy`` decides the choice point ``nav``: it reads ``"observation"`` (the state
    index, or ``nav_obs_map`` of it, e.g. :func:`taxi_cell`) and ``"args"`` (the target,
    0-3) and writes one of 4 moves. With ``task_policy``, the root also learns the task at
    the choice point ``task`` (reads the passenger location, 0-4; 2 choices); without it, the
    root's code picks the task (``put`` once the passenger is in the taxi, else ``get``).
    """
    ham = HAM(env, **ham_kwargs)
    ham.choice_machine(
        Categorical(4), nav_policy, name="nav", gamma=gamma, args_spec=Categorical(4),
        obs_map=nav_obs_map,
    )(nav_choice)
    if task_policy is not None:
        ham.choice_machine(
            Categorical(2), task_policy, name="task", gamma=gamma, obs_map=passenger_location
        )(task_choice)
    root = taxi_root if task_policy is not None else taxi_root_fixed
    for machine in (root, get, put, navigate):
        ham.functional_machine(machine)
    ham.set_root(root)
    return ham


# ---------------------------------------------------------------- the flat agent, as a HAM
def primitive_choice(ham, args, choice: int) -> int:
    return choice


def flat_root(ham, args):
    while True:
        action = yield ham.CALL(primitive_choice)
        yield ham.ACTION(action)


def flat_ham(env: EnvBase, policy, gamma: float = 0.99, **ham_kwargs) -> HAM:
    """The flat agent: one choice point (``primitive``, 6 actions, joint state = the state
    index) decided every env step; its transitions are ordinary one-step transitions."""
    ham = HAM(env, **ham_kwargs)
    ham.choice_machine(Categorical(6), policy, name="primitive", gamma=gamma)(primitive_choice)
    ham.functional_machine(flat_root)
    ham.set_root(flat_root)
    return ham


# ----------------------------------------------------------------------------- configs
def taxi_task(
    name: str, batch_size: torch.Size, device: torch.device, seed: int | None = None
) -> EnvBase:
    """The ``_target_`` of ``task=Taxi-v4``: ``Taxi-v4`` instances as one batched TorchRL env
    (:func:`make_taxi_env`, CPU only) for the Taxi HAM."""
    if name != "Taxi-v4":
        raise ConfigError(f"task.name={name!r}: the Taxi task factory makes Taxi-v4 only.")
    if torch.device(device).type != "cpu":
        raise ConfigError("The Taxi task steps gymnasium envs on the CPU; use device=cpu.")
    if len(batch_size) != 1:
        raise ConfigError(f"The Taxi task takes a 1-D batch (task.n_envs), got {tuple(batch_size)}.")
    return make_taxi_env(int(batch_size[0]), seed=seed)


def taxi_ham_from_config(
    cfg: Mapping[str, Any],
    *,
    device: torch.device,
    env: EnvBase,
    storage: torch.device,
    has_success: bool,
    choice_points: Mapping[str, Any],
    name: str = "ham",
    machine: str = "taxi",
    learn_task: bool = False,
) -> Experiment:
    """The ``_target_`` of ``hierarchy=ham``: the Taxi HAM (get/put/navigate machines; the
    ``nav`` choice point learns the moves, ``task`` optionally the get/put choice), with
    tabular Q values learnt by ``DQNLoss`` (semi-MDP: it discounts by
    ``gamma**steps_to_next_obs``), each choice point's learner built from its ``learner``
    block."""
    from torchrl_hier.experiment.builders import (
        TAXI_TASK_TARGET,
        Experiment,
        build_learner,
        compile_learners,
    )
    from torchrl_hier.learning import HierarchyLearner
    from torchrl_hier.levels.from_config import exploration_settings

    if machine != "taxi":
        raise ConfigError(
            f"hierarchy.machine={machine!r}: the HAM configs know the 'taxi' machine "
            "(torchrl_hier.ham.taxi)."
        )
    if cfg["task"].get("_target_") != TAXI_TASK_TARGET:
        raise ConfigError(
            f"hierarchy={name} runs the Taxi HAM, which needs task=Taxi-v4 (got task "
            f"{cfg['task']['name']!r})."
        )
    if device.type != "cpu":
        raise ConfigError(f"hierarchy={name} runs machine code per env instance on the CPU; use device=cpu.")
    tables = {}
    for point, rows, actions, n_args in (("nav", N_STATES, 4, 4), ("task", 5, 2, None)):
        if point == "task" and not learn_task:
            continue
        ex = exploration_settings(choice_points[point].get("exploration"))
        tables[point] = q_table(
            rows, actions, n_args, eps_init=ex["eps_init"], eps_end=ex["eps_end"],
            annealing_num_steps=ex["annealing_num_steps"],
        )
    gamma = float(choice_points["nav"].get("gamma", 0.99))
    ham = taxi_ham(env, tables["nav"].policy, tables["task"].policy if learn_task else None, gamma=gamma)
    learners = {}
    for point, table in tables.items():
        loss = DQNLoss(table.actor, action_space="categorical", delay_value=False, loss_function="l2")
        loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)
        learners[point] = build_learner(
            choice_points[point].get("learner"), f"hierarchy.choice_points.{point}.learner", loss,
            storage, compile_default=compile_learners(cfg, lowest=False), gamma=gamma,
        )

    def pipeline(batch: TensorDictBase) -> dict[str, TensorDictBase]:
        return {k: v for k, v in ham.transitions(batch).items() if v.shape[0] > 0}

    return Experiment(
        cfg, device, env, HierarchyLearner(learners),
        {point: table.policy for point, table in tables.items()}, pipeline, ham=ham,
        has_success=has_success,
    )
