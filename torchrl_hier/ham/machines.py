"""Machines of a HAM and the requests they yield.

A machine is a plain Python function ``fn(ham, args)`` registered on a :class:`~torchrl_hier.ham.HAM`
as one of three kinds (Parr & Russell's CALL and STOP are ``ham.CALL`` and ``return``):

- ACTION: returns a primitive action; calling it sends that action to the env.
- CHOICE: a named, typed choice point. A learnable ``TensorDictModule`` picks the choice from
  the joint state (observation + machine stack [+ the call's args]); the optional body
  ``fn(ham, args, choice)`` turns the choice into the value the caller receives.
- FUNCTIONAL: free code. A generator function runs other machines with
  ``result = yield ham.CALL(machine, args)`` and emits actions with ``yield ham.ACTION(a)``;
  its ``return`` value goes to the caller. A plain function just returns a value.

``ham`` in a machine is a :class:`MachineContext`: the running env instance's view of the HAM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tensordict.nn import TensorDictModuleBase
from torch import Tensor
from torchrl.data import TensorSpec

__all__ = [
    "ACTION",
    "CHOICE",
    "FUNCTIONAL",
    "HAMError",
    "HAMTimeoutError",
    "Machine",
    "ChoicePoint",
    "Call",
    "Act",
    "MachineContext",
]

ACTION = "action"
CHOICE = "choice"
FUNCTIONAL = "functional"


class HAMError(RuntimeError):
    """A machine broke a rule of the HAM (the message names the machine and how to fix it)."""


class HAMTimeoutError(HAMError):
    """Machine code ran longer than the HAM's ``time_limit`` within one policy call."""


@dataclass(eq=False)
class Machine:
    """A registered machine. ``index`` (1-based) is its id in the machine-stack encoding."""

    name: str
    kind: str
    fn: Callable[..., Any] | None
    index: int

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, kind={self.kind!r})"


@dataclass(eq=False, repr=False)
class ChoicePoint(Machine):
    """A CHOICE machine: its choice spec, the module deciding it and its SMDP discount.

    ``policy`` reads ``"observation"`` (the env observation through ``obs_map``), ``"stack"``
    (int64 ``[max_depth]``: ids of the machines on the call stack, root first, this choice
    point last, zero-padded) and, when ``args_spec`` is given, ``"args"`` (the call's args as a
    tensor); it writes ``"action"`` (the choice). ``gamma`` discounts the reward accumulated
    between two consecutive choices of this choice point.
    """

    spec: TensorSpec | None = None
    policy: TensorDictModuleBase | None = None
    gamma: float = 0.99
    args_spec: TensorSpec | None = None
    obs_map: Callable[[Tensor], Tensor] | None = None
    #: (shape, dtype) of the mapped observation per instance; set when registered.
    mapped_observation: tuple | None = None

    def map_observation(self, observation: Tensor) -> Tensor:
        return observation if self.obs_map is None else self.obs_map(observation)


@dataclass(frozen=True, eq=False)
class Call:
    """``yield ham.CALL(machine, args)``: run ``machine`` and receive its value."""

    machine: Machine
    args: Any = None


@dataclass(frozen=True, eq=False)
class Act:
    """``yield ham.ACTION(action)``: emit a primitive action (the seed's ``CALL_action``)."""

    action: Any


class MachineContext:
    """What a machine's ``ham`` argument is: one env instance's view of the running HAM.

    ``observation`` is the instance's current env observation (a CPU tensor), ``index`` its
    position in the env batch, ``stack`` the names of the machines on its call stack.
    """

    __slots__ = ("ham", "index", "_observations", "_frames", "_made")

    def __init__(self, ham, index: int):
        self.ham = ham
        self.index = index
        self._observations: Tensor | None = None
        self._frames: list = []
        self._made: Call | Act | None = None

    @property
    def observation(self) -> Tensor:
        return self._observations[self.index]

    @property
    def stack(self) -> tuple[str, ...]:
        return tuple(frame.machine.name for frame in self._frames)

    @property
    def machine_count(self) -> int:
        return self.ham.machine_count

    def CALL(self, machine: Callable | Machine, args: Any = None) -> Call:  # noqa: N802 (HAM name)
        """A request to run ``machine`` with ``args``; ``yield`` it to get the machine's value."""
        request = Call(self.ham.machine(machine), args)
        self._made = request
        return request

    def CHOICE(self, machine: Callable | Machine, args: Any = None) -> Call:  # noqa: N802
        """Same as :meth:`CALL`, for a choice machine (checked)."""
        resolved = self.ham.machine(machine)
        if resolved.kind != CHOICE:
            raise HAMError(
                f"ham.CHOICE({resolved.name!r}): {resolved.name!r} is a {resolved.kind} machine, "
                "not a choice machine. Use ham.CALL for it."
            )
        return self.CALL(resolved, args)

    def ACTION(self, action: Any) -> Act:  # noqa: N802
        """A request to emit the primitive ``action``; ``yield`` it."""
        request = Act(action)
        self._made = request
        return request
