"""Random and constant levels, for tests and baselines."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import TensorSpec

from torchrl_hier.control import Always, ReturnControlRule
from torchrl_hier.level import ACTION, OBSERVATION, Level

__all__ = ["SpecRandomPolicy", "ConstantPolicy", "random_level", "constant_level"]


class SpecRandomPolicy(TensorDictModuleBase):
    """Samples ``"action"`` uniformly from an unbatched spec, for every instance of the batch.

    Draws from torch's global generator, so ``torch.manual_seed`` makes it reproducible.
    """

    def __init__(self, spec: TensorSpec):
        super().__init__()
        self.spec = spec
        self.in_keys = [OBSERVATION]
        self.out_keys = [ACTION]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = self.spec.rand(tensordict.batch_size)
        return tensordict.set(ACTION, action.to(tensordict.device or action.device))


class ConstantPolicy(TensorDictModuleBase):
    """Writes the same ``"action"`` for every instance."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", torch.as_tensor(value))
        self.in_keys = [OBSERVATION]
        self.out_keys = [ACTION]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = self.value.expand(*tensordict.batch_size, *self.value.shape)
        return tensordict.set(ACTION, action.clone())


def random_level(
    name: str,
    action_spec: TensorSpec,
    control: ReturnControlRule | None = None,
    lowest: bool = False,
    **kwargs,
) -> Level:
    """A level acting uniformly at random in ``action_spec`` (the env's, for the lowest)."""
    return Level(
        name,
        SpecRandomPolicy(action_spec),
        action_spec=None if lowest else action_spec,
        control=control or Always(),
        **kwargs,
    )


def constant_level(
    name: str, value: torch.Tensor, action_spec: TensorSpec | None = None, **kwargs
) -> Level:
    """A level that always emits ``value``."""
    return Level(name, ConstantPolicy(value), action_spec=action_spec, **kwargs)
