"""CartPole-v1 with per-level DQN learners, in a plain TorchRL loop.

The whole recipe, in one file:

    1. build the env (TorchRL ``GymEnv``s in a ``SerialEnv``) and each level's Q-network;
    2. stack the levels into a ``Hierarchy`` and run ``hier.policy`` in
       ``TransformedEnv(env, hier.transform)`` with a TorchRL ``Collector``
       (``SyncDataCollector`` before TorchRL 0.14);
    3. for every collected batch, route ``hier.transitions(batch)`` (each level's semi-MDP
       transitions) into the learners and call ``update()``;
    4. evaluate greedily (epsilon = 0).

Two hierarchies:

- ``flat``: one level emitting the env action, i.e. a plain DQN agent;
- ``two_level``: an option level choosing one of ``n_options`` options, which runs for
  ``option_steps`` env steps (``Timeout`` on the lower level hands control back), over an
  option-conditioned primitive level. Both learn with ``DQNLoss``; the option level's
  transitions span several env steps and its loss discounts them by ``gamma**tau``.

Every ``eval_every`` frames the greedy policy is evaluated on validation episodes; training
stops once their mean return reaches ``stop_return`` (like Stable-Baselines'
``StopTrainingOnRewardThreshold``) or when ``total_frames`` run out. The returned evaluation
uses other episodes (other env seeds). DQN on CartPole is known to solve the task and then
forget it again; stopping when solved is what keeps this run short.

Run ``python examples/train_cartpole.py --hierarchy flat`` (or ``two_level``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import Categorical
from torchrl.envs import (
    EnvBase,
    ExplorationType,
    GymEnv,
    SerialEnv,
    TransformedEnv,
    set_exploration_type,
)
from torchrl.modules import MLP, EGreedyModule, QValueModule
from torchrl.objectives import DQNLoss

from torchrl_hier import Hierarchy, Level, Timeout
from torchrl_hier.learning import HierarchyLearner


@dataclass
class Config:
    hierarchy: str = "flat"  # "flat" or "two_level"
    seed: int = 0
    n_envs: int = 8
    total_frames: int = 51_200  # budget (a multiple of frames_per_batch); stops once solved
    frames_per_batch: int = 64
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    lr: float = 1e-3
    gamma: float = 0.99
    batch_size: int = 128
    buffer_size: int = 50_000
    warmup: int = 1_000  # transitions of the level before its first gradient step
    update_ratio: float = 0.25  # gradient steps per transition of the level
    target_update: str = "hard"  # "hard": copy every target_period steps; "soft": Polyak tau
    target_period: int = 50  # gradient steps between hard target-network copies
    tau: float = 0.01
    eps_init: float = 1.0
    eps_end: float = 0.04
    eps_frames: int = 10_000  # env frames over which epsilon anneals
    n_options: int = 2
    option_steps: int = 4  # env steps an option runs before the option level chooses again
    eval_episodes: int = 10
    eval_every: int = 2_500  # frames between greedy evaluations on the validation episodes
    stop_return: float | None = 300.0  # stop once the validation return reaches it (None: never)
    double_dqn: bool = True
    loss_function: str = "smooth_l1"


def make_cartpole() -> EnvBase:
    """One CartPole-v1 through TorchRL's ``GymEnv`` (integer actions)."""
    return GymEnv("CartPole-v1", categorical_action_encoding=True)


def make_env(n_envs: int, seed: int) -> EnvBase:
    """``n_envs`` CartPoles stepped in turn (``SerialEnv``; ``GymEnv(num_envs=...)`` is broken
    with gymnasium 1.x). Batching amortises TorchRL's per-call overhead over the instances."""
    env = SerialEnv(n_envs, make_cartpole)
    env.set_seed(seed)
    return env


def mlp(in_features: int, out_features: int, hidden: list[int]) -> MLP:
    return MLP(
        in_features=in_features,
        out_features=out_features,
        num_cells=hidden,
        activation_class=nn.ReLU,
    )


