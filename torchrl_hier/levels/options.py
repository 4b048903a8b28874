"""Option levels: a level that picks one of K options (DQN or discrete SAC) and the level below
it, conditioned on the option.

Encoding: the option level's action is a one-hot vector of K entries (``OneHot(K)``, int64), so
the level below reads it as ``"parent_action"`` and its networks take it as K extra input
features. An option ends when the level below hands control back: after ``Timeout(timeout)``
of its steps and, optionally, when a learned termination head says so
(``ModuleRule(OptionTermination)``), trained option-critic style by
:class:`OptionTerminationLoss` on the lower level's transitions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, TensorDictModule, TensorDictModuleBase
from torch import Tensor
from torchrl.data import OneHot, TensorSpec
from torchrl.envs.utils import ExplorationType, exploration_type
from torchrl.modules import OneHotCategorical, ProbabilisticActor, ValueOperator
from torchrl.objectives import DiscreteSACLoss, LossModule, ValueEstimators

from torchrl_hier.control import LevelStep, ModuleRule, ReturnControlRule, Timeout
from torchrl_hier.errors import ConfigError
from torchrl_hier.level import OBSERVATION, PARENT_ACTION, Level
from torchrl_hier.levels.from_config import (
    ACTIONS,
    OPTIONS,
    LevelContext,
    LevelParts,
    algorithms,
    check_algorithm,
    env_goal_hindsight,
    exploration_settings,
    on_policy_parts,
)
from torchrl_hier.levels.on_policy import ON_POLICY_ALGORITHMS
from torchrl_hier.levels.parts import InputNet, conditioned_head, dqn_head, mlp, network

__all__ = [
    "option_level",
    "option_conditioned_level",
    "OptionTermination",
    "OptionTerminationLoss",
    "option_spec",
    "option_from_config",
    "option_conditioned_from_config",
]


def option_spec(n_options: int) -> OneHot:
    """The action spec of an option level: a one-hot of ``n_options`` (int64)."""
    if not (isinstance(n_options, int) and n_options >= 1):
        raise ValueError(f"n_options must be a positive int, got {n_options!r}.")
    return OneHot(n_options, dtype=torch.int64)


def _check_dim(level: str, what: str, value: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"Level {level!r}: {what} must be a positive int, got {value!r}.")


def option_level(
    name: str,
    obs_dim: int,
    n_options: int,
    *,
    algorithm: str = "dqn",
    parent_dim: int | None = None,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    eps_init: float = 1.0,
    eps_end: float = 0.05,
    annealing_num_steps: int = 10_000,
    control: ReturnControlRule | None = None,
    reward: Callable[[LevelStep], Tensor] | None = None,
    obs_map: Callable[[Tensor], Tensor] | None = None,
    obs_shape: tuple[int, ...] | int | None = None,
    device: torch.device | str | None = None,
) -> tuple[Level, LossModule]:
    """A level choosing one of ``n_options`` options, as a one-hot action.

    Args:
        name: the level's name.
        obs_dim: size of the level's (mapped) observation.
        n_options: K, the number of options.
        algorithm: ``"dqn"`` (a ``QValueActor`` with epsilon-greedy exploration and a
            double ``DQNLoss``) or ``"sac"`` (a categorical ``ProbabilisticActor``, sampled while
            exploring, and a ``DiscreteSACLoss``).
        parent_dim: size of the ``"parent_action"`` when the level is not the top one.
        hidden: hidden layer sizes of the networks.
        gamma: the level's discount (the loss discounts by ``gamma**steps_to_next_obs``).
        eps_init, eps_end, annealing_num_steps: the epsilon-greedy schedule (DQN); anneal it
            with :func:`~torchrl_hier.levels.anneal_exploration`.
        control, reward, obs_map, obs_shape: passed to :class:`~torchrl_hier.Level`.

    Returns:
        ``(level, loss)``; the loss's networks are the ones the level's policy runs.
    """
    _check_dim(name, "obs_dim", obs_dim)
    if parent_dim is not None:
        _check_dim(name, "parent_dim", parent_dim)
    spec = option_spec(n_options)
    if algorithm == "dqn":
        policy, _, loss = dqn_head(
            obs_dim,
            spec,
            parent_dim=parent_dim,
            hidden=hidden,
            gamma=gamma,
            eps_init=eps_init,
            eps_end=eps_end,
            annealing_num_steps=annealing_num_steps,
            device=device,
        )
    elif algorithm == "sac":
        policy, loss = _discrete_sac(obs_dim, spec, parent_dim, hidden, gamma, device)
    else:
        raise ValueError(
            f"Level {name!r}: algorithm must be 'dqn' or 'sac' for an option level, got "
            f"{algorithm!r}."
        )
    level = Level(
        name,
        policy,
        action_spec=spec,
        obs_map=obs_map,
        obs_shape=obs_shape,
        reward=reward,
        gamma=gamma,
        **({} if control is None else {"control": control}),
    )
    return level, loss


def _discrete_sac(
    obs_dim: int,
    spec: OneHot,
    parent_dim: int | None,
    hidden: Sequence[int],
    gamma: float,
    device,
) -> tuple[ProbabilisticActor, DiscreteSACLoss]:
    n = spec.space.n
    in_keys = [OBSERVATION] if parent_dim is None else [OBSERVATION, PARENT_ACTION]
    in_features = obs_dim + (parent_dim or 0)
    actor = ProbabilisticActor(
        TensorDictModule(
            InputNet(mlp(in_features, n, hidden, device)), in_keys=in_keys, out_keys=["logits"]
        ),
        in_keys=["logits"],
        spec=spec.clone(),
        distribution_class=OneHotCategorical,
        default_interaction_type=InteractionType.RANDOM,
    )
    qvalue = ValueOperator(
        InputNet(mlp(in_features, n, hidden, device)), in_keys=in_keys, out_keys=["action_value"]
    )
    loss = DiscreteSACLoss(actor, qvalue, action_space=spec.clone(), num_actions=n)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)
    return actor, loss


class OptionTermination(TensorDictModuleBase):
    """A learned option-termination head ``beta(s', option)`` for a ``ModuleRule``.

    Reads ``("next", "observation")`` (the lower level's observation after the step) and the
    one-hot ``"parent_action"`` (the running option); writes ``"termination_prob"`` and
    ``"terminate"``: a Bernoulli draw while exploring, ``prob > 0.5`` in deterministic mode.
    ``init_bias`` sets the initial termination logits (-2: options first end w.p. ~0.12 a step).
    ``net="linear"``: one bias-free linear layer (``hidden`` unused) whose weights all start at
    ``init_bias``, a table of termination logits over one-hot observations.
    """

    def __init__(
        self,
        obs_dim: int,
        n_options: int,
        hidden: Sequence[int] = (64, 64),
        init_bias: float = -2.0,
        device: torch.device | str | None = None,
        net: str = "mlp",
    ):
        super().__init__()
        self.n_options = n_options
        self.net = network(net, obs_dim, n_options, hidden, device, init=init_bias)
        self.in_keys = [("next", OBSERVATION), PARENT_ACTION]
        self.out_keys = ["termination_prob", "terminate"]

    def probability(self, next_observation: Tensor, option: Tensor) -> Tensor:
        logits = self.net(next_observation.to(torch.get_default_dtype()))
        return (torch.sigmoid(logits) * option.to(logits.dtype)).sum(-1)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        prob = self.probability(
            tensordict.get(("next", OBSERVATION)), tensordict.get(PARENT_ACTION)
        )
        if exploration_type() in (ExplorationType.RANDOM, None):
            terminate = torch.rand_like(prob) < prob
        else:
            terminate = prob > 0.5
        tensordict.set("termination_prob", prob)
        return tensordict.set("terminate", terminate)


def termination_loss(
    beta: Tensor, values: Tensor, option: Tensor, margin: float, alive: Tensor
) -> Tensor:
    """The option-critic termination loss (Bacon, Harb & Precup 2017), whose gradient is the
    termination gradient: ``mean(beta(s', w) * (Q(s', w) - max_w' Q(s', w') + margin) * alive)``.

    ``beta``: the running option's termination probability at ``s'`` (with its graph),
    ``values``: ``Q(s', .)`` (no graph), ``option``: one-hot ``w``, ``alive``: 1 where the
    episode goes on. ``margin`` (the deliberation cost xi) favours long options."""
    values = values.detach()
    advantage = (values * option.to(values.dtype)).sum(-1) - values.max(-1).values
    return (beta * (advantage + margin) * alive.to(beta.dtype)).mean()


class OptionTerminationLoss(LossModule):
    """The option-critic termination loss, on the lower level's transitions.

    ``loss_termination = mean(beta(s', w) * (Q(s', w) - max_w' Q(s', w') + margin) * (1 - done))``:
    it raises the termination probability where the running option ``w`` is worse than the
    best one at ``s'`` by more than ``margin`` (which favours long options). ``Q`` is the option
    level's Q-network, taken from its loss (``DQNLoss`` or ``DiscreteSACLoss``, as
    :func:`option_level` returns) and read at the lower level's next observation, so both
    levels must see the same observation; it is not trained by this loss. Train it on the
    lower level's transitions, next to (or summed with) the lower level's own loss.
    """

    @dataclass
    class _AcceptedKeys:
        next_observation: tuple[str, str] = ("next", OBSERVATION)
        option: str = PARENT_ACTION
        done: tuple[str, str] = ("next", "done")

    def __init__(
        self, termination: OptionTermination, option_loss: LossModule, margin: float = 0.01
    ):
        super().__init__()
        if not isinstance(termination, OptionTermination):
            raise TypeError(
                f"termination must be an OptionTermination, got {type(termination).__name__}."
            )
        qvalue = getattr(option_loss, "value_network", None)
        if qvalue is None:
            qvalue = getattr(option_loss, "qvalue_network", None)
        if not isinstance(option_loss, LossModule) or qvalue is None:
            raise TypeError(
                "option_loss must be the option level's DQNLoss or DiscreteSACLoss (as "
                f"option_level returns), got {type(option_loss).__name__}."
            )
        if list(qvalue.in_keys) != [OBSERVATION]:
            raise ValueError(
                f"The option level's Q-network reads {qvalue.in_keys}; the termination loss "
                f"evaluates it on the lower level's next observation only, so it must read "
                f"just {OBSERVATION!r} (an option level at the top of the hierarchy)."
            )
        self.termination = termination
        # A plain attribute (not a submodule): the Q-network belongs to the option level's loss.
        self.__dict__["_option_qvalue"] = qvalue
        self.margin = margin

    @property
    def in_keys(self) -> list:
        return [("next", OBSERVATION), PARENT_ACTION, ("next", "done")]

    @property
    def out_keys(self) -> list:
        return ["loss_termination", "termination_prob"]

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        next_obs = tensordict.get(("next", OBSERVATION))
        option = tensordict.get(PARENT_ACTION)
        with torch.no_grad():
            values = self._option_qvalue(
                TensorDict({OBSERVATION: next_obs}, batch_size=tensordict.batch_size)
            ).get("action_value")
        alive = ~tensordict.get(("next", "done")).reshape(tensordict.batch_size)
        beta = self.termination.probability(next_obs, option)
        loss = termination_loss(beta, values, option, self.margin, alive)
        return TensorDict(
            {"loss_termination": loss, "termination_prob": beta.detach().mean()}, batch_size=[]
        )


def option_conditioned_level(
    name: str,
    obs_dim: int,
    n_options: int,
    action_spec: TensorSpec,
    *,
    algorithm: str | None = None,
    timeout: int | None = 10,
    termination: OptionTermination | None = None,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    eps_init: float = 1.0,
    eps_end: float = 0.05,
    annealing_num_steps: int = 10_000,
    noise_std: float = 0.1,
    reward: Callable[[LevelStep], Tensor] | None = None,
    obs_map: Callable[[Tensor], Tensor] | None = None,
    obs_shape: tuple[int, ...] | int | None = None,
    lowest: bool = True,
    device: torch.device | str | None = None,
) -> tuple[Level, LossModule]:
    """The level below an option level: its networks read the observation and the one-hot
    option, and it hands control back (ending the option) after ``timeout`` of its steps or when
    ``termination`` fires.

    Args:
        action_spec: what it emits: the env's action spec for the lowest level (unbatched,
            e.g. ``env.action_spec_unbatched``), a ``Categorical``/``OneHot`` or ``Bounded`` spec.
        algorithm: ``"dqn"`` for discrete actions (default), ``"td3"`` (default) or ``"sac"`` for
            ``Bounded`` ones.
        timeout: the option length limit, in this level's steps (``None``: no timeout).
        termination: a learned termination head; the option also ends when it fires.
        lowest: True when it emits the env action (its ``Level.action_spec`` is then ``None``).

    Returns:
        ``(level, loss)``.
    """
    _check_dim(name, "obs_dim", obs_dim)
    rules: list[ReturnControlRule] = []
    if timeout is not None:
        rules.append(Timeout(timeout))
    if termination is not None:
        if termination.n_options != n_options:
            raise ValueError(
                f"Level {name!r}: the termination head has {termination.n_options} options but "
                f"the option level has {n_options}."
            )
        rules.append(ModuleRule(termination, out_key="terminate"))
    if not rules:
        raise ValueError(
            f"Level {name!r}: an option needs a way to end; pass timeout=<steps> and/or "
            "termination=OptionTermination(...)."
        )
    control = rules[0] if len(rules) == 1 else rules[0] | rules[1]
    policy, loss = conditioned_head(
        name, obs_dim, action_spec, algorithm, parent_dim=n_options, hidden=hidden, gamma=gamma,
        eps_init=eps_init, eps_end=eps_end, annealing_num_steps=annealing_num_steps,
        noise_std=noise_std, device=device,
    )
    level = Level(
        name,
        policy,
        action_spec=None if lowest else action_spec,
        obs_map=obs_map,
        obs_shape=obs_shape,
        reward=reward,
        control=control,
        gamma=gamma,
    )
    return level, loss


def option_from_config(
    ctx: LevelContext,
    *,
    algorithm: str | None = "dqn",
    n_options: int = 4,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    exploration: Mapping[str, Any] | None = None,
    hindsight_k: int = 0,
    hindsight_strategy: str = "future",
    clip_epsilon: float = 0.2,
    entropy_coeff: float = 0.01,
    critic_coeff: float = 0.5,
) -> LevelParts:
    """The top level of an option hierarchy (config family ``option``): picks one of
    ``n_options`` with DQN, discrete SAC, PPO or A2C whenever the level below hands back."""
    if ctx.lowest:
        raise ConfigError(f"{ctx.where} is an option level: it emits options, so it cannot be the lowest level.")
    if ctx.above is not None:
        raise ConfigError(
            f"{ctx.where} is an option level, which must be the top level; below another "
            "level use option_conditioned_from_config with n_options."
        )
    spec = option_spec(int(n_options))
    algorithm = check_algorithm(ctx.where, algorithm, spec, algorithms(spec, option_level=True))
    if algorithm in ON_POLICY_ALGORITHMS:
        return on_policy_parts(
            ctx, spec, algorithm, hidden=hidden, gamma=gamma, hindsight_k=hindsight_k,
            clip_epsilon=clip_epsilon, entropy_coeff=entropy_coeff, critic_coeff=critic_coeff,
            emits=OPTIONS, lowest=False,
        )
    ex = exploration_settings(exploration)
    level, loss = option_level(
        ctx.name, ctx.obs_dim, int(n_options), algorithm=algorithm, hidden=tuple(hidden),
        gamma=float(gamma), eps_init=ex["eps_init"], eps_end=ex["eps_end"],
        annealing_num_steps=ex["annealing_num_steps"], device=ctx.device,
    )
    part = LevelParts(level, loss, emits=OPTIONS)
    return env_goal_hindsight(part, ctx, hindsight_k, hindsight_strategy)


def option_conditioned_from_config(
    ctx: LevelContext,
    *,
    algorithm: str | None = "auto",
    timeout: int | None = 8,
    n_options: int = 4,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    exploration: Mapping[str, Any] | None = None,
    hindsight_k: int = 0,
    hindsight_strategy: str = "future",
    clip_epsilon: float = 0.2,
    entropy_coeff: float = 0.01,
    critic_coeff: float = 0.5,
) -> LevelParts:
    """A level below an option level (config family ``option_conditioned``), conditioned on
    its option for ``timeout`` of its own steps: env actions when lowest, else sub-options
    (``n_options``) for the option-conditioned level below."""
    above = ctx.above
    if above is None or above.emits != OPTIONS:
        raise ConfigError(
            f"{ctx.where} is option-conditioned, so it needs an option level above it "
            f"(option_from_config or option_conditioned_from_config), got "
            f"{'none' if above is None else 'a level emitting ' + above.emits}."
        )
    parent_options = above.level.action_spec.space.n
    spec = ctx.env_spec if ctx.lowest else option_spec(int(n_options))
    emits = ACTIONS if ctx.lowest else OPTIONS
    algorithm = check_algorithm(ctx.where, algorithm, spec, algorithms(spec))
    if algorithm in ON_POLICY_ALGORITHMS:
        if timeout is None:
            raise ConfigError(
                f"{ctx.where}.timeout=null: an on-policy option-conditioned level ends its "
                "options by timeout; give it a number of its steps."
            )
        return on_policy_parts(
            ctx, spec, algorithm, hidden=hidden, gamma=gamma, hindsight_k=hindsight_k,
            clip_epsilon=clip_epsilon, entropy_coeff=entropy_coeff, critic_coeff=critic_coeff,
            emits=emits, parent_dim=parent_options, lowest=ctx.lowest,
            control=Timeout(int(timeout)),
        )
    ex = exploration_settings(exploration)
    level, loss = option_conditioned_level(
        ctx.name, ctx.obs_dim, parent_options, spec, algorithm=algorithm,
        timeout=None if timeout is None else int(timeout), hidden=tuple(hidden),
        gamma=float(gamma), eps_init=ex["eps_init"], eps_end=ex["eps_end"],
        annealing_num_steps=ex["annealing_num_steps"], noise_std=ex["noise_std"],
        lowest=ctx.lowest, device=ctx.device,
    )
    part = LevelParts(level, loss, emits=emits)
    return env_goal_hindsight(part, ctx, hindsight_k, hindsight_strategy)
