"""On-policy levels: a stochastic actor and a state-value critic trained with ``ClipPPOLoss`` or
``A2CLoss`` by an :class:`~torchrl_hier.learning.OnPolicyLearner` (semi-MDP GAE over the
level's own trajectories).

The actor is a stock ``ProbabilisticActor`` sampling while exploring and taking the mode in
deterministic mode: ``OneHotCategorical`` for one-hot actions (options), ``Categorical`` for
integer ones, ``TanhNormal`` for ``Bounded`` ones. A PPO level records the sample log-prob of
each choice (:attr:`Level.records`), which the hierarchy carries from the choice to the end of
the level's transition, however many env steps and batches that takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tensordict.nn import InteractionType, NormalParamExtractor, TensorDictModule
from torch import Tensor, nn
from torch.distributions import Categorical as CategoricalDistribution
from torchrl.data import Bounded, Categorical, OneHot, TensorSpec
from torchrl.modules import OneHotCategorical, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import A2CLoss, ClipPPOLoss, LossModule

from torchrl_hier.control import LevelStep, ReturnControlRule
from torchrl_hier.level import OBSERVATION, PARENT_ACTION, Level
from torchrl_hier.levels.parts import InputNet, mlp

__all__ = ["ON_POLICY_ALGORITHMS", "on_policy_head", "on_policy_level"]

#: The on-policy algorithms of the ready-made levels.
ON_POLICY_ALGORITHMS = ("ppo", "a2c")


def on_policy_head(
    obs_dim: int,
    action_spec: TensorSpec,
    *,
    algorithm: str = "ppo",
    parent_dim: int | None = None,
    hidden: Sequence[int] = (64, 64),
    clip_epsilon: float = 0.2,
    entropy_coeff: float = 0.01,
    critic_coeff: float = 0.5,
    device: torch.device | str | None = None,
) -> tuple[ProbabilisticActor, ValueOperator, LossModule]:
    """A stochastic actor over ``action_spec``, a critic ``V(observation[, parent_action])`` and
    their ``ClipPPOLoss`` (``algorithm="ppo"``, advantages normalised per minibatch) or
    ``A2CLoss`` (``"a2c"``). Returns ``(actor, critic, loss)``; the loss trains the actor the
    level runs. Its value estimator is set by the learner (GAE at the level's gamma)."""
    if algorithm not in ON_POLICY_ALGORITHMS:
        raise ValueError(
            f"algorithm must be one of {list(ON_POLICY_ALGORITHMS)} for an on-policy head, got "
            f"{algorithm!r}."
        )
    if device is not None:
        action_spec = action_spec.to(device)
    in_keys = [OBSERVATION] if parent_dim is None else [OBSERVATION, PARENT_ACTION]
    in_features = obs_dim + (parent_dim or 0)
    if isinstance(action_spec, (OneHot, Categorical)):
        n = action_spec.space.n
        body = TensorDictModule(
            InputNet(mlp(in_features, n, hidden, device)), in_keys=in_keys, out_keys=["logits"]
        )
        dist_keys, kwargs = ["logits"], {}
        dist = OneHotCategorical if isinstance(action_spec, OneHot) else CategoricalDistribution
    elif isinstance(action_spec, Bounded):
        dim = action_spec.shape[-1]
        body = TensorDictModule(
            InputNet(nn.Sequential(mlp(in_features, 2 * dim, hidden, device), NormalParamExtractor())),
            in_keys=in_keys,
            out_keys=["loc", "scale"],
        )
        dist_keys, dist = ["loc", "scale"], TanhNormal
        kwargs = {"low": action_spec.space.low, "high": action_spec.space.high}
    else:
        raise TypeError(
            f"An on-policy level needs a Categorical/OneHot or Bounded action spec, got "
            f"{type(action_spec).__name__}."
        )
    actor = ProbabilisticActor(
        body,
        in_keys=dist_keys,
        spec=action_spec.clone(),
        distribution_class=dist,
        distribution_kwargs=kwargs,
        return_log_prob=True,
        default_interaction_type=InteractionType.RANDOM,
    )
    critic = ValueOperator(InputNet(mlp(in_features, 1, hidden, device)), in_keys=in_keys)
    if algorithm == "ppo":
        loss = ClipPPOLoss(
            actor, critic, clip_epsilon=clip_epsilon, entropy_coeff=entropy_coeff,
            critic_coeff=critic_coeff, loss_critic_type="l2", normalize_advantage=True,
        )
    else:
        loss = A2CLoss(
            actor, critic, entropy_coeff=entropy_coeff, critic_coeff=critic_coeff,
            loss_critic_type="l2",
        )
    return actor, critic, loss


def on_policy_level(
    name: str,
    obs_dim: int,
    action_spec: TensorSpec,
    *,
    algorithm: str = "ppo",
    parent_dim: int | None = None,
    lowest: bool = True,
    hidden: Sequence[int] = (64, 64),
    gamma: float = 0.99,
    clip_epsilon: float = 0.2,
    entropy_coeff: float = 0.01,
    critic_coeff: float = 0.5,
    control: ReturnControlRule | None = None,
    reward: Callable[[LevelStep], Tensor] | None = None,
    obs_map: Callable[[Tensor], Tensor] | None = None,
    obs_shape: tuple[int, ...] | int | None = None,
    device: torch.device | str | None = None,
) -> tuple[Level, LossModule]:
    """A level acting with a stochastic actor trained on-policy (:func:`on_policy_head`).

    Args:
        action_spec: what it emits: the env's (unbatched) action spec for the lowest level,
            an option spec (``option_spec(K)``) above it.
        parent_dim: size of the ``"parent_action"`` it is conditioned on (below the top).
        lowest: True when it emits the env action (its ``Level.action_spec`` is then ``None``).
        control, reward, obs_map, obs_shape, gamma: passed to :class:`~torchrl_hier.Level`.

    Returns ``(level, loss)``; train the loss with ``OnPolicyLearner(loss, level=level)``. A PPO
    level records its choices' ``action_log_prob`` (the ratio's denominator); an A2C level
    records nothing (its loss does not read it).
    """
    actor, _, loss = on_policy_head(
        obs_dim, action_spec, algorithm=algorithm, parent_dim=parent_dim, hidden=hidden,
        clip_epsilon=clip_epsilon, entropy_coeff=entropy_coeff, critic_coeff=critic_coeff,
        device=device,
    )
    records = (loss.tensor_keys.sample_log_prob,) if algorithm == "ppo" else ()
    level = Level(
        name,
        actor,
        action_spec=None if lowest else action_spec,
        obs_map=obs_map,
        obs_shape=obs_shape,
        reward=reward,
        gamma=gamma,
        records=records,
        **({} if control is None else {"control": control}),
    )
    return level, loss
