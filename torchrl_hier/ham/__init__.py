"""Hierarchies of Abstract Machines (Parr & Russell, 1997) that run inside TorchRL collectors.

Machines are Python functions registered on a :class:`HAM`; the HAM runs as a TorchRL policy
(:attr:`HAM.policy`) plus an env transform (:attr:`HAM.transform`), so ``env.rollout``,
``Collector`` (formerly ``SyncDataCollector``) and ``MultiSyncCollector`` (formerly
``MultiSyncDataCollector``; take it from :mod:`torchrl_hier.collectors` to get a machine's
exception in the main process) run it, and :meth:`HAM.transitions` gives each choice point's
semi-MDP transitions for ``torchrl.objectives`` losses. :class:`HAMChoiceEnv` /
:class:`HAMGymEnv` expose "one step = one choice" to flat learners.
"""

from torchrl_hier.ham.choice_env import HAMChoiceEnv, HAMGymEnv
from torchrl_hier.ham.ham import HAM
from torchrl_hier.ham.machines import (
    ChoicePoint,
    HAMError,
    HAMTimeoutError,
    Machine,
    MachineContext,
)
from torchrl_hier.ham.policy import HAMPolicy
from torchrl_hier.ham.transform import HAMTransform
from torchrl_hier.ham.transitions import ham_transitions

__all__ = [
    "HAM",
    "HAMChoiceEnv",
    "HAMError",
    "HAMGymEnv",
    "HAMPolicy",
    "HAMTimeoutError",
    "HAMTransform",
    "ChoicePoint",
    "Machine",
    "MachineContext",
    "ham_transitions",
]