class OptionConditionedMLP(nn.Module):
    """Q-values from the observation and a one-hot encoding of the parent's option."""

    def __init__(self, obs_dim: int, n_options: int, n_actions: int, hidden: list[int]):
        super().__init__()
        self.n_options = n_options
        self.mlp = mlp(obs_dim + n_options, n_actions, hidden)

    def forward(self, observation: torch.Tensor, parent_action: torch.Tensor) -> torch.Tensor:
        option = nn.functional.one_hot(parent_action, self.n_options).to(observation.dtype)
        return self.mlp(torch.cat([observation, option], dim=-1))


def dqn_level(
    name: str,
    qnet: nn.Module,
    in_keys: list[str],
    action_spec: Categorical,
    cfg: Config,
    *,
    lowest: bool,
    **level_kwargs,
) -> tuple[Level, DQNLoss, EGreedyModule]:
    """A level acting epsilon-greedily on a Q-network, and the ``DQNLoss`` that trains it.

    The loss and the policy share the Q-network: training the loss trains the level."""
    qvalue = TensorDictSequential(
        TensorDictModule(qnet, in_keys=in_keys, out_keys=["action_value"]),
        QValueModule(spec=action_spec, action_value_key="action_value"),
    )
    egreedy = EGreedyModule(
        action_spec, eps_init=cfg.eps_init, eps_end=cfg.eps_end, annealing_num_steps=cfg.eps_frames
    )
    level = Level(
        name,
        TensorDictSequential(qvalue, egreedy),
        action_spec=None if lowest else action_spec,  # the lowest level emits the env's action
        gamma=cfg.gamma,
        **level_kwargs,
    )
    loss = DQNLoss(
        qvalue,
        action_space=action_spec,
        delay_value=True,
        double_dqn=cfg.double_dqn,
        loss_function=cfg.loss_function,
    )
    return level, loss, egreedy


