"""State that an env transform carries per instance as TensorDict entries under one key.

Level stacks (:class:`~torchrl_hier.hierarchy.HierarchyTransform`) and HAMs
(:class:`~torchrl_hier.ham.transform.HAMTransform`) both carry their semi-MDP accumulators and
pending choices this way: declared in the observation spec (so collectors and ``step_mdp``
keep the entries), set to their initial value on reset, and kept for the instances that are
not being reset by ``EnvBase.reset`` itself (which merges a partial reset's output into the
previous TensorDict entry by entry, after all transforms ran).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase
from torchrl.data import Composite

__all__ = ["CarriedState"]

SpecFactory = Callable[[torch.Size, "torch.device | None"], Composite]


class CarriedState:
    """The spec, initial value and reset of one transform's carried state.

    Args:
        key: the entry of the env TensorDict that holds the state.
        spec: ``(batch_size, device) -> Composite`` of the state's entries.
        initialise: sets the non-zero initial entries of a zero state, in place.
    """

    def __init__(
        self, key: str, spec: SpecFactory, initialise: Callable[[TensorDictBase], None]
    ):
        self.key = key
        self.spec = spec
        self._initialise = initialise
        self._initial: TensorDictBase | None = None

    def initial(self, batch_size: torch.Size, device: torch.device | None) -> TensorDictBase:
        """The state at the start of an episode, for every instance (a fresh copy)."""
        cached = self._initial
        if cached is None or cached.batch_size != batch_size or cached.device != device:
            cached = self.spec(batch_size, device).zero()
            self._initialise(cached)
            self._initial = cached
        return cached.clone()

    def declare(self, spec: Composite) -> Composite:
        """Adds the state's spec to an observation (or full state) spec."""
        spec[self.key] = self.spec(spec.shape, spec.device)
        return spec

    def reset(self, tensordict_reset: TensorDictBase) -> TensorDictBase:
        """Writes the initial state into a reset's output; on a partial reset the env keeps
        the previous entries of the other instances, as it does for observations."""
        tensordict_reset.set(
            self.key, self.initial(tensordict_reset.batch_size, tensordict_reset.device)
        )
        return tensordict_reset
