"""HAM: the registry of machines over an env, and the entry point to its policy and transform."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor
from torchrl.data import TensorSpec
from torchrl.envs import EnvBase

from torchrl_hier.ham import _keys as K
from torchrl_hier.ham.machines import (
    ACTION,
    CHOICE,
    FUNCTIONAL,
    ChoicePoint,
    HAMError,
    Machine,
)

__all__ = ["HAM"]


class HAM:
    """A Hierarchy of Abstract Machines over a TorchRL env (Parr & Russell, 1997).

    Register machines with the decorators, pick the root, then run :attr:`policy` in
    ``TransformedEnv(env, ham.transform)`` with ``env.rollout``, ``Collector`` (formerly
    ``SyncDataCollector``) or ``MultiSyncCollector`` (formerly ``MultiSyncDataCollector``), and
    feed :meth:`transitions` to per-choice-point learners::

        ham = HAM(env)

        @ham.choice_machine(Categorical(3), policy=repetition_module)
        def repetition_choice(ham, args, choice):
            return choice + 1

        @ham.action_machine
        def action_machine(ham, args):
            return args["action"]

        @ham.functional_machine
        def loop_machine(ham, args):
            for i in range(10):
                rep = yield ham.CALL(repetition_choice, i)
                for _ in range(rep):
                    yield ham.CALL(action_machine, {"action": 1})

        ham.set_root(loop_machine)

    Machine code runs per env instance (it is Python); choices of all instances that reach the
    same choice point in a round are made in one batched module call, and the primitive
    actions go to the env as one batch.

    Args:
        env: the env the machines act in (untransformed); used for its specs and keys only.
        observation_key: the env observation machines and choice modules see.
        max_depth: longest call stack (it is also the length of the stack encoding).
        max_choices_per_step: most choices of one choice point an instance may make between
            two primitive actions.
        max_machine_steps: most machine operations (calls, returns, yields) an instance may
            run between two actions or choices before it counts as stuck.
        time_limit: seconds machine code may run in one policy call before it is stopped
            (``None``: no limit; enforced with ``SIGALRM`` in the main thread).
        on_root_return: ``"restart"`` runs the root machine again when it returns before the
            episode ends; ``"error"`` raises.
    """

    def __init__(
        self,
        env: EnvBase,
        *,
        observation_key="observation",
        max_depth: int = 8,
        max_choices_per_step: int = 4,
        max_machine_steps: int = 10_000,
        time_limit: float | None = 30.0,
        on_root_return: str = "restart",
    ):
        if not isinstance(env, EnvBase):
            raise TypeError(
                f"HAM needs a TorchRL EnvBase (wrap gymnasium envs with GymWrapper/GymEnv), got "
                f"{type(env).__name__}."
            )
        if on_root_return not in ("restart", "error"):
            raise ValueError(f"on_root_return must be 'restart' or 'error', got {on_root_return!r}.")
        for name, value in (
            ("max_depth", max_depth),
            ("max_choices_per_step", max_choices_per_step),
            ("max_machine_steps", max_machine_steps),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        self.max_depth = max_depth
        self.max_choices_per_step = max_choices_per_step
        self.max_machine_steps = max_machine_steps
        self.time_limit = time_limit
        self.on_root_return = on_root_return
        self.observation_key = observation_key
        self.action_key = env.action_key
        self.reward_key = env.reward_key
        self.done_keys = {name: _done_key(env, name) for name in ("done", "terminated", "truncated")}
        self.action_spec: TensorSpec = env.full_action_spec_unbatched[env.action_key]
        obs_spec = env.full_observation_spec_unbatched.get(observation_key, None)
        if obs_spec is None:
            raise KeyError(
                f"The env has no observation {observation_key!r} (it has "
                f"{list(env.observation_spec.keys(True, True))}); pass observation_key=."
            )
        self.observation_spec: TensorSpec = obs_spec
        self.reward_dtype = env.full_reward_spec[env.reward_key].dtype
        self._machines: dict[str, Machine] = {}
        self._by_fn: dict[Callable, Machine] = {}
        self.choice_points: dict[str, ChoicePoint] = {}
        self.root: Machine | None = None
        self.root_args: Any = None
        self._frozen = False
        self._policy = None

    # ------------------------------------------------------------------ registration
    @property
    def machine_count(self) -> int:
        return len(self._machines)

    @property
    def machines(self) -> dict[str, Machine]:
        return dict(self._machines)

    def action_machine(self, fn: Callable | None = None, *, name: str | None = None):
        """Registers ``fn(ham, args) -> action``; calling it emits that primitive action."""
        return self._decorator(fn, ACTION, name)

    def functional_machine(self, fn: Callable | None = None, *, name: str | None = None):
        """Registers free code ``fn(ham, args)``: a generator function that yields
        ``ham.CALL(...)``/``ham.ACTION(...)`` and returns a value, or a plain function."""
        return self._decorator(fn, FUNCTIONAL, name)

    def choice_machine(
        self,
        spec: TensorSpec,
        policy: TensorDictModuleBase,
        *,
        name: str | None = None,
        gamma: float = 0.99,
        args_spec: TensorSpec | None = None,
        obs_map: Callable[[Tensor], Tensor] | None = None,
    ):
        """Registers a choice point whose choice (in ``spec``) ``policy`` makes.

        Decorates the body ``fn(ham, args, choice) -> value`` that maps the choice to the
        value the caller receives (ints for discrete choices). See :class:`ChoicePoint`.
        """

        def register(fn: Callable) -> Callable:
            self._add_choice(fn, name or fn.__name__, spec, policy, gamma, args_spec, obs_map)
            return fn

        return register

    learnable_choice_machine = choice_machine  # the seed library's name

    def choice_point(
        self,
        name: str,
        spec: TensorSpec,
        policy: TensorDictModuleBase,
        *,
        gamma: float = 0.99,
        args_spec: TensorSpec | None = None,
        obs_map: Callable[[Tensor], Tensor] | None = None,
    ) -> ChoicePoint:
        """Registers a choice point without a body (the caller receives the choice itself)
        and returns it, to use as ``choice = yield ham.CALL(point, args)``."""
        return self._add_choice(None, name, spec, policy, gamma, args_spec, obs_map)

    def set_root(self, machine: Callable | Machine, args: Any = None) -> None:
        """The machine every episode starts (the seed's ``myham.CALL(loop_machine)``)."""
        resolved = self.machine(machine)
        if resolved.kind != FUNCTIONAL:
            raise HAMError(
                f"The root machine must be a functional machine, got the {resolved.kind} machine "
                f"{resolved.name!r}. Call it from a functional root instead."
            )
        self.root, self.root_args = resolved, args

    def machine(self, machine: Callable | Machine) -> Machine:
        """The registered :class:`Machine` of a decorated function (or of a Machine)."""
        if isinstance(machine, Machine):
            if self._machines.get(machine.name) is machine:
                return machine
        else:
            try:
                found = self._by_fn.get(machine)
            except TypeError:
                found = None
            if found is not None:
                return found
        name = getattr(machine, "name", getattr(machine, "__name__", repr(machine)))
        raise HAMError(
            f"{name!r} is not a machine of this HAM. Register it with @ham.action_machine, "
            "@ham.functional_machine or @ham.choice_machine(...) (or ham.choice_point(...))."
        )

    def _decorator(self, fn, kind: str, name: str | None):
        def register(fn: Callable) -> Callable:
            self._add(Machine(name or fn.__name__, kind, fn, 0), fn)
            return fn

        return register if fn is None else register(fn)

    def _add(self, machine: Machine, fn: Callable | None) -> Machine:
        name = machine.name
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"Machine names must be Python identifiers, got {name!r}.")
        if name in self._machines:
            raise ValueError(f"A machine named {name!r} is already registered on this HAM.")
        if fn is not None and not callable(fn):
            raise TypeError(f"Machine {name!r} must be a function, got {type(fn).__name__}.")
        machine.index = len(self._machines) + 1
        self._machines[name] = machine
        if fn is not None:
            self._by_fn[fn] = machine
        return machine

    def _add_choice(self, fn, name, spec, policy, gamma, args_spec, obs_map) -> ChoicePoint:
        if self._frozen:
            raise HAMError(
                f"Choice point {name!r} was registered after the HAM's policy or transform were "
                "built; register every choice point first."
            )
        if name in K.RESERVED:
            raise ValueError(f"{name!r} is reserved for HAM state; name the choice point otherwise.")
        if not isinstance(spec, TensorSpec):
            raise TypeError(f"Choice point {name!r}: spec must be a TensorSpec such as Categorical(3).")
        if not isinstance(policy, TensorDictModuleBase):
            raise TypeError(
                f"Choice point {name!r}: policy must be a TensorDictModule reading "
                f"'observation'/'stack'/'args' and writing 'action', got {type(policy).__name__}."
            )
        if args_spec is not None and not isinstance(args_spec, TensorSpec):
            raise TypeError(f"Choice point {name!r}: args_spec must be a TensorSpec or None.")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"Choice point {name!r}: gamma must be in [0, 1], got {gamma}.")
        point = ChoicePoint(
            name, CHOICE, fn, 0, spec=spec, policy=policy, gamma=gamma,
            args_spec=args_spec, obs_map=obs_map,
        )
        self._add(point, fn)
        try:
            self._check_point(point)
        except Exception:
            del self._machines[name]
            if fn is not None:
                del self._by_fn[fn]
            raise
        self.choice_points[name] = point
        return point

    def _check_point(self, point: ChoicePoint) -> None:
        """Dry-runs the choice module on a spec-shaped joint state of two instances."""
        obs = self.observation_spec.zero((2,))
        try:
            mapped = point.map_observation(obs)
        except Exception as err:
            raise ValueError(
                f"Choice point {point.name!r}: its obs_map failed on an observation of shape "
                f"{tuple(obs.shape)}: {err}"
            ) from err
        if mapped.shape[:1] != (2,):
            raise ValueError(
                f"Choice point {point.name!r}: its obs_map changed the batch dim ({tuple(obs.shape)} "
                f"-> {tuple(mapped.shape)}); maps must act on trailing dims."
            )
        data = {K.OBSERVATION: mapped, K.STACK: torch.zeros(2, self.max_depth, dtype=torch.int64)}
        if point.args_spec is not None:
            data[K.ARGS] = point.args_spec.zero((2,))
        device = next((p.device for p in point.policy.parameters()), None)
        td = TensorDict(data, batch_size=[2]).to(device) if device is not None else TensorDict(data, [2])
        try:
            with torch.no_grad():
                out = point.policy(td)
        except Exception as err:
            raise ValueError(
                f"Choice point {point.name!r}: its module failed on a joint state with "
                f"observation {tuple(mapped.shape[1:])}, stack ({self.max_depth},)"
                + (f", args {tuple(point.args_spec.shape)}" if point.args_spec is not None else "")
                + f": {err}. Fix its in_keys (it may read 'observation', 'stack', 'args') or sizes."
            ) from err
        choice = out.get(K.ACTION, None)
        if choice is None:
            raise ValueError(
                f"Choice point {point.name!r}: its module did not write 'action' (it wrote "
                f"{sorted(map(str, out.keys(True, True)))})."
            )
        if tuple(choice.shape[1:]) != tuple(point.spec.shape) or choice.dtype != point.spec.dtype:
            raise ValueError(
                f"Choice point {point.name!r}: its module wrote choices of shape "
                f"{tuple(choice.shape[1:])} and dtype {choice.dtype}, but its spec has shape "
                f"{tuple(point.spec.shape)} and dtype {point.spec.dtype}."
            )
        point.mapped_observation = (tuple(mapped.shape[1:]), mapped.dtype)

    # ------------------------------------------------------------------ running
    def _freeze(self) -> None:
        if self.root is None:
            raise HAMError("The HAM has no root machine: call ham.set_root(machine) first.")
        self._frozen = True

    @property
    def policy(self):
        """The HAM as a TorchRL policy (one shared instance; see :meth:`make_policy`)."""
        if self._policy is None:
            self._policy = self.make_policy()
        return self._policy

    def make_policy(self):
        """A new policy over the same choice modules, with its own machine state (use one per
        env, e.g. a separate one for an evaluation env)."""
        from torchrl_hier.ham.policy import HAMPolicy

        self._freeze()
        return HAMPolicy(self)

    @property
    def transform(self):
        """The env transform carrying the HAM state (a new one each access)."""
        from torchrl_hier.ham.transform import HAMTransform

        self._freeze()
        return HAMTransform(self)

    def transitions(self, batch: TensorDictBase) -> dict[str, TensorDict]:
        """Each choice point's completed semi-MDP transitions in ``batch``, keyed by name."""
        from torchrl_hier.ham.transitions import ham_transitions

        return ham_transitions(batch, self)

    def choice_env(self, env: EnvBase, choice: str | None = None):
        """``env`` (unbatched) as an env whose step is one choice of ``choice``."""
        from torchrl_hier.ham.choice_env import HAMChoiceEnv

        return HAMChoiceEnv(self, env, choice=choice)

    def gym_env(self, env, choice: str | None = None):
        """Like :meth:`choice_env`, as a ``gymnasium.Env``."""
        from torchrl_hier.ham.choice_env import HAMGymEnv

        return HAMGymEnv(self, env, choice=choice)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{m.name}:{m.kind}" for m in self._machines.values())
        root = self.root.name if self.root is not None else None
        return f"HAM(root={root!r}, machines=[{kinds}])"


def _done_key(env: EnvBase, name: str):
    for key in env.done_keys:
        if (key if isinstance(key, str) else key[-1]) == name:
            return key
    return name
