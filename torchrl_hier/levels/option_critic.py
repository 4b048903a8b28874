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
  cost, which favours long options).

The policy and termination gradients are on-policy: train the loss with an
:class:`~torchrl_hier.learning.OnPolicyLearner` (``epochs=1``) on the lower level's
trajectories. The option level has no learner of its own (its ``Q_Omega`` is trained by the
loss): list it in ``HierarchyLearner(..., frozen=[name])``.
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
from torchrl_hier.level import ACTION, OBSERVATION, PARENT_ACTION, Level
from torchrl_hier.levels.options import OptionTermination, option_spec, termination_loss
from torchrl_hier.levels.parts import InputNet, mlp

__all__ = ["OptionHeads", "OptionCriticLoss", "option_critic_levels"]


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

    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        qvalue: TensorDictModule,
        intra_option: ProbabilisticActor,
        termination: OptionTermination,
        *,
        deliberation_cost: float = 0.01,
        entropy_coeff: float = 0.01,
    ):
        super().__init__()
        if list(qvalue.in_keys) != [OBSERVATION]:
            raise ValueError(
                f"Q_Omega reads {qvalue.in_keys}; option-critic evaluates it on the lower level's "
                f"observations, so it must read just {OBSERVATION!r} (the option level on top)."
            )
        if not isinstance(termination, OptionTermination):
            raise TypeError(
                f"termination must be an OptionTermination, got {type(termination).__name__}."
            )
        self.qvalue = qvalue
        self.intra_option = intra_option
        self.termination = termination
        self.deliberation_cost = float(deliberation_cost)
        self.entropy_coeff = float(entropy_coeff)

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
        return [
            OBSERVATION, PARENT_ACTION, ACTION, ("next", OBSERVATION), ("next", "reward"),
            ("next", "done"), ("next", "terminated"),
        ]

    @property
    def out_keys(self) -> list:
        return ["loss_critic", "loss_policy", "loss_termination", "termination_prob", "entropy"]

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
        loss_critic = 0.5 * (chosen - target).pow(2).mean()
        dist = self.intra_option.get_dist(tensordict.select(*self.intra_option.in_keys))
        log_prob = dist.log_prob(tensordict.get(ACTION))
        entropy = dist.entropy()
        advantage = (target - chosen).detach()
        loss_policy = -(log_prob * advantage).mean() - self.entropy_coeff * entropy.mean()
        alive = ~tensordict.get(("next", "done")).reshape(beta.shape)
        loss_termination = termination_loss(beta, next_values, option, self.deliberation_cost, alive)
        return TensorDict(
            {
                "loss_critic": loss_critic,
                "loss_policy": loss_policy,
                "loss_termination": loss_termination,
                "termination_prob": beta.detach().mean(),
                "entropy": entropy.detach().mean(),
            },
            batch_size=[],
        )


def option_critic_levels(
    obs_dim: int,
    n_options: int,
    action_spec: TensorSpec,
    *,
    names: Sequence[str] = ("option", "primitive"),
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    epsilon: float = 0.05,
    eps_init: float | None = None,
    annealing_num_steps: int = 10_000,
    deliberation_cost: float = 0.01,
    entropy_coeff: float = 0.01,
    termination_bias: float = -2.0,
    timeout: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[Level, Level, OptionCriticLoss]:
    """The option level, the intra-option level below it (emitting the env action of a
    discrete ``action_spec``) and their :class:`OptionCriticLoss`.

    Args:
        names: the two levels' names, option level first.
        epsilon: the epsilon of the epsilon-greedy choice over options (``eps_init``, if given,
            anneals to it over ``annealing_num_steps`` of the option level's choices).
        deliberation_cost: ``xi`` of the termination advantage.
        termination_bias: initial termination logits (-2: options end w.p. ~0.12 a step).
        timeout: also end options after this many steps (``None``: terminations only, as in
            the paper).

    Returns ``(option_level, intra_option_level, loss)``: train the loss with
    ``OnPolicyLearner(loss, level=intra_option_level, epochs=1)``; the option level needs no
    learner of its own.
    """
    if not isinstance(action_spec, (Categorical, OneHot)):
        raise TypeError(
            f"option-critic's intra-option policies here are softmax policies over discrete "
            f"actions; got a {type(action_spec).__name__} action spec."
        )
    if device is not None:
        action_spec = action_spec.to(device)
    top_name, low_name = names
    spec = option_spec(n_options).to(device or "cpu")
    qvalue = QValueActor(InputNet(mlp(obs_dim, n_options, hidden, device)), in_keys=[OBSERVATION], spec=spec.clone())
    explore = EGreedyModule(
        spec.clone(), eps_init=float(epsilon if eps_init is None else eps_init), eps_end=float(epsilon),
        annealing_num_steps=annealing_num_steps, device=device,
    )
    top = Level(top_name, TensorDictSequential(qvalue, explore), action_spec=spec, gamma=gamma)
    n_actions = action_spec.space.n
    intra_option = ProbabilisticActor(
        TensorDictModule(
            OptionHeads(mlp(obs_dim, n_options * n_actions, hidden, device), n_options, n_actions),
            in_keys=[OBSERVATION, PARENT_ACTION],
            out_keys=["logits"],
        ),
        in_keys=["logits"],
        spec=action_spec.clone(),
        distribution_class=(
            OneHotCategorical if isinstance(action_spec, OneHot) else CategoricalDistribution
        ),
        default_interaction_type=InteractionType.RANDOM,
    )
    termination = OptionTermination(obs_dim, n_options, hidden, init_bias=termination_bias, device=device)
    control = ModuleRule(termination, out_key="terminate")
    if timeout is not None:
        control = control | Timeout(timeout)
    low = Level(low_name, intra_option, gamma=gamma, control=control)
    loss = OptionCriticLoss(
        qvalue, intra_option, termination, deliberation_cost=deliberation_cost,
        entropy_coeff=entropy_coeff,
    )
    return top, low, loss
