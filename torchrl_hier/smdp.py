"""The semi-MDP accumulator: one home for the discounted return and τ of running transitions.

Every decision maker of a hierarchy (a level of a stack, a choice point of a HAM) accumulates,
per env instance, the reward of its running transition, ``R = sum_k gamma**k r_k``, and its
duration τ (env steps), and restarts both when it makes a new choice. Level stacks
(:class:`~torchrl_hier.hierarchy.HierarchyTransform`) and HAMs
(:class:`~torchrl_hier.ham.transform.HAMTransform`) both carry these as two stacked tensors of
shape ``[*batch, n_decision_makers]`` and update them with :func:`accumulate`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchrl.data import Unbounded

__all__ = ["STEPS", "RETURN", "accumulator_specs", "accumulate", "masked_where"]

#: Entry names of the accumulators inside a hierarchy's or a HAM's state.
STEPS = "steps"
RETURN = "return"


def accumulator_specs(
    batch_size: tuple[int, ...] | torch.Size, n: int, reward_dtype: torch.dtype
) -> dict[str, Unbounded]:
    """Specs of τ (int64) and the discounted return for ``n`` decision makers; both start at 0."""
    shape = (*batch_size, n)
    return {
        STEPS: Unbounded(shape, dtype=torch.int64),
        RETURN: Unbounded(shape, dtype=reward_dtype),
    }


def accumulate(
    steps: Tensor,
    returns: Tensor,
    reward: Tensor,
    gammas: Tensor,
    restart: Tensor,
    active: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One env step of every running transition: restart where ``restart``, then add the step.

    Args:
        steps: τ so far, ``[*B, n]`` int64.
        returns: ``sum_k gamma**k r_k`` so far, ``[*B, n]``.
        reward: this step's reward per decision maker, ``[*B, n]`` (or ``[*B, 1]``, shared).
        gammas: the discounts, ``[n]``, on the device of ``steps``.
        restart: ``[*B, n]`` bool: a new transition starts with this step (a new choice).
        active: ``[*B, n]`` bool, or ``None`` for all: where no transition runs, τ and the
            return are 0.

    Returns ``(steps, returns)`` after the step, in the dtype of ``returns``.
    """
    before = steps.masked_fill(restart, 0)
    discount = gammas.pow(before)
    steps = before + 1
    if discount.dtype != reward.dtype:
        discount = discount.to(reward.dtype)
    new_returns = torch.addcmul(returns.masked_fill(restart, 0), discount, reward)
    returns = new_returns if new_returns.dtype == returns.dtype else new_returns.to(returns.dtype)
    if active is not None:
        idle = ~active
        steps, returns = steps.masked_fill(idle, 0), returns.masked_fill(idle, 0)
    return steps, returns


def masked_where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """``torch.where`` with a batch mask broadcast over the trailing dims of ``new``."""
    extra = new.ndim - mask.ndim
    if extra:
        mask = mask.reshape(mask.shape + (1,) * extra)
    return torch.where(mask, new, old)
