"""The HAM as a TorchRL policy: advances the machines to the next primitive action."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.data import Composite, Unbounded

from torchrl_hier.collectors import reports_worker_errors
from torchrl_hier.ham import _keys as K
from torchrl_hier.ham.machines import HAMError
from torchrl_hier.ham.runtime import MachineRuntime

if TYPE_CHECKING:
    from torchrl_hier.ham.ham import HAM

__all__ = ["HAMPolicy"]


class HAMPolicy(TensorDictModuleBase):
    """Reads the observation and ``("ham", "restart")``; writes the env action and, per choice
    point, the choices made in this step (``("ham", name, "n"|"event_stack"|"event_choice"|
    "event_args")``), which the transform and :meth:`HAM.transitions` read.

    The machine state (one generator stack per env instance) lives here, in Python: a policy
    serves one env. Copies (pickling to collector workers, ``deepcopy``) start with fresh
    machines, which is right since each worker owns its envs and resets them first. The choice
    modules are submodules, so collectors' weight updates reach them. Explore inside the choice
    modules (e.g. an ``EGreedyModule`` after a ``QValueActor``), not with a collector's
    ``init_random_frames``: random env actions bypass the machines.
    """

    def __init__(self, ham: HAM):
        super().__init__()
        self.ham = ham
        self.choice_modules = nn.ModuleDict(
            {name: point.policy for name, point in ham.choice_points.items()}
        )
        events = []
        for name, point in ham.choice_points.items():
            events += [K.point_key(name, K.N), K.point_key(name, K.EVENT_STACK), K.point_key(name, K.EVENT_CHOICE)]
            if point.args_spec is not None:
                events.append(K.point_key(name, K.EVENT_ARGS))
        self.in_keys = [ham.observation_key, K.RESTART]
        self.out_keys = [ham.action_key, *events]
        self._runtime: MachineRuntime | None = None

    @property
    def spec(self) -> Composite:
        """Unbatched spec of everything the policy writes (collectors read it)."""
        ham = self.ham
        k, depth = ham.max_choices_per_step, ham.max_depth
        spec = Composite({ham.action_key: ham.action_spec.clone()})
        for name, point in ham.choice_points.items():
            spec[K.point_key(name, K.N)] = Unbounded((), dtype=torch.int64)
            spec[K.point_key(name, K.EVENT_STACK)] = Unbounded((k, depth), dtype=torch.int64)
            spec[K.point_key(name, K.EVENT_CHOICE)] = Unbounded(
                (k, *point.spec.shape), dtype=point.spec.dtype
            )
            if point.args_spec is not None:
                spec[K.point_key(name, K.EVENT_ARGS)] = Unbounded(
                    (k, *point.args_spec.shape), dtype=point.args_spec.dtype
                )
        return spec

    @reports_worker_errors
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        ham = self.ham
        restart = tensordict.get(K.RESTART, None)
        if restart is None:
            raise KeyError(
                f"The HAM state {K.RESTART!r} is not in the TensorDict: run the HAM policy in "
                "an env that carries it, TransformedEnv(env, ham.transform)."
            )
        batch = tensordict.batch_size
        n = batch.numel()
        observation = tensordict.get(ham.observation_key)
        observation = observation.reshape(n, *observation.shape[len(batch):])
        restart_list = restart.reshape(n).tolist()
        runtime = self._runtime
        if runtime is None or runtime.n != n:
            if runtime is not None and not all(restart_list):
                raise HAMError(
                    f"This HAM policy runs machines for {runtime.n} env instances but got a batch "
                    f"of {n} mid-episode. Use one policy per env (ham.make_policy()), or reset "
                    "the env first."
                )
            if runtime is not None:
                runtime.close()
            runtime = self._runtime = MachineRuntime(ham, n)
        out = runtime.step(observation, restart_list)
        tensordict.set(ham.action_key, out.action.reshape(*batch, *out.action.shape[1:]))
        for name, entry in out.events.items():
            for leaf, value in entry.items():
                tensordict.set(K.point_key(name, leaf), value.reshape(*batch, *value.shape[1:]))
        return tensordict

    def reset_machines(self) -> None:
        """Drops the machine state; the next call starts every instance from the root."""
        if self._runtime is not None:
            self._runtime.close()
        self._runtime = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_runtime"] = None
        return state
