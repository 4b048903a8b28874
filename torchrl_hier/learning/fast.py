"""The cheap parts of a gradient step: replay sampling and soft target updates without
TorchRL's per-call overhead, with the same results as the stock classes.

On a small MLP a ``LevelLearner`` step is dominated by Python overhead, not arithmetic:
``ReplayBuffer.sample`` goes through locks, an info dict, a slice of the storage and an
``index`` entry (~0.3 ms per call here), and ``SoftUpdate.step`` walks the loss's parameter
TensorDicts (~0.4 ms). :func:`direct_storage` and :class:`FusedSoftUpdate` do the same work
in one indexing op and one ``torch._foreach_lerp_``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase, is_tensor_collection
from torchrl.data import LazyTensorStorage, RandomSampler, ReplayBuffer, TensorDictReplayBuffer
from torchrl.data.replay_buffers.storages import TensorStorage
from torchrl.objectives import SoftUpdate

__all__ = ["FusedSoftUpdate", "direct_storage", "make_sampler"]


def direct_storage(buffer: ReplayBuffer) -> TensorStorage | None:
    """The buffer's storage if a batch can be read from it directly, else ``None``.

    That is the case for a plain ``ReplayBuffer``/``TensorDictReplayBuffer`` (no subclass such
    as a prioritized or HER buffer) over a 1-D ``TensorStorage``/``LazyTensorStorage`` of
    TensorDicts, with the uniform ``RandomSampler`` and no transform, collate function,
    sample unit, prefetching or memory pinning: then ``buffer.sample(n)`` is exactly
    ``storage[sampler indices]`` plus an ``index`` entry that no loss reads.
    """
    if type(buffer) not in (ReplayBuffer, TensorDictReplayBuffer):
        return None
    storage = getattr(buffer, "_storage", None)
    plain = (
        type(storage) in (TensorStorage, LazyTensorStorage)
        and type(buffer._sampler) is RandomSampler
        and (buffer._transform is None or len(buffer._transform) == 0)
        and buffer._init_collate_fn is None
        and buffer._sample_unit is None
        and not buffer._prefetch_cap
        and not buffer._pin_memory
        and not getattr(storage, "shared_init", False)
    )
    if not plain or not storage.initialized or storage.ndim != 1:
        return None
    if not is_tensor_collection(storage._storage):
        return None
    return storage


def make_sampler(buffer: ReplayBuffer, batch_size: int) -> Callable[[], TensorDictBase]:
    """A function drawing one batch of ``batch_size`` transitions from ``buffer``.

    Where :func:`direct_storage` allows it, the batch is the storage indexed with the
    buffer's own sampler's indices (same random stream, same rows as ``buffer.sample``);
    otherwise it is ``buffer.sample(batch_size)``.
    """
    storage = direct_storage(buffer)
    if storage is None:
        return lambda: buffer.sample(batch_size)
    sampler, rows = buffer._sampler, storage._storage

    def sample() -> TensorDictBase:
        index, _ = sampler.sample(storage, batch_size)
        return rows[index]

    return sample


class FusedSoftUpdate:
    """``SoftUpdate.step`` as one ``torch._foreach_lerp_`` over all target parameters.

    Same update, in the same floating-point operations, as the ``SoftUpdate`` it is built
    from (``target.lerp_(online, 1 - eps)`` per tensor), without walking TensorDicts on every
    step. Build it once per burst of gradient steps: it holds the tensors of that moment, and
    ``loss.to(...)`` or a lazy parameter's initialisation would replace them.
    """

    def __init__(self, updater: SoftUpdate):
        if type(updater) is not SoftUpdate:
            raise TypeError(
                f"FusedSoftUpdate reproduces torchrl.objectives.SoftUpdate exactly; got "
                f"{type(updater).__name__}, whose step may differ. Call its own step()."
            )
        if not updater.initialized:
            raise RuntimeError("The SoftUpdate is not initialized (call its init_()).")
        loss = updater.loss_module
        for name in updater._target_names:
            getattr(loss, name)  # what SoftUpdate.step does first: initialises lazy targets
        sources, targets = updater._sources, updater._targets
        self.sources: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        for key, source in sources.items(include_nested=True, leaves_only=True):
            key = (key,) if isinstance(key, str) else key
            target = targets.get(("target_" + key[0], *key[1:]))
            if target.requires_grad:
                raise RuntimeError(f"The target parameter {key} is part of a graph.")
            self.sources.append(source.data)
            self.targets.append(target.data)
        self.weight = 1 - updater.eps  # SoftUpdate's own weight, bit for bit

    @torch.no_grad()
    def step(self) -> None:
        """``target <- target + (1 - eps) * (online - target)`` for every target tensor."""
        torch._foreach_lerp_(self.targets, self.sources, self.weight)