def build(env: EnvBase, cfg: Config) -> tuple[Hierarchy, HierarchyLearner, list[EGreedyModule]]:
    """The hierarchy of ``cfg.hierarchy`` and one DQN learner per level."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_spec = env.action_spec_unbatched
    n_actions = action_spec.space.n
    if cfg.hierarchy == "flat":
        primitive, primitive_loss, egreedy = dqn_level(
            "primitive", mlp(obs_dim, n_actions, cfg.hidden), ["observation"], action_spec, cfg,
            lowest=True,
        )
        levels, losses, egreedies = [primitive], {"primitive": primitive_loss}, [egreedy]
        per_level = {}
    elif cfg.hierarchy == "two_level":
        option_spec = Categorical(cfg.n_options)
        option, option_loss, option_egreedy = dqn_level(
            "option", mlp(obs_dim, cfg.n_options, cfg.hidden), ["observation"], option_spec, cfg,
            lowest=False,
        )
        primitive, primitive_loss, egreedy = dqn_level(
            "primitive",
            OptionConditionedMLP(obs_dim, cfg.n_options, n_actions, cfg.hidden),
            ["observation", "parent_action"],
            action_spec,
            cfg,
            lowest=True,
            control=Timeout(cfg.option_steps),  # hand control back to "option" every k steps
        )
        levels = [option, primitive]
        losses = {"option": option_loss, "primitive": primitive_loss}
        egreedies = [option_egreedy, egreedy]
        # Warm-up and update ratio count each level's own transitions; the option level
        # completes about one per option_steps env steps, so it warms up on fewer.
        per_level = {"option": {"warmup": cfg.warmup // cfg.option_steps}}
    else:
        raise ValueError(f"hierarchy must be 'flat' or 'two_level', got {cfg.hierarchy!r}.")
    hier = Hierarchy(levels, env)
    learners = HierarchyLearner.from_losses(
        hier,
        losses,
        per_level=per_level,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        buffer_size=cfg.buffer_size,
        warmup=cfg.warmup,
        update_ratio=cfg.update_ratio,
        target_update=cfg.target_update,
        period=cfg.target_period,
        tau=cfg.tau,
        max_grad_norm=10.0,
    )
    return hier, learners, egreedies


VALIDATION_SEED, TEST_SEED = 20_000, 10_000


@torch.no_grad()
def evaluate(hier: Hierarchy, episodes: int, seed: int, max_steps: int = 500) -> torch.Tensor:
    """Greedy (epsilon = 0) returns of the first episode of ``episodes`` fresh CartPoles."""
    env = TransformedEnv(make_env(episodes, seed), hier.transform)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = env.rollout(
            max_steps, hier.policy, break_when_any_done=False, break_when_all_done=True
        )
    env.close()
    done = rollout["next", "done"].squeeze(-1)  # [episodes, time]
    before_first_end = (done.cumsum(-1) - done.long()) == 0
    return (rollout["next", "reward"].squeeze(-1) * before_first_end).sum(-1)


def train(cfg: Config, log_every: int = 0) -> dict:
    """Trains per ``cfg``; returns the greedy evaluation returns and training statistics."""
    torch.manual_seed(cfg.seed)
    env = make_env(cfg.n_envs, cfg.seed)
    hier, learners, egreedies = build(env, cfg)
    collector = Collector(
        TransformedEnv(env, hier.transform),
        hier.policy,
        frames_per_batch=cfg.frames_per_batch,
        total_frames=cfg.total_frames,
        auto_register_policy_transforms=False,
    )
    start, frames = time.perf_counter(), 0
    next_log = log_every or float("inf")
    next_eval = cfg.eval_every or float("inf")
    for batch in collector:
        learners.extend(hier.transitions(batch))  # each level's SMDP transitions
        logs = learners.update()  # the gradient steps each level is owed
        for egreedy in egreedies:
            egreedy.step(batch.numel())
        frames += batch.numel()
        if frames >= next_log:
            next_log += log_every
            losses = {name: round(log["loss"], 3) for name, log in logs.items()}
            print(f"frames {frames:6d}  updates {learners.n_updates}  losses {losses}  "
                  f"eps {float(egreedies[-1].eps):.2f}  {time.perf_counter() - start:.0f}s",
                  flush=True)
        if frames >= next_eval:
            next_eval += cfg.eval_every
            validation = evaluate(hier, cfg.eval_episodes, seed=VALIDATION_SEED).mean().item()
            if log_every:
                print(f"frames {frames:6d}  greedy validation return {validation:.1f}", flush=True)
            if cfg.stop_return is not None and validation >= cfg.stop_return:
                break  # solved on the validation episodes; the test episodes are other seeds
    collector.shutdown()
    eval_returns = evaluate(hier, cfg.eval_episodes, seed=TEST_SEED + cfg.seed)
    return {
        "eval_returns": eval_returns,
        "eval_mean": eval_returns.mean().item(),
        "frames": frames,
        "n_transitions": learners.n_transitions,
        "n_updates": learners.n_updates,
        "seconds": time.perf_counter() - start,
        "hierarchy": hier,
        "learners": learners,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hierarchy", default="flat", choices=["flat", "two_level"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-frames", type=int, default=Config.total_frames)
    args = parser.parse_args()
    torch.set_num_threads(1)  # small networks: threads only contend
    cfg = Config(hierarchy=args.hierarchy, seed=args.seed, total_frames=args.total_frames)
    result = train(cfg, log_every=5_000)
    print(f"greedy eval over {cfg.eval_episodes} episodes: mean {result['eval_mean']:.1f} "
          f"(returns {result['eval_returns'].tolist()}); transitions {result['n_transitions']}; "
          f"{result['seconds']:.0f}s")


if __name__ == "__main__":
    main()
