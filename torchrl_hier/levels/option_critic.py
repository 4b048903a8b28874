"""Option-critic (Bacon, Harb & Precup 2017) as two levels of a hierarchy.

- The option level chooses epsilon-greedily over ``Q_Omega(s, .)`` (a ``QValueActor`` with an
  ``EGreedyModule``) whenever the running option ends.
- The level below runs the option's intra-option policy ``pi_w(a | s)`` (one softmax head per
  option over a shared body) and hands control back when the option's termination head
  ``beta_w(s')`` fires (:class:`~torchrl_hier.levels.OptionTermination` in a ``ModuleRule``).
- :class:`OptionCriticLoss` trains all three on the lower level's one-step transitions
  ``(s, w, a, r, s')``: ``Q_Omega`` by intra-option Q-learning towards
  ``g = r + gamma**tau * (1 - terminated) * U(s', w)`` with
  ``U(s', w) = (1 - beta_w(s')) Q_Omega(s', w) + beta_w(s') max_w' Q_Omega(s', w')``; the
  intra-option policies by the intra-option policy gradient with advantage
  ``g - Q_Omega(s, w)``; the terminations by the termination gradient with advantage
  ``Q_Omega(s', w) - V_Omega(s') + xi`` (``V_Omega = max_w Q_Omega``, ``xi`` the deliberation
  cost, which favours long options). With an action critic (``action_critic=True``) the
  policy gradient's advantage is ``Q_U(s, w, a) - Q_Omega(s, w)`` instead, ``Q_U`` being the
  intra-option action value learnt towards the same target ``g`` (the paper's intra-option
  action-value learning, with ``Q_Omega`` as the baseline). With ``clip_epsilon`` the
  intra-option policy term is PPO's clipped surrogate on the same advantage, with the
  log-prob each move recorded when it was chosen (PPOC, Klissarov et al. 2017), so several
  epochs over a batch stay on-policy.

The policy and termination gradients are on-policy: train the loss with an
:class:`~torchrl_hier.learning.OnPolicyLearner` (``epochs=1``; more with ``clip_epsilon``) on
the lower level's trajectories. The option level has no learner of its own (its ``Q_Omega`` is
trained by the loss): list it in ``HierarchyLearner(..., frozen=[name])``.

``net="linear"`` makes every network one bias-free linear layer starting from constants
(``Q_Omega`` 0, uniform intra-option policies, termination logits ``termination_bias``): on
one-hot observations (``GridMaze(observation="onehot")``) that is the paper's tabular
option-critic; with an SGD optimizer, ``critic_coeff`` and ``termination_coeff`` scale the
critic's and the terminations' learning rates against the policies'.

Configs: ``hierarchy=option_critic`` names :func:`option_critic_option_from_config` (the
option level, frozen: no ``learner`` block) above :func:`option_critic_intra_option_from_config`
(the intra-option level, whose learner trains the loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, TensorDictModule, TensorDictSequential
from torch import Tensor, nn
from torch.distributions import Categorical as CategoricalDistribution
from torchrl.data import Categorical, OneHot, TensorSpec
from torchrl.modules import EGreedyModule, OneHotCategorical, ProbabilisticActor, QValueActor
from torchrl.objectives import LossModule, ValueEstimators
from torchrl.objectives.value import TD0Estimator

from torchrl_hier.control import ModuleRule, Timeout
from torchrl_hier.errors import ConfigError
from torchrl_hier.level import ACTION, OBSERVATION, PARENT_ACTION, Level
from torchrl_hier.levels.from_config import ACTIONS, OPTIONS, LevelContext, LevelParts
from torchrl_hier.levels.options import OptionTermination, option_spec, termination_loss
from torchrl_hier.levels.parts import NETS, InputNet, SingleGreedy, network

__all__ = [
    "OptionHeads",
    "OptionCriticLoss",
    "option_critic_levels",
    "option_critic_option_level",
    "option_critic_intra_option_level",
    "option_qvalue",
    "option_critic_option_from_config",
    "option_critic_intra_option_from_config",
]


class OptionHeads(nn.Module):
    """One output head per option over a shared body: ``net(observation)`` gives
    ``n_options * out_features`` values; the running option's (one-hot ``option``) are
    returned."""

    def __init__(self, net: nn.Module, n_options: int, out_features: int):
        super().__init__()
        self.net = net
        self.n_options = n_options
        self.out_features = out_features

    def forward(self, observation: Tensor, option: Tensor) -> Tensor:
        heads = self.net(observation.to(torch.get_default_dtype()))
        heads = heads.unflatten(-1, (self.n_options, self.out_features))
        return (heads * option.unsqueeze(-1).to(heads.dtype)).sum(-2)


class OptionCriticLoss(LossModule):
    """The option-critic losses on the lower level's transitions (see the module docstring):
    ``loss_critic`` (``Q_Omega``), ``loss_policy`` (intra-option policies, with an entropy
    bonus ``entropy_coeff``) and ``loss_termination`` (termination heads).

    Args:
        qvalue: ``Q_Omega``: a module reading ``"observation"`` and writing ``"action_value"``
            ``[*B, n_options]`` (the option level's ``QValueActor``).
        intra_option: the lower level's ``ProbabilisticActor``, reading ``"observation"`` and
            the one-hot option ``"parent_action"``.
        termination: the termination heads (the lower level's ``ModuleRule``).
        deliberation_cost: ``xi``, added to the termination advantage.
        entropy_coeff: weight of the intra-option policies' entropy bonus.
        critic_coeff, termination_coeff: weights of ``loss_critic`` and ``loss_termination``
            (with SGD: their learning rates relative to the policies').
        clip_epsilon: ``None`` for the intra-option policy gradient; a float for PPO's
            clipped surrogate with ratio ``pi(a | s, w) / pi_old(a | s, w)``, ``pi_old`` being
            the ``sample_log_prob`` entry the level recorded at each choice (PPOC).
        action_critic: ``None`` (the policy gradient's advantage is ``g - Q_Omega(s, w)``) or
            ``Q_U``: an :class:`OptionHeads` reading ``(observation, one-hot option)`` and
            giving one value per action, ``[*B, n_actions]``. It learns towards ``g`` (term
            ``loss_action_critic``, weighted by ``critic_coeff``) and the advantage becomes
            ``Q_U(s, w, a) - Q_Omega(s, w)``.
        baseline: with an action critic, subtract ``Q_Omega(s, w)`` from ``Q_U(s, w, a)``
            (default); ``False``: the advantage is ``Q_U(s, w, a)`` itself (unbiased too, but
            noisier; Bacon et al.'s script without ``--baseline``).

    Its value estimator is TD(0) (``make_value_estimator(ValueEstimators.TD0, gamma=...)``,
    which an ``OnPolicyLearner`` does with the level's gamma): ``g`` discounts by
    ``gamma**steps_to_next_obs`` and bootstraps unless the episode terminated.
    """

    default_value_estimator = ValueEstimators.TD0

    @dataclass
    class _AcceptedKeys:
        reward: str = "reward"
        done: str = "done"
        terminated: str = "terminated"
        steps_to_next_obs: str = "steps_to_next_obs"
        sample_log_prob: str = "action_log_prob"

    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        qvalue: TensorDictModule,
        intra_option: ProbabilisticActor,
        termination: OptionTermination,
        *,
        deliberation_cost: float = 0.01,
        entropy_coeff: float = 0.01,
        critic_coeff: float = 1.0,
        termination_coeff: float = 1.0,
        clip_epsilon: float | None = None,
        action_critic: OptionHeads | None = None,
        baseline: bool = True,
    ):
        super().__init__()
        if clip_epsilon is not None and not 0.0 < float(clip_epsilon) < 1.0:
            raise ValueError(
                f"clip_epsilon must be in (0, 1) (PPOC's clipping, e.g. 0.2) or None (the "
                f"plain intra-option policy gradient), got {clip_epsilon!r}."
            )
        if list(qvalue.in_keys) != [OBSERVATION]:
            raise ValueError(
                f"Q_Omega reads {qvalue.in_keys}; option-critic evaluates it on the lower level's "
                f"observations, so it must read just {OBSERVATION!r} (the option level on top)."
            )
        if not isinstance(termination, OptionTermination):
            raise TypeError(
                f"termination must be an OptionTermination, got {type(termination).__name__}."
            )
        self._one_hot_actions = False
        if action_critic is not None:
            spec = getattr(intra_option, "spec", None)
            action_spec = spec.get(ACTION, None) if spec is not None else None
            self._one_hot_actions = isinstance(action_spec, OneHot)
            if not isinstance(action_critic, OptionHeads):
                raise TypeError(
                    f"action_critic must be an OptionHeads (Q_U(s, w, .), one value per action), "
                    f"got {type(action_critic).__name__}."
                )
            if not isinstance(action_spec, (Categorical, OneHot)):
                raise TypeError(
                    "action_critic needs the intra-option policy's discrete action spec "
                    f"(Categorical or OneHot), got {type(action_spec).__name__}."
                )
            if (action_critic.n_options, action_critic.out_features) != (termination.n_options, action_spec.space.n):
                raise ValueError(
                    f"action_critic has {action_critic.n_options} options x "
                    f"{action_critic.out_features} actions; the level has "
                    f"{termination.n_options} options x {action_spec.space.n} actions."
                )
        self.qvalue = qvalue
        self.intra_option = intra_option
        self.termination = termination
        self.action_critic = action_critic
        self.baseline = bool(baseline)
        self.deliberation_cost = float(deliberation_cost)
        self.entropy_coeff = float(entropy_coeff)
        self.critic_coeff = float(critic_coeff)
        self.termination_coeff = float(termination_coeff)
        self.clip_epsilon = None if clip_epsilon is None else float(clip_epsilon)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    def make_value_estimator(self, value_type: ValueEstimators = None, **hyperparams):
        """TD(0) only: the targets are one-step intra-option Q-learning targets."""
        value_type = self.default_value_estimator if value_type is None else value_type
        if value_type != ValueEstimators.TD0:
            raise NotImplementedError(
                f"{type(self).__name__} bootstraps one step (intra-option Q-learning): it takes "
                f"ValueEstimators.TD0, got {value_type}."
            )
        self._value_estimator = TD0Estimator(value_network=None, **hyperparams)
        return self

    @property
    def in_keys(self) -> list:
        keys = [
            OBSERVATION, PARENT_ACTION, ACTION, ("next", OBSERVATION), ("next", "reward"),
            ("next", "done"), ("next", "terminated"),
        ]
        return keys + ([self.tensor_keys.sample_log_prob] if self.clip_epsilon is not None else [])

    @property
    def out_keys(self) -> list:
        keys = ["loss_critic", "loss_policy", "loss_termination", "termination_prob", "entropy"]
        keys += ["loss_action_critic"] if self.action_critic is not None else []
        return keys + (["clip_fraction"] if self.clip_epsilon is not None else [])

    def action_values(self, observation: Tensor, option: Tensor, action: Tensor) -> Tensor:
        """``Q_U(s, w, a)``, shape ``[*B]``, for the action taken (an index or one-hot, as
        the level's action spec says)."""
        if self.action_critic is None:
            raise RuntimeError(f"This {type(self).__name__} has no action critic (action_critic=None).")
        values = self.action_critic(observation, option)
        if self._one_hot_actions:
            return (values * action.to(values.dtype)).sum(-1)
        index = action.long().reshape(*values.shape[:-1], 1)
        return values.gather(-1, index).squeeze(-1)

    def _values(self, observation: Tensor) -> Tensor:
        return self.qvalue(
            TensorDict({OBSERVATION: observation}, batch_size=observation.shape[:-1])
        ).get("action_value")

    @torch.no_grad()
    def targets(self, tensordict: TensorDictBase) -> Tensor:
        """``g = r + gamma**tau * (1 - terminated) * U(s', w)``, shape ``[*B]``."""
        next_obs = tensordict.get(("next", OBSERVATION))
        option = tensordict.get(PARENT_ACTION)
        return self._targets(tensordict, self._values(next_obs), self.termination.probability(next_obs, option))

    def _targets(self, tensordict: TensorDictBase, next_values: Tensor, beta: Tensor) -> Tensor:
        option = tensordict.get(PARENT_ACTION).to(next_values.dtype)
        continuing = (next_values * option).sum(-1)
        arriving = continuing + beta * (next_values.max(-1).values - continuing)  # U(s', w)
        target = self.value_estimator.value_estimate(
            tensordict.select(("next", "reward"), ("next", "done"), ("next", "terminated"),
                              self.value_estimator.tensor_keys.steps_to_next_obs, strict=False),
            next_value=arriving.unsqueeze(-1),
        )
        return target.squeeze(-1)

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        observation = tensordict.get(OBSERVATION)
        option = tensordict.get(PARENT_ACTION)
        next_obs = tensordict.get(("next", OBSERVATION))
        values = self._values(observation)
        chosen = (values * option.to(values.dtype)).sum(-1)
        with torch.no_grad():
            next_values = self._values(next_obs)
        beta = self.termination.probability(next_obs, option)
        target = self._targets(tensordict, next_values, beta.detach())
        loss_critic = self.critic_coeff * 0.5 * (chosen - target).pow(2).mean()
        dist = self.intra_option.get_dist(tensordict.select(*self.intra_option.in_keys))
        action = tensordict.get(ACTION)
        log_prob = dist.log_prob(action)
        entropy = dist.entropy()
        out = {}
        if self.action_critic is None:
            advantage = (target - chosen).detach()
        else:
            q_u = self.action_values(observation, option, action)
            out["loss_action_critic"] = self.critic_coeff * 0.5 * (q_u - target).pow(2).mean()
            advantage = (q_u - chosen if self.baseline else q_u).detach()
        if self.clip_epsilon is None:
            surrogate = log_prob * advantage
        else:
            ratio = (log_prob - tensordict.get(self.tensor_keys.sample_log_prob).reshape(log_prob.shape)).exp()
            clipped = ratio.clamp(1.0 - self.clip_epsilon, 1.0 + self.clip_epsilon)
            surrogate = torch.minimum(ratio * advantage, clipped * advantage)
            out["clip_fraction"] = ((ratio - 1.0).abs() > self.clip_epsilon).float().mean().detach()
        loss_policy = -surrogate.mean() - self.entropy_coeff * entropy.mean()
        alive = ~tensordict.get(("next", "done")).reshape(beta.shape)
        loss_termination = self.termination_coeff * termination_loss(
            beta, next_values, option, self.deliberation_cost, alive
        )
        return TensorDict(
            {
                "loss_critic": loss_critic,
                "loss_policy": loss_policy,
                "loss_termination": loss_termination,
                "termination_prob": beta.detach().mean(),
                "entropy": entropy.detach().mean(),
                **out,
            },
            batch_size=[],
        )


def option_critic_option_level(
    name: str,
    obs_dim: int,
    n_options: int,
    *,
    hidden: Sequence[int] = (64, 64),
    net: str = "mlp",
    gamma: float = 0.99,
    epsilon: float = 0.05,
    eps_init: float | None = None,
    annealing_num_steps: int = 10_000,
    device: torch.device | str | None = None,
) -> Level:
    """Option-critic's option level: epsilon-greedy over ``Q_Omega(observation, .)``, a
    ``QValueActor`` (``net``: an MLP of ``hidden``, or ``"linear"``; ties broken by
    :class:`~torchrl_hier.levels.parts.SingleGreedy`) with an ``EGreedyModule`` (``eps_init``, if given, anneals to ``epsilon`` over
    ``annealing_num_steps`` of its choices). ``gamma`` is the discount of ``Q_Omega``, which the
    intra-option level below (:func:`option_critic_intra_option_level`) shares and trains."""
    if net not in NETS:
        raise ValueError(f"Level {name!r}: net must be one of {list(NETS)}, got {net!r}.")
    spec = option_spec(n_options).to(device or "cpu")
    qvalue = QValueActor(
        InputNet(network(net, obs_dim, n_options, hidden, device)), in_keys=[OBSERVATION],
        spec=spec.clone(),
    )
    explore = EGreedyModule(
        spec.clone(), eps_init=float(epsilon if eps_init is None else eps_init), eps_end=float(epsilon),
        annealing_num_steps=annealing_num_steps, device=device,
    )
    policy = TensorDictSequential(qvalue, SingleGreedy(), explore)
    return Level(name, policy, action_spec=spec, gamma=gamma)


def option_qvalue(option_level: Level) -> TensorDictModule:
    """The ``Q_Omega`` of an :func:`option_critic_option_level` (its policy's first module)."""
    policy = option_level.policy
    first = policy[0] if isinstance(policy, TensorDictSequential) and len(policy) else None
    if not isinstance(first, QValueActor) or not isinstance(option_level.action_spec, OneHot):
        raise TypeError(
            f"Level {option_level.name!r} is not an option-critic option level (a QValueActor, "
            "SingleGreedy, then an EGreedyModule over one-hot options); build it with "
            "option_critic_option_level."
        )
    return first


def option_critic_intra_option_level(
    name: str,
    option_level: Level,
    obs_dim: int,
    action_spec: TensorSpec,
    *,
    hidden: Sequence[int] = (64, 64),
    net: str = "mlp",
    deliberation_cost: float = 0.01,
    entropy_coeff: float = 0.01,
    critic_coeff: float = 1.0,
    termination_coeff: float = 1.0,
    termination_bias: float = -2.0,
    timeout: int | None = None,
    clip_epsilon: float | None = None,
    action_critic: bool = False,
    device: torch.device | str | None = None,
) -> tuple[Level, OptionCriticLoss]:
    """The intra-option level below ``option_level`` (emitting the env action of a discrete
    ``action_spec``), at ``option_level``'s gamma, and the :class:`OptionCriticLoss` that
    trains both (``clip_epsilon``: PPOC; its moves then record their log-prob).

    Args:
        net: ``"mlp"`` (``hidden`` layers) or ``"linear"`` (tabular on one-hot observations).
        termination_bias: initial termination logits (-2: options end w.p. ~0.12 a step).
        timeout: also end options after this many steps (``None``: terminations only, as in
            the paper).
        action_critic: learn ``Q_U(s, w, a)`` (an :class:`OptionHeads` on its own ``net``)
            and use ``Q_U - Q_Omega`` as the policy gradient's advantage (see
            :class:`OptionCriticLoss`).
    """
    if not isinstance(action_spec, (Categorical, OneHot)):
        raise TypeError(
            f"option-critic's intra-option policies here are softmax policies over discrete "
            f"actions; got a {type(action_spec).__name__} action spec."
        )
    if net not in NETS:
        raise ValueError(f"Level {name!r}: net must be one of {list(NETS)}, got {net!r}.")
    qvalue = option_qvalue(option_level)
    n_options = option_level.action_spec.space.n
    if device is not None:
        action_spec = action_spec.to(device)
    n_actions = action_spec.space.n
    intra_option = ProbabilisticActor(
        TensorDictModule(
            OptionHeads(network(net, obs_dim, n_options * n_actions, hidden, device), n_options, n_actions),
            in_keys=[OBSERVATION, PARENT_ACTION],
            out_keys=["logits"],
        ),
        in_keys=["logits"],
        spec=action_spec.clone(),
        distribution_class=(
            OneHotCategorical if isinstance(action_spec, OneHot) else CategoricalDistribution
        ),
        return_log_prob=clip_epsilon is not None,
        default_interaction_type=InteractionType.RANDOM,
    )
    termination = OptionTermination(
        obs_dim, n_options, hidden, init_bias=termination_bias, device=device, net=net
    )
    control = ModuleRule(termination, out_key="terminate")
    if timeout is not None:
        control = control | Timeout(timeout)
    q_u = None
    if action_critic:
        q_u = OptionHeads(network(net, obs_dim, n_options * n_actions, hidden, device), n_options, n_actions)
    loss = OptionCriticLoss(
        qvalue, intra_option, termination, deliberation_cost=deliberation_cost,
        entropy_coeff=entropy_coeff, critic_coeff=critic_coeff,
        termination_coeff=termination_coeff, clip_epsilon=clip_epsilon, action_critic=q_u,
    )
    records = (loss.tensor_keys.sample_log_prob,) if clip_epsilon is not None else ()
    low = Level(name, intra_option, gamma=option_level.gamma, control=control, records=records)
    return low, loss


def option_critic_levels(
    obs_dim: int,
    n_options: int,
    action_spec: TensorSpec,
    *,
    names: Sequence[str] = ("option", "primitive"),
    hidden: Sequence[int] = (64, 64),
    net: str = "mlp",
    gamma: float = 0.99,
    epsilon: float = 0.05,
    eps_init: float | None = None,
    annealing_num_steps: int = 10_000,
    deliberation_cost: float = 0.01,
    entropy_coeff: float = 0.01,
    critic_coeff: float = 1.0,
    termination_coeff: float = 1.0,
    termination_bias: float = -2.0,
    timeout: int | None = None,
    clip_epsilon: float | None = None,
    action_critic: bool = False,
    device: torch.device | str | None = None,
) -> tuple[Level, Level, OptionCriticLoss]:
    """The option level (:func:`option_critic_option_level`), the intra-option level below it
    (:func:`option_critic_intra_option_level`, emitting the env action of a discrete
    ``action_spec``) and their :class:`OptionCriticLoss`.

    Args:
        names: the two levels' names, option level first.
        net: ``"mlp"`` (``hidden`` layers) or ``"linear"`` (one bias-free linear layer per
            network: tabular option-critic on one-hot observations).
        epsilon: the epsilon of the epsilon-greedy choice over options (``eps_init``, if given,
            anneals to it over ``annealing_num_steps`` of the option level's choices).
        deliberation_cost: ``xi`` of the termination advantage.
        critic_coeff, termination_coeff, clip_epsilon: see :class:`OptionCriticLoss`.
        action_critic: learn ``Q_U(s, w, a)`` for the policy gradient's advantage
            ``Q_U - Q_Omega`` (see :func:`option_critic_intra_option_level`).
        termination_bias: initial termination logits (-2: options end w.p. ~0.12 a step).
        timeout: also end options after this many steps (``None``: terminations only, as in
            the paper).

    Returns ``(option_level, intra_option_level, loss)``: train the loss with
    ``OnPolicyLearner(loss, level=intra_option_level, epochs=1)``; the option level needs no
    learner of its own.
    """
    top_name, low_name = names
    top = option_critic_option_level(
        top_name, obs_dim, n_options, hidden=hidden, net=net, gamma=gamma, epsilon=epsilon,
        eps_init=eps_init, annealing_num_steps=annealing_num_steps, device=device,
    )
    low, loss = option_critic_intra_option_level(
        low_name, top, obs_dim, action_spec, hidden=hidden, net=net,
        deliberation_cost=deliberation_cost, entropy_coeff=entropy_coeff,
        critic_coeff=critic_coeff, termination_coeff=termination_coeff,
        termination_bias=termination_bias, timeout=timeout, clip_epsilon=clip_epsilon,
        action_critic=action_critic, device=device,
    )
    return top, low, loss


# ----------------------------------------------------------------------------- configs
def option_critic_option_from_config(
    ctx: LevelContext,
    *,
    n_options: int = 4,
    hidden: Sequence[int] = (64, 64),
    net: str = "mlp",
    gamma: float = 0.99,
    epsilon: float = 0.05,
    eps_init: float | None = None,
    annealing_num_steps: int = 10_000,
) -> LevelParts:
    """Option-critic's option level (config family ``option_critic_option``): the top level,
    epsilon-greedy over ``Q_Omega``; frozen (no ``learner`` block), since the intra-option level
    below (:func:`option_critic_intra_option_from_config`) trains ``Q_Omega`` with its loss."""
    if ctx.lowest or ctx.above is not None:
        raise ConfigError(
            f"{ctx.where} is option-critic's option level: it must be the top level, with "
            "option_critic_intra_option_from_config right below it."
        )
    if net not in NETS:
        raise ConfigError(f"{ctx.where}.net={net!r}; choose one of {list(NETS)}.")
    level = option_critic_option_level(
        ctx.name, ctx.obs_dim, int(n_options), hidden=tuple(hidden), net=net, gamma=float(gamma),
        epsilon=float(epsilon), eps_init=None if eps_init is None else float(eps_init),
        annealing_num_steps=int(annealing_num_steps), device=ctx.device,
    )
    return LevelParts(level, None, emits=OPTIONS, frozen=True)


def option_critic_intra_option_from_config(
    ctx: LevelContext,
    *,
    hidden: Sequence[int] = (64, 64),
    net: str = "mlp",
    deliberation_cost: float = 0.01,
    entropy_coeff: float = 0.01,
    critic_coeff: float = 1.0,
    termination_coeff: float = 1.0,
    termination_bias: float = -2.0,
    timeout: int | None = None,
    clip_epsilon: float | None = None,
    action_critic: bool = False,
) -> LevelParts:
    """Option-critic's intra-option level (config family ``option_critic_intra_option``): the
    lowest level, below :func:`option_critic_option_from_config`, at its gamma; its
    on-policy learner trains :class:`OptionCriticLoss` (``Q_Omega``, the intra-option policies
    and the terminations; ``clip_epsilon``: PPOC; ``action_critic``: a learnt ``Q_U`` for the
    policy gradient's advantage)."""
    above = ctx.above
    frozen_qvalue = above is not None and above.frozen and above.emits == OPTIONS
    if not ctx.lowest or not frozen_qvalue:
        raise ConfigError(
            f"{ctx.where} is option-critic's intra-option level: it must be the lowest level, "
            "right below an option level built by option_critic_option_from_config."
        )
    if not isinstance(ctx.env_spec, (Categorical, OneHot)):
        raise ConfigError(
            f"{ctx.where}: option-critic's intra-option policies are softmax policies over "
            f"discrete actions; task {ctx.task['name']!r} has {type(ctx.env_spec).__name__} "
            "actions. Pick a discrete task (task=GridMaze-FourRooms, ...)."
        )
    if net not in NETS:
        raise ConfigError(f"{ctx.where}.net={net!r}; choose one of {list(NETS)}.")
    try:
        level, loss = option_critic_intra_option_level(
            ctx.name, above.level, ctx.obs_dim, ctx.env_spec, hidden=tuple(hidden), net=net,
            deliberation_cost=float(deliberation_cost), entropy_coeff=float(entropy_coeff),
            critic_coeff=float(critic_coeff), termination_coeff=float(termination_coeff),
            termination_bias=float(termination_bias),
            timeout=None if timeout is None else int(timeout),
            clip_epsilon=None if clip_epsilon is None else float(clip_epsilon),
            action_critic=bool(action_critic), device=ctx.device,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{ctx.where}: {err}") from None
    return LevelParts(level, loss, on_policy=True, emits=ACTIONS)
