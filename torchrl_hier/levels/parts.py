"""Building blocks of the ready-made levels: input networks, DQN / TD3 / SAC heads and losses,
and the policy modules that carry subgoal testing through a hierarchy.

Everything here is a stock TorchRL module (``QValueActor``, ``ProbabilisticActor`` with
``TanhDelta``/``TanhNormal``, ``ValueOperator``, ``EGreedyModule``, ``AdditiveGaussianModule``)
or a small ``TensorDictModuleBase`` around one, batched over env instances.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import (
    InteractionType,
    NormalParamExtractor,
    TensorDictModule,
    TensorDictModuleBase,
    TensorDictSequential,
)
from torch import Tensor, nn
from torchrl.data import Bounded, Categorical, OneHot, TensorSpec
from torchrl.envs.utils import ExplorationType, exploration_type, set_exploration_type
from torchrl.modules import (
    MLP,
    AdditiveGaussianModule,
    EGreedyModule,
    ProbabilisticActor,
    QValueActor,
    TanhDelta,
    TanhNormal,
    ValueOperator,
)
from torchrl.objectives import DQNLoss, LossModule, SACLoss, TD3Loss, ValueEstimators

from torchrl_hier.level import ACTION, OBSERVATION, PARENT_ACTION
from torchrl_hier.levels.goals import SubgoalSpace
from torchrl_hier.levels.reachability import (
    ACTION_MASK,
    MaskedQValues,
    ReachabilityMemory,
    ReachableSubgoals,
)
from torchrl_hier.smdp import masked_where

__all__ = [
    "NETS",
    "InputNet",
    "SingleGreedy",
    "linear",
    "network",
    "GreedyWhenTested",
    "SubgoalTestFlag",
    "SubgoalToAbsolute",
    "LatticeSubgoal",
    "dqn_head",
    "actor_critic_head",
    "GaussianOrUniform",
    "PreTanhPenaltyTD3Loss",
    "anneal_exploration",
    "exploration_modules",
]

_RANDOM_MODES = (ExplorationType.RANDOM, None)


class InputNet(nn.Module):
    """Applies ``net`` to the concatenation of its inputs, cast to float.

    The first input is the level's observation and, when ``goal_space`` is given, the second is
    the parent action holding an absolute goal in its first ``goal_space.dim`` entries (a
    subgoal-test flag may follow): it is replaced by ``goal - achieved(observation)``, the
    displacement still to cover, which generalises across positions. Other inputs (a one-hot
    option, an action for a critic) are concatenated as they are.
    """

    def __init__(self, net: nn.Module, goal_space: SubgoalSpace | None = None):
        super().__init__()
        self.net = net
        self.goal_space = goal_space

    def forward(self, *inputs: Tensor):
        inputs = list(inputs)
        if self.goal_space is not None:
            observation, parent_action = inputs[0], inputs[1]
            goal = parent_action[..., : self.goal_space.dim]
            inputs[1] = goal - self.goal_space.achieved(observation)
        return self.net(torch.cat([x.to(torch.get_default_dtype()) for x in inputs], -1))


def _in_keys(parent_dim: int | None) -> list[str]:
    return [OBSERVATION] if parent_dim is None else [OBSERVATION, PARENT_ACTION]


def _in_features(obs_dim: int, parent_dim: int | None, goal_space: SubgoalSpace | None) -> int:
    if parent_dim is None:
        return obs_dim
    return obs_dim + (goal_space.dim if goal_space is not None else parent_dim)


class ValueRange(nn.Module):
    """Squashes values into ``(low, high)`` with a scaled sigmoid, as HAC bounds its critics
    (``[-H, 0]``): targets bootstrapped from actions the level never takes cannot drift past
    the returns the level can actually get."""

    def __init__(self, low: float, high: float):
        super().__init__()
        if not low < high:
            raise ValueError(f"value_range needs low < high, got ({low}, {high}).")
        self.low, self.high = float(low), float(high)

    def forward(self, x: Tensor) -> Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(x)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


def mlp(
    in_features: int,
    out_features: int,
    hidden: Sequence[int],
    device,
    value_range: tuple[float, float] | None = None,
) -> nn.Module:
    net = MLP(
        in_features=in_features,
        out_features=out_features,
        num_cells=list(hidden),
        activation_class=nn.ReLU,
        device=device,
    )
    return net if value_range is None else nn.Sequential(net, ValueRange(*value_range))


#: Network kinds of the levels that offer a choice (``net=``): an MLP, or one bias-free
#: linear layer (a table over one-hot features).
NETS = ("mlp", "linear")


def linear(in_features: int, out_features: int, device, init: float = 0.0) -> nn.Linear:
    """A bias-free linear layer with every weight ``init``: on one-hot features (a tabular
    observation) each input's outputs are a table row, learnt independently of the others'
    and starting at ``init``."""
    layer = nn.Linear(in_features, out_features, bias=False, device=device)
    with torch.no_grad():
        layer.weight.fill_(init)
    return layer


def network(
    kind: str, in_features: int, out_features: int, hidden: Sequence[int], device,
    init: float | None = None,
) -> nn.Module:
    """An :func:`mlp` (``kind="mlp"``; its last layer's bias set to ``init`` if given) or a
    :func:`linear` layer (``"linear"``; ``hidden`` unused, every weight ``init``, default 0)."""
    if kind == "linear":
        return linear(in_features, out_features, device, 0.0 if init is None else init)
    if kind != "mlp":
        raise ValueError(f"net must be one of {list(NETS)}, got {kind!r}.")
    net = mlp(in_features, out_features, hidden, device)
    if init is not None:
        with torch.no_grad():
            net[-1].bias.fill_(init)
    return net


def dqn_head(
    obs_dim: int,
    action_spec: Categorical | OneHot,
    *,
    parent_dim: int | None = None,
    goal_space: SubgoalSpace | None = None,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    eps_init: float = 1.0,
    eps_end: float = 0.05,
    annealing_num_steps: int = 10_000,
    double_dqn: bool = True,
    value_range: tuple[float, float] | None = None,
    reachability: ReachabilityMemory | None = None,
    device: torch.device | str | None = None,
) -> tuple[TensorDictModuleBase, QValueActor, DQNLoss]:
    """A Q-network policy with epsilon-greedy exploration, its ``QValueActor`` and ``DQNLoss``.

    Returns ``(policy, qvalue_actor, loss)``; the loss's value estimator is TD(0) with
    ``gamma``, which discounts by ``gamma**steps_to_next_obs`` (the level's τ).
    ``value_range=(low, high)`` bounds the Q-values (:class:`ValueRange`).
    ``reachability``: for a lattice subgoal level, only the subgoals the memory has seen
    reached from the current position are chosen, greedily or exploring, and bootstrapped
    from (:class:`~torchrl_hier.levels.MaskedQValues`; the others get ``value_range``'s low).
    """
    if not isinstance(action_spec, (Categorical, OneHot)):
        raise TypeError(
            f"dqn_head needs a discrete action spec (Categorical or OneHot), got "
            f"{type(action_spec).__name__}: DQN picks one of n actions. For continuous actions "
            "use a TD3 or SAC head (actor_critic_head), or a task with discrete actions."
        )
    if device is not None:
        action_spec = action_spec.to(device)
    n_actions = action_spec.space.n
    net = InputNet(
        mlp(_in_features(obs_dim, parent_dim, goal_space), n_actions, hidden, device,
            value_range),
        goal_space,
    )
    masking = []
    if reachability is not None:
        if reachability.space.n_points != n_actions:
            raise ValueError(
                f"dqn_head: the reachability memory is over {reachability.space.n_points} "
                f"lattice subgoals but the head has {n_actions} actions."
            )
        net = MaskedQValues(net, reachability, -1e4 if value_range is None else value_range[0])
        masking = [ReachableSubgoals(reachability)]
    actor = QValueActor(net, in_keys=_in_keys(parent_dim), spec=action_spec.clone())
    explore = EGreedyModule(
        action_spec.clone(),
        eps_init=float(eps_init),
        eps_end=float(eps_end),
        annealing_num_steps=annealing_num_steps,
        action_mask_key=ACTION_MASK if masking else None,
        device=device,
    )
    loss = DQNLoss(actor, action_space=action_spec.clone(), delay_value=True, double_dqn=double_dqn)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)
    return TensorDictSequential(*masking, actor, explore), actor, loss


class GaussianOrUniform(AdditiveGaussianModule):
    """TorchRL's ``AdditiveGaussianModule`` that, with probability ``random_probability`` per
    instance, replaces the action by a uniform draw from the spec's box instead, as HAC
    explores (20 % random actions or subgoals, Gaussian noise otherwise). Annealing, the
    exploration modes and :class:`GreedyWhenTested` treat it as the Gaussian module it is."""

    def __init__(self, spec: Bounded, *args, random_probability: float = 0.0, **kwargs):
        if not 0.0 <= random_probability <= 1.0:
            raise ValueError(
                f"random_probability must be in [0, 1] (the share of uniformly random actions), "
                f"got {random_probability!r}."
            )
        super().__init__(spec, *args, **kwargs)
        self.random_probability = float(random_probability)

    def _add_noise(self, action: Tensor) -> Tensor:
        noisy = super()._add_noise(action)
        if self.random_probability == 0.0:
            return noisy
        space = self.spec[self.action_key].space
        low = space.low.to(action.device, action.dtype)
        high = space.high.to(action.device, action.dtype)
        uniform = low + (high - low) * torch.rand_like(action)
        pick = torch.rand(action.shape[:-1], device=action.device) < self.random_probability
        return torch.where(pick.unsqueeze(-1), uniform, noisy)

    def extra_repr(self) -> str:
        return f"random_probability={self.random_probability}"


class PreTanhPenaltyTD3Loss(TD3Loss):
    """TorchRL's ``TD3Loss`` plus ``loss_pre_tanh = weight * mean(u**2)``, a penalty on the
    pre-tanh output ``u`` (entry ``pre_tanh_key``) of its ``TanhDelta`` actor.

    A tanh actor trained with Adam on a critic that barely depends on the action drifts to
    ``|u| >> 1``: Adam rescales the vanishing ``(1 - tanh(u)**2) dQ/da`` gradient to full-size
    steps, the action sticks at a bound and no later critic can pull it back (the gradient
    through the saturated tanh is ~0). The penalty's gradient ``2 * weight * u`` does not
    vanish, so it keeps ``u`` where the tanh still responds (as rlkit's DDPG
    ``policy_pre_activation_weight``). It adds one actor forward per gradient step; the
    ``pre_tanh_abs`` output (mean ``|u|``) shows how far the actor sits from saturation.
    """

    def __init__(self, *args, pre_tanh_penalty: float, pre_tanh_key: str = "param", **kwargs):
        if not (isinstance(pre_tanh_penalty, (int, float)) and pre_tanh_penalty > 0):
            raise ValueError(
                f"pre_tanh_penalty must be a positive number (the weight of mean(u**2) in the "
                f"actor loss), got {pre_tanh_penalty!r}; use TD3Loss for no penalty."
            )
        super().__init__(*args, **kwargs)
        self.pre_tanh_penalty = float(pre_tanh_penalty)
        self.pre_tanh_key = pre_tanh_key

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict]:
        loss_actor, metadata = super().actor_loss(tensordict)
        td = tensordict.select(*self.actor_network.in_keys, strict=False)
        with self.actor_network_params.to_module(self.actor_network, preserve_module_state=False):
            td = self.actor_network(td)
        if self.pre_tanh_key not in td.keys():
            raise KeyError(
                f"PreTanhPenaltyTD3Loss: the actor wrote no {self.pre_tanh_key!r} entry (its "
                f"pre-tanh output); it wrote {sorted(map(str, td.keys()))}."
            )
        u = td.get(self.pre_tanh_key)
        metadata["loss_pre_tanh"] = self.pre_tanh_penalty * u.pow(2).mean()
        metadata["pre_tanh_abs"] = u.detach().abs().mean()
        return loss_actor, metadata


def actor_critic_head(
    obs_dim: int,
    action_spec: Bounded,
    *,
    algorithm: str = "td3",
    parent_dim: int | None = None,
    goal_space: SubgoalSpace | None = None,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    noise_std: float = 0.1,
    noise_end: float | None = None,
    annealing_num_steps: int = 10_000,
    value_range: tuple[float, float] | None = None,
    random_probability: float = 0.0,
    pre_tanh_penalty: float = 0.0,
    device: torch.device | str | None = None,
) -> tuple[TensorDictModuleBase, ProbabilisticActor, LossModule]:
    """A bounded continuous actor, its critic and a ``TD3Loss`` or ``SACLoss``.

    TD3: a ``TanhDelta`` ``ProbabilisticActor`` plus ``AdditiveGaussianModule`` noise of std
    ``noise_std * (high - low) / 2`` (annealed to ``noise_end``); with ``random_probability``
    that share of its exploring actions is uniform in the box instead (:class:`GaussianOrUniform`). SAC: a ``TanhNormal`` actor,
    sampled while exploring. Returns ``(policy, actor, loss)``. ``value_range=(low, high)``
    bounds the critic's Q-values (:class:`ValueRange`). ``pre_tanh_penalty > 0`` (TD3 only)
    keeps the actor off its tanh bounds (:class:`PreTanhPenaltyTD3Loss`).
    """
    if algorithm not in ("td3", "sac"):
        raise ValueError(f"algorithm must be 'td3' or 'sac' for continuous actions, got {algorithm!r}.")
    if not (isinstance(pre_tanh_penalty, (int, float)) and pre_tanh_penalty >= 0):
        raise ValueError(f"pre_tanh_penalty must be a number >= 0, got {pre_tanh_penalty!r}.")
    if pre_tanh_penalty and algorithm != "td3":
        raise ValueError(
            f"pre_tanh_penalty={pre_tanh_penalty} is for the TD3 actor (TanhDelta); "
            f"algorithm={algorithm!r} has none. Set it to 0."
        )
    if not isinstance(action_spec, Bounded):
        raise TypeError(
            f"A continuous level needs a Bounded action spec, got {type(action_spec).__name__}."
        )
    if device is not None:
        action_spec = action_spec.to(device)
    dim = action_spec.shape[-1]
    low, high = action_spec.space.low, action_spec.space.high
    in_keys = _in_keys(parent_dim)
    in_features = _in_features(obs_dim, parent_dim, goal_space)
    if algorithm == "td3":
        net = InputNet(mlp(in_features, dim, hidden, device), goal_space)
        actor = ProbabilisticActor(
            TensorDictModule(net, in_keys=in_keys, out_keys=["param"]),
            in_keys=["param"],
            spec=action_spec.clone(),
            distribution_class=TanhDelta,
            # safe=False: a deterministic actor never inverts its tanh (no log-prob), so the
            # clamp of TorchRL's SafeTanhTransform buys nothing, and it cannot be compiled.
            distribution_kwargs={"low": low, "high": high, "safe": False},
            default_interaction_type=InteractionType.DETERMINISTIC,
        )
        half_range = float(((high - low) / 2).mean())
        end = noise_std if noise_end is None else noise_end
        explore = GaussianOrUniform(
            action_spec.clone(),
            sigma_init=1.0,
            sigma_end=float(end / noise_std) if noise_std > 0 else 1.0,
            annealing_num_steps=annealing_num_steps,
            std=noise_std * half_range,
            random_probability=random_probability,
            device=device,
        )
        policy = TensorDictSequential(actor, explore)
    else:
        net = InputNet(
            nn.Sequential(mlp(in_features, 2 * dim, hidden, device), NormalParamExtractor()),
            goal_space,
        )
        actor = ProbabilisticActor(
            TensorDictModule(net, in_keys=in_keys, out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"],
            spec=action_spec.clone(),
            distribution_class=TanhNormal,
            distribution_kwargs={"low": low, "high": high},
            default_interaction_type=InteractionType.RANDOM,
        )
        policy = actor
    critic = ValueOperator(
        InputNet(mlp(in_features + dim, 1, hidden, device, value_range), goal_space),
        in_keys=[*in_keys, ACTION],
    )
    if algorithm == "td3" and pre_tanh_penalty:
        loss = PreTanhPenaltyTD3Loss(
            actor, critic, action_spec=action_spec.clone(), num_qvalue_nets=2,
            pre_tanh_penalty=float(pre_tanh_penalty),
        )
    elif algorithm == "td3":
        loss = TD3Loss(actor, critic, action_spec=action_spec.clone(), num_qvalue_nets=2)
    else:
        loss = SACLoss(actor, critic, action_spec=action_spec.clone(), num_qvalue_nets=2)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)
    return policy, actor, loss


def conditioned_head(
    name: str,
    obs_dim: int,
    action_spec: TensorSpec,
    algorithm: str | None,
    *,
    parent_dim: int,
    goal_space: SubgoalSpace | None = None,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    eps_init: float = 1.0,
    eps_end: float = 0.05,
    annealing_num_steps: int = 10_000,
    noise_std: float = 0.1,
    noise_end: float | None = None,
    value_range: tuple[float, float] | None = None,
    random_probability: float = 0.0,
    pre_tanh_penalty: float = 0.0,
    device: torch.device | str | None = None,
) -> tuple[TensorDictModuleBase, LossModule]:
    """The head of a level conditioned on its parent's action (an option or a subgoal):
    :func:`dqn_head` for a ``Categorical``/``OneHot`` action spec, :func:`actor_critic_head`
    (TD3 by default, or SAC) for a ``Bounded`` one. Returns ``(policy, loss)``.
    ``pre_tanh_penalty``: see :func:`actor_critic_head` (continuous TD3 only)."""
    if isinstance(action_spec, (Categorical, OneHot)):
        if pre_tanh_penalty:
            raise ValueError(
                f"Level {name!r}: pre_tanh_penalty={pre_tanh_penalty} is for a TD3 actor; "
                f"discrete actions ({type(action_spec).__name__}) have none. Set it to 0."
            )
        if algorithm not in (None, "dqn"):
            raise ValueError(
                f"Level {name!r}: discrete actions ({type(action_spec).__name__}) use "
                f"algorithm='dqn', got {algorithm!r}."
            )
        policy, _, loss = dqn_head(
            obs_dim, action_spec, parent_dim=parent_dim, goal_space=goal_space, hidden=hidden,
            gamma=gamma, eps_init=eps_init, eps_end=eps_end,
            annealing_num_steps=annealing_num_steps, value_range=value_range, device=device,
        )
        return policy, loss
    if isinstance(action_spec, Bounded):
        policy, _, loss = actor_critic_head(
            obs_dim, action_spec, algorithm=algorithm or "td3", parent_dim=parent_dim,
            goal_space=goal_space, hidden=hidden, gamma=gamma, noise_std=noise_std,
            noise_end=noise_end, annealing_num_steps=annealing_num_steps,
            value_range=value_range, random_probability=random_probability,
            pre_tanh_penalty=pre_tanh_penalty, device=device,
        )
        return policy, loss
    raise TypeError(
        f"Level {name!r}: action_spec must be Categorical/OneHot (DQN) or Bounded (TD3/SAC), "
        f"got {type(action_spec).__name__}."
    )


class SingleGreedy(TensorDictModuleBase):
    """Makes a ``QValueActor``'s one-hot greedy ``"action"`` a single one where several
    actions share the largest ``"action_value"`` (TorchRL's ``QValueModule`` marks every
    maximum, which tables that start from equal values hit at every state): one of the maxima
    drawn uniformly while exploring, the first one in deterministic mode. Place it right after
    the ``QValueActor``."""

    def __init__(self, action_key: str = ACTION, action_value_key: str = "action_value"):
        super().__init__()
        self.action_key, self.action_value_key = action_key, action_value_key
        self.in_keys = [action_value_key]
        self.out_keys = [action_key]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        values = tensordict.get(self.action_value_key)
        best = values == values.max(-1, keepdim=True).values
        if exploration_type() in _RANDOM_MODES:
            index = torch.rand_like(values).masked_fill(~best, -1.0).argmax(-1)
        else:
            index = best.to(torch.uint8).argmax(-1)
        action = tensordict.get(self.action_key)
        one_hot = torch.nn.functional.one_hot(index, values.shape[-1]).to(action.dtype)
        return tensordict.set(self.action_key, one_hot)


class GreedyWhenTested(TensorDictModuleBase):
    """Runs ``policy`` greedily (``ExplorationType.DETERMINISTIC``) for the instances whose
    parent subgoal is being tested (entry ``flag_index`` of ``"parent_action"`` set), and as
    usual for the others, as HAC's subgoal testing requires of every level below a tested one.

    A policy ending with an exploration module (``TensorDictSequential(actor, EGreedyModule)``,
    as :func:`dqn_head` and :func:`actor_critic_head` build) runs its actor once and keeps the
    greedy action where tested; any other policy (e.g. a sampling SAC actor) runs twice, once
    in each mode. No host sync either way.
    """

    def __init__(self, policy: TensorDictModuleBase, flag_index: int):
        super().__init__()
        self.policy = policy
        self.flag_index = flag_index
        self.in_keys = list(dict.fromkeys([*policy.in_keys, PARENT_ACTION]))
        self.out_keys = list(policy.out_keys)
        modules = list(policy.module) if isinstance(policy, TensorDictSequential) else []
        split = len(modules) >= 2 and isinstance(
            modules[-1], (EGreedyModule, AdditiveGaussianModule)
        )
        self._split = (modules[:-1], modules[-1]) if split else None

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if exploration_type() not in _RANDOM_MODES:
            return self.policy(tensordict)
        tested = tensordict.get(PARENT_ACTION)[..., self.flag_index] > 0.5
        if self._split is not None:
            body, explore = self._split
            for module in body:
                tensordict = module(tensordict)
            greedy = tensordict.get(ACTION)
            explored = explore(tensordict).get(ACTION)
        else:
            explored = self.policy(tensordict.copy()).get(ACTION)
            with set_exploration_type(ExplorationType.DETERMINISTIC):
                greedy = self.policy(tensordict.copy()).get(ACTION)
        return tensordict.set(ACTION, masked_where(tested, greedy, explored))


class LatticeSubgoal(TensorDictModuleBase):
    """Turns a one-hot pick among the lattice points of ``space`` (a DQN subgoal level's
    action) into that point, a subgoal in the space's frame."""

    def __init__(self, space: SubgoalSpace, device: torch.device | str | None = None):
        super().__init__()
        self.register_buffer("points", space.lattice.to(device))
        self.in_keys = [ACTION]
        self.out_keys = [ACTION]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        pick = tensordict.get(ACTION)
        return tensordict.set(ACTION, pick.to(self.points.dtype) @ self.points)


class SubgoalToAbsolute(TensorDictModuleBase):
    """Turns a relative subgoal (a displacement) into the absolute target handed below."""

    def __init__(self, space: SubgoalSpace):
        super().__init__()
        self.space = space
        self.in_keys = [OBSERVATION, ACTION]
        self.out_keys = [ACTION]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = self.space.to_absolute(tensordict.get(ACTION), tensordict.get(OBSERVATION))
        return tensordict.set(ACTION, action)


class SubgoalTestFlag(TensorDictModuleBase):
    """Appends HAC's subgoal-test flag to a subgoal: 1 with probability ``probability`` while
    exploring (never in deterministic mode), and always when the level's own parent subgoal is
    tested (``parent_flag_index`` of ``"parent_action"``), since a tested level's whole
    sub-hierarchy acts greedily."""

    def __init__(self, probability: float, parent_flag_index: int | None = None):
        super().__init__()
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"The subgoal-test probability must be in [0, 1], got {probability}.")
        self.probability = probability
        self.parent_flag_index = parent_flag_index
        self.in_keys = [ACTION] + ([] if parent_flag_index is None else [PARENT_ACTION])
        self.out_keys = [ACTION]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get(ACTION)
        batch = action.shape[:-1]
        if exploration_type() in _RANDOM_MODES and self.probability > 0:
            flag = torch.rand(batch, device=action.device) < self.probability
        else:
            flag = torch.zeros(batch, dtype=torch.bool, device=action.device)
        if self.parent_flag_index is not None:
            flag = flag | (tensordict.get(PARENT_ACTION)[..., self.parent_flag_index] > 0.5)
        return tensordict.set(ACTION, torch.cat([action, flag.unsqueeze(-1).to(action.dtype)], -1))


def exploration_modules(module: nn.Module) -> list[nn.Module]:
    """The annealed exploration modules (``EGreedyModule``, ``AdditiveGaussianModule``) in a
    level's policy."""
    return [m for m in module.modules() if isinstance(m, (EGreedyModule, AdditiveGaussianModule))]


def anneal_exploration(module: nn.Module, frames: int = 1) -> None:
    """Steps every annealed exploration module of a level's policy by ``frames`` (call it as
    often as the level acts, e.g. with the number of its new transitions). Same schedule as
    their ``step(frames)``, without its per-frame Python loop."""
    for m in exploration_modules(module):
        if isinstance(m, EGreedyModule):
            value, start, end = m.eps, m.eps_init, m.eps_end
        else:
            value, start, end = m.sigma, m.sigma_init, m.sigma_end
        decayed = value - frames * (start - end) / m.annealing_num_steps
        value.data.copy_(torch.maximum(end, decayed))
