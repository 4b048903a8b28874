"""The HAM's env transform: per choice point, accumulates reward and τ between choices
(with the semi-MDP accumulator of :mod:`torchrl_hier.smdp`, shared with level stacks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.data import Binary, Categorical, Composite, Unbounded
from torchrl.envs import Transform

from torchrl_hier._carried import CarriedState
from torchrl_hier.collectors import reports_worker_errors
from torchrl_hier.ham import _keys as K
from torchrl_hier.smdp import RETURN, STEPS, accumulate, accumulator_specs, masked_where

if TYPE_CHECKING:
    from torchrl_hier.ham.ham import HAM

__all__ = ["HAMTransform"]


class HAMTransform(Transform):
    """After each env step, and batched over instances: for every choice point, restarts its
    discounted return and τ where the policy made a choice of it in this step, adds the step's
    reward (times ``gamma**k``), and remembers the joint state and choice of its last choice.

    All of it is carried as TensorDict entries (declared in the observation spec, initialised
    on reset), so collectors keep them; ``("ham", "restart")`` tells the policy which
    instances' episodes were just reset.
    """

    def __init__(self, ham: HAM):
        super().__init__(in_keys=[], out_keys=[])
        self.ham = ham
        self.points = list(ham.choice_points.values())
        self.register_buffer(
            "gammas", torch.tensor([p.gamma for p in self.points], dtype=torch.float64)
        )
        # At an episode start the policy restarts the machines of every instance.
        self.carried = CarriedState(
            K.STATE, self.state_spec, lambda state: state.get("restart").fill_(True)
        )

    def state_spec(self, batch_size: torch.Size, device) -> Composite:
        """Spec of the ``"ham"`` entries for an env of batch shape ``batch_size``."""
        ham, b = self.ham, tuple(batch_size)
        c = len(self.points)
        per_point = {}
        for point in self.points:
            shape, dtype = point.mapped_observation
            entry = {
                K.OBSERVATION: Unbounded((*b, *shape), dtype=dtype),
                K.STACK: Unbounded((*b, ham.max_depth), dtype=torch.int64),
                K.CHOICE: Unbounded((*b, *point.spec.shape), dtype=point.spec.dtype),
                K.N: Unbounded(b, dtype=torch.int64),
            }
            if point.args_spec is not None:
                entry[K.ARGS] = Unbounded((*b, *point.args_spec.shape), dtype=point.args_spec.dtype)
            per_point[point.name] = Composite(entry, shape=b)
        return Composite(
            {
                "restart": Categorical(2, b, dtype=torch.bool),
                **accumulator_specs(b, c, self.ham.reward_dtype),
                "pending": Binary(c, (*b, c), dtype=torch.bool) if c else Unbounded((*b, 0), dtype=torch.bool),
                **per_point,
            },
            shape=b,
            device=device,
        )

    def initial_state(self, batch_size: torch.Size, device) -> TensorDictBase:
        """The ``"ham"`` entries at the start of an episode (a fresh copy)."""
        return self.carried.initial(batch_size, device)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        return self.carried.declare(observation_spec)

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return self.carried.reset(tensordict_reset)

    @reports_worker_errors
    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        ham = self.ham
        state = tensordict.get(K.STATE, None)
        if state is None:
            raise KeyError(
                f"The HAM state {K.STATE!r} is missing from the TensorDict; was the env reset "
                "through this transform?"
            )
        batch = tensordict.batch_size
        nb = len(batch)
        reward = next_tensordict.get(ham.reward_key).reshape(*batch, 1)
        counts = [state.get((p.name, K.N), None) for p in self.points]
        zeros = torch.zeros(batch, dtype=torch.int64, device=reward.device)
        counts = [zeros if n is None else n for n in counts]
        if counts:
            chose = torch.stack(counts, -1) > 0
        else:
            chose = torch.zeros(*batch, 0, dtype=torch.bool, device=reward.device)
        pending = state.get("pending") | chose
        steps, returns = accumulate(
            state.get(STEPS), state.get(RETURN), reward, self.gammas.to(reward.device), restart=chose,
            active=pending,
        )
        observation = tensordict.get(ham.observation_key)
        per_point = {}
        for i, point in enumerate(self.points):
            carried = state.get(point.name)
            count = counts[i]
            made = count > 0
            last = (count - 1).clamp_min(0)
            entry = {
                K.OBSERVATION: masked_where(
                    made, point.map_observation(observation), carried.get(K.OBSERVATION)
                ),
                K.N: torch.zeros_like(count),
            }
            for leaf, event in ((K.STACK, K.EVENT_STACK), (K.CHOICE, K.EVENT_CHOICE), (K.ARGS, K.EVENT_ARGS)):
                if leaf == K.ARGS and point.args_spec is None:
                    continue
                old = carried.get(leaf)
                events = state.get((point.name, event), None)
                entry[leaf] = old if events is None else masked_where(made, _at_slot(events, last, nb), old)
            per_point[point.name] = TensorDict(entry, batch_size=batch)
        next_tensordict.set(
            K.STATE,
            TensorDict(
                {
                    "restart": torch.zeros(batch, dtype=torch.bool, device=reward.device),
                    STEPS: steps,
                    RETURN: returns,
                    "pending": pending,
                    **per_point,
                },
                batch_size=batch,
                device=next_tensordict.device,
            ),
        )
        return next_tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise RuntimeError(
            "HAMTransform works inside an env (TransformedEnv(env, ham.transform)); it has no "
            "meaning on replay-buffer data. Use ham.transitions(batch)."
        )


def _at_slot(events: Tensor, slot: Tensor, nb: int) -> Tensor:
    """``events[..., slot, ...]`` per instance: events is ``[*B, K, *rest]``, slot ``[*B]``."""
    rest = events.shape[nb + 1:]
    index = slot.reshape(*slot.shape, 1, *([1] * len(rest))).expand(*slot.shape, 1, *rest)
    return torch.gather(events, nb, index).squeeze(nb)
