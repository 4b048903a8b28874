"""Runs every env instance's machines up to its next primitive action, batching the choices.

Machine code is user-written Python, so advancing it is inherently per instance: each instance
keeps a stack of generator frames (its machine stack). Everything else is batched: one call of a
choice point's module per round for all instances waiting at that choice point, one tensor of
primitive actions per step, one validity check per round. The runtime also records, per choice
point, the choices made in this step (the "events" the transform and the transition extraction
read).
"""

from __future__ import annotations

import inspect
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor
from torchrl.data import Categorical, OneHot, TensorSpec

from torchrl_hier.ham import _keys as K
from torchrl_hier.ham.machines import (
    ACTION,
    CHOICE,
    Act,
    Call,
    ChoicePoint,
    HAMError,
    HAMTimeoutError,
    Machine,
    MachineContext,
)

if TYPE_CHECKING:
    from torchrl_hier.ham.ham import HAM

__all__ = ["MachineRuntime", "StepOutput"]


class _Frame:
    __slots__ = ("machine", "gen")

    def __init__(self, machine: Machine, gen: Iterator):
        self.machine = machine
        self.gen = gen


class _Instance:
    """One env instance's machine state."""

    __slots__ = ("ctx", "send", "started", "waiting")

    def __init__(self, ham: HAM, index: int):
        self.ctx = MachineContext(ham, index)
        self.send: Any = None
        self.started = False
        # (choice point, args, stack ids) while waiting for an external choice
        self.waiting: tuple[ChoicePoint, Any, list[int]] | None = None


@dataclass
class StepOutput:
    """What one :meth:`MachineRuntime.step` produced.

    ``action``: ``[N, *action_shape]`` on the observation's device (rows of instances that
    wait for an external choice hold zeros). ``events``: per choice point name, ``n``
    (choices made this step, int64 ``[N]``), ``event_stack`` ``[N, K, max_depth]``,
    ``event_choice`` ``[N, K, *choice_shape]`` and, with an args spec, ``event_args``.
    ``waiting``: per instance, whether it waits for an external choice.
    """

    action: Tensor
    events: dict[str, dict[str, Tensor]]
    waiting: list[bool]


_ACT, _CHOOSE = 0, 1


class MachineRuntime:
    """The machine state of ``n`` env instances and the loop that advances it.

    Args:
        ham: the HAM (machines, root, limits, specs).
        n: number of env instances.
        external: a choice point whose choices are not made by its module but given from
            outside with :meth:`choose` (used by the one-choice-per-step env wrapper).
        record_events: whether to write the per-step choice events.
    """

    def __init__(
        self,
        ham: HAM,
        n: int,
        *,
        external: ChoicePoint | None = None,
        record_events: bool = True,
    ):
        self.ham = ham
        self.n = n
        self.external = external
        self.record_events = record_events
        self.instances = [_Instance(ham, b) for b in range(n)]
        self.failed = False
        self._running: tuple[int, str] | None = None
        self._expanded: dict[tuple[int, int], TensorSpec] = {}

    # ------------------------------------------------------------------ public API
    def step(self, observation: Tensor, restart: list[bool] | None) -> StepOutput:
        """Advances every instance that does not wait for an external choice to its next
        primitive action. ``observation`` is ``[n, *obs_shape]``; ``restart[b]`` restarts
        instance ``b``'s machines from the root (its episode was reset)."""
        if observation.shape[0] != self.n:
            raise ValueError(
                f"The HAM runs machines for {self.n} env instances but got an observation "
                f"batch of {observation.shape[0]}."
            )
        if self.failed:
            if restart is None or not all(restart):
                raise HAMError(
                    "The HAM's machines stopped on an error in an earlier step; reset the env "
                    "(all instances) to restart them."
                )
            self.failed = False
        try:
            return self._step(observation, restart)
        except BaseException:
            self.failed = True
            raise

    def choose(self, values: list[Any]) -> None:
        """Resumes the instances waiting at the external choice point with ``values``."""
        for inst, value in zip(self.instances, values):
            if inst.waiting is None:
                continue
            point, args, _ = inst.waiting
            inst.waiting = None
            inst.send = self._body(inst, point, args, value)

    def waiting_state(self, b: int) -> tuple[ChoicePoint, Any, list[int]] | None:
        return self.instances[b].waiting

    def close(self) -> None:
        for inst in self.instances:
            self._restart(inst)

    # ------------------------------------------------------------------ step
    def _step(self, observation: Tensor, restart: list[bool] | None) -> StepOutput:
        ham = self.ham
        device = observation.device
        obs_cpu = observation.detach().cpu()
        instances = self.instances
        for inst in instances:
            inst.ctx._observations = obs_cpu
        if restart is not None:
            for inst, flag in zip(instances, restart):
                if flag:
                    self._restart(inst)
        events = self._new_events(device) if self.record_events else {}
        counts = {point.name: [0] * self.n for point in ham.choice_points.values()}
        actions: list[Any] = [None] * self.n
        emitters: list[Machine | None] = [None] * self.n
        ready = [b for b, inst in enumerate(instances) if inst.waiting is None]
        with self._watchdog():
            while ready:
                waiting: dict[str, list[tuple[int, Any, list[int]]]] = {}
                for b in ready:
                    inst = instances[b]
                    kind, what, arg = self._drive(inst)
                    if kind == _ACT:
                        actions[b], emitters[b] = what, arg
                    else:
                        stack = [frame.machine.index for frame in inst.ctx._frames]
                        stack.append(what.index)
                        waiting.setdefault(what.name, []).append((b, arg, stack))
                ready = []
                for name, items in waiting.items():
                    point = ham.choice_points[name]
                    if point is self.external:
                        for b, args, stack in items:
                            instances[b].waiting = (point, args, stack)
                        continue
                    values = self._decide(point, items, observation, events, counts[name])
                    for (b, args, _), value in zip(items, values):
                        instances[b].send = self._body(instances[b], point, args, value)
                        ready.append(b)
                ready.sort()
        is_waiting = [inst.waiting is not None for inst in instances]
        action = self._assemble(actions, emitters, is_waiting, device)
        return StepOutput(action, events, is_waiting)

    def _restart(self, inst: _Instance) -> None:
        frames = inst.ctx._frames
        while frames:
            frame = frames.pop()
            frame.gen.close()
        inst.send = None
        inst.started = False
        inst.waiting = None

    # ------------------------------------------------------------------ machine code
    def _drive(self, inst: _Instance) -> tuple[int, Any, Any]:
        """Runs ``inst``'s machine code until it emits an action or reaches a choice point.

        Returns ``(_ACT, action, emitting machine)`` or ``(_CHOOSE, choice point, args)``.
        """
        ham = self.ham
        ctx = inst.ctx
        frames = ctx._frames
        send, inst.send = inst.send, None
        budget = ham.max_machine_steps
        while True:
            budget -= 1
            if budget < 0:
                top = frames[-1].machine.name if frames else ham.root.name
                raise HAMError(
                    f"Machine {top!r} (env instance {ctx.index}, call stack "
                    f"{_describe_stack(frames)}) ran {ham.max_machine_steps} machine steps "
                    "without reaching a choice point or an action. Does a loop never yield "
                    "ham.ACTION(...) or a choice? If this is intended, raise HAM(max_machine_steps=)."
                )
            if not frames:
                if inst.started and ham.on_root_return == "error":
                    raise HAMError(
                        f"The root machine {ham.root.name!r} returned ({send!r}) before the "
                        f"episode of env instance {ctx.index} ended. Loop in the root machine, "
                        "or use HAM(on_root_return='restart')."
                    )
                inst.started = True
                request: Any = Call(ham.root, ham.root_args)
                caller = None
            else:
                frame = frames[-1]
                caller = frame.machine
                ctx._made = None
                self._running = (ctx.index, caller.name)
                try:
                    request = frame.gen.send(send)
                except StopIteration as stop:
                    self._check_unyielded(ctx, caller, returned=True)
                    frames.pop()
                    send = stop.value
                    continue
                except HAMError:
                    raise
                except Exception as err:
                    _annotate(err, caller, ctx)
                    raise
                send = None
                if request is not ctx._made:
                    self._check_request(ctx, caller, request)
                ctx._made = None
            if type(request) is Act:
                return _ACT, request.action, caller
            machine = request.machine
            if machine.kind == ACTION:
                return _ACT, self._call(ctx, machine, request.args), machine
            if len(frames) + 1 > ham.max_depth:
                raise HAMError(
                    f"Machine {machine.name!r} called from {caller.name if caller else 'the root'!r} "
                    f"(env instance {ctx.index}) would make the call stack deeper than "
                    f"max_depth={ham.max_depth} (stack {_describe_stack(frames)}). Unbounded "
                    "recursion? Otherwise raise HAM(max_depth=)."
                )
            if machine.kind == CHOICE:
                return _CHOOSE, machine, request.args
            result = self._call(ctx, machine, request.args)
            if inspect.isgenerator(result):
                frames.append(_Frame(machine, result))
                send = None
            else:
                send = result

    def _call(self, ctx: MachineContext, machine: Machine, args: Any) -> Any:
        """Calls a machine's function (its body for a choice), with error attribution."""
        self._running = (ctx.index, machine.name)
        ctx._made = None
        try:
            result = machine.fn(ctx, args)
        except HAMError:
            raise
        except Exception as err:
            _annotate(err, machine, ctx)
            raise
        if not inspect.isgenerator(result):
            self._check_unyielded(ctx, machine, returned=True)
        return result

    def _body(self, inst: _Instance, point: ChoicePoint, args: Any, choice: Any) -> Any:
        if point.fn is None:
            return choice
        ctx = inst.ctx
        self._running = (ctx.index, point.name)
        ctx._made = None
        try:
            value = point.fn(ctx, args, choice)
        except HAMError:
            raise
        except Exception as err:
            _annotate(err, point, ctx)
            raise
        if inspect.isgenerator(value):
            raise HAMError(
                f"The body of choice machine {point.name!r} is a generator; a choice body maps "
                "the choice to the value its caller gets and cannot run other machines. Make "
                "the choice in a functional machine and call others from there."
            )
        self._check_unyielded(ctx, point, returned=True)
        return value

    @staticmethod
    def _check_unyielded(ctx: MachineContext, machine: Machine, returned: bool) -> None:
        if ctx._made is not None:
            made = ctx._made
            ctx._made = None
            what = "ham.ACTION(...)" if type(made) is Act else f"ham.CALL({made.machine.name!r}, ...)"
            raise HAMError(
                f"Machine {machine.name!r} (env instance {ctx.index}) created {what} but "
                f"{'returned' if returned else 'went on'} without yielding it, so it never ran. "
                f"Write `result = yield {what}`; a machine that calls others must be a "
                "generator function."
            )

    @staticmethod
    def _check_request(ctx: MachineContext, machine: Machine, request: Any) -> None:
        if ctx._made is not None:
            MachineRuntime._check_unyielded(ctx, machine, returned=False)
        if type(request) not in (Call, Act):
            raise HAMError(
                f"Machine {machine.name!r} (env instance {ctx.index}) yielded {request!r}; "
                "machines yield ham.CALL(machine, args) or ham.ACTION(action)."
            )

    # ------------------------------------------------------------------ batched parts
    def _new_events(self, device: torch.device) -> dict[str, dict[str, Tensor]]:
        ham = self.ham
        n, k, depth = self.n, ham.max_choices_per_step, ham.max_depth
        events = {}
        for point in ham.choice_points.values():
            entry = {
                K.N: torch.zeros(n, dtype=torch.int64, device=device),
                K.EVENT_STACK: torch.zeros(n, k, depth, dtype=torch.int64, device=device),
                K.EVENT_CHOICE: torch.zeros(
                    n, k, *point.spec.shape, dtype=point.spec.dtype, device=device
                ),
            }
            if point.args_spec is not None:
                entry[K.EVENT_ARGS] = torch.zeros(
                    n, k, *point.args_spec.shape, dtype=point.args_spec.dtype, device=device
                )
            events[point.name] = entry
        return events

    def _decide(
        self,
        point: ChoicePoint,
        items: list[tuple[int, Any, list[int]]],
        observation: Tensor,
        events: dict[str, dict[str, Tensor]],
        counts: list[int],
    ) -> list[Any]:
        """One batched call of ``point``'s module for every instance waiting at it."""
        ham = self.ham
        device = observation.device
        m = len(items)
        index = torch.tensor([b for b, _, _ in items], device=device)
        depth = ham.max_depth
        stack = torch.tensor(
            [s + [0] * (depth - len(s)) for _, _, s in items], dtype=torch.int64, device=device
        )
        data = {K.OBSERVATION: point.map_observation(observation[index]), K.STACK: stack}
        if point.args_spec is not None:
            data[K.ARGS] = self._args(point, items, device)
        self._running = (items[0][0], f"{point.name} (its choice module)")
        out = point.policy(TensorDict(data, batch_size=[m], device=device))
        choice = out.get(K.ACTION, None)
        if choice is None:
            raise HAMError(
                f"The module of choice point {point.name!r} did not write {K.ACTION!r} (it wrote "
                f"{sorted(map(str, out.keys(True, True)))}). Set its out_keys to write "
                f"{K.ACTION!r}."
            )
        self._check_in_spec(point.spec, choice, f"choice point {point.name!r}", "choice", items)
        slots = [counts[b] for b, _, _ in items]
        if max(slots) >= ham.max_choices_per_step:
            b = items[slots.index(max(slots))][0]
            raise HAMError(
                f"Choice point {point.name!r} was reached {ham.max_choices_per_step + 1} times "
                f"in one env step by env instance {b} (no action in between). Raise "
                "HAM(max_choices_per_step=) if that is intended."
            )
        for b, _, _ in items:
            counts[b] += 1
        if self.record_events:
            entry = events[point.name]
            slot = torch.tensor(slots, device=device)
            entry[K.N][index] = slot + 1
            entry[K.EVENT_STACK][index, slot] = stack
            entry[K.EVENT_CHOICE][index, slot] = choice.to(entry[K.EVENT_CHOICE].dtype)
            if point.args_spec is not None:
                entry[K.EVENT_ARGS][index, slot] = data[K.ARGS]
        return _to_python(point.spec, choice, m)

    def _args(self, point: ChoicePoint, items, device) -> Tensor:
        spec = point.args_spec
        try:
            values = [args for _, args, _ in items]
            if all(type(a) is int for a in values):
                args = torch.tensor(values, dtype=torch.int64)
                if isinstance(spec, OneHot):
                    args = F.one_hot(args, spec.space.n)
                args = args.to(dtype=spec.dtype, device=device)
            else:
                rows = [torch.as_tensor(a, dtype=spec.dtype) for a in values]
                if isinstance(spec, OneHot):
                    rows = [F.one_hot(r.long(), spec.space.n).to(spec.dtype) if r.ndim == 0 else r for r in rows]
                args = torch.stack(rows).to(device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise HAMError(
                f"Choice point {point.name!r} declares args_spec={_describe(spec)} but was "
                f"called with args that do not convert to it ({items[0][1]!r}...): {err}"
            ) from err
        if tuple(args.shape[1:]) != tuple(spec.shape):
            raise HAMError(
                f"Choice point {point.name!r} was called with args of shape "
                f"{tuple(args.shape[1:])}, but its args_spec has shape {tuple(spec.shape)}."
            )
        self._check_in_spec(spec, args, f"choice point {point.name!r}", "args", items)
        return args

    def _assemble(
        self,
        actions: list[Any],
        emitters: list[Machine | None],
        waiting: list[bool],
        device: torch.device,
    ) -> Tensor:
        """Stacks the instances' primitive actions into one batch and checks them."""
        spec = self.ham.action_spec
        zero = spec.zero()
        if any(waiting):
            actions = [zero if w else a for a, w in zip(actions, waiting)]
        one_hot = isinstance(spec, OneHot)
        try:
            if all(type(a) is int for a in actions):
                action = torch.tensor(actions, dtype=torch.int64)
                if one_hot:
                    action = F.one_hot(action.clamp(0, spec.space.n - 1), spec.space.n).masked_fill(
                        ((action < 0) | (action >= spec.space.n))[:, None], 0
                    )
                action = action.to(spec.dtype)
            else:
                rows = [torch.as_tensor(a) for a in actions]
                if one_hot:
                    rows = [
                        F.one_hot(r.long().clamp(0, spec.space.n - 1), spec.space.n)
                        if r.ndim == 0
                        else r
                        for r in rows
                    ]
                action = torch.stack([r.to(spec.dtype) for r in rows])
        except (TypeError, ValueError, RuntimeError) as err:
            bad = _first_bad(actions, lambda a: torch.as_tensor(a))
            raise HAMError(
                f"Machine {_name(emitters, bad)!r} (env instance {bad}) emitted the action "
                f"{actions[bad]!r}, which does not convert to the env's action spec "
                f"{_describe(spec)}: {err}"
            ) from err
        if tuple(action.shape[1:]) != tuple(spec.shape):
            raise HAMError(
                f"Machine {_name(emitters, 0)!r} emitted actions of shape {tuple(action.shape[1:])}, "
                f"but the env's action spec {_describe(spec)} has shape {tuple(spec.shape)}."
            )
        if not self._in_spec(spec, action):
            bad = _first_bad_row(spec, action)
            raise HAMError(
                f"Machine {_name(emitters, bad)!r} (env instance {bad}) emitted the action "
                f"{actions[bad]!r}, outside the env's action spec {_describe(spec)}."
            )
        return action.to(device)

    def _check_in_spec(self, spec: TensorSpec, value: Tensor, owner: str, what: str, items) -> None:
        if tuple(value.shape[1:]) != tuple(spec.shape) or value.dtype != spec.dtype:
            raise HAMError(
                f"{owner[0].upper()}{owner[1:]}: its module wrote a {what} of shape "
                f"{tuple(value.shape[1:])} and dtype {value.dtype} per instance, but the spec is "
                f"{_describe(spec)}."
                if what == "choice"
                else f"{owner}: {what} of shape {tuple(value.shape[1:])} and dtype {value.dtype} "
                f"do not match {_describe(spec)}."
            )
        if not self._in_spec(spec, value):
            row = _first_bad_row(spec, value)
            b = items[row][0]
            raise HAMError(
                f"{owner[0].upper()}{owner[1:]} got the {what} {value[row].tolist()!r} for env "
                f"instance {b}, outside its spec {_describe(spec)}."
            )

    def _in_spec(self, spec: TensorSpec, value: Tensor) -> bool:
        """``spec.is_in`` over a batch, with fast paths for the common discrete specs."""
        if isinstance(spec, Categorical) and not spec.shape:
            n = spec.space.n
            return bool(((value >= 0) & (value < n)).all())
        if isinstance(spec, OneHot):
            return bool(((value == 0) | (value == 1)).all() and (value.sum(-1) == 1).all())
        key = (id(spec), value.shape[0])
        expanded = self._expanded.get(key)
        if expanded is None:
            expanded = self._expanded[key] = spec.expand(value.shape[0], *spec.shape)
        return bool(expanded.is_in(value))

    # ------------------------------------------------------------------ watchdog
    @contextmanager
    def _watchdog(self):
        """Raises :class:`HAMTimeoutError` when machine code runs past ``ham.time_limit``.

        Uses ``SIGALRM``, so only in the main thread. A real-time timer already running (e.g.
        pytest-timeout's) is suspended and re-armed with its remaining time afterwards, or
        left alone if it fires first anyway. Machine steps are also bounded by
        ``max_machine_steps``, which needs no signal.
        """
        limit = self.ham.time_limit
        if (
            limit is None
            or not hasattr(signal, "SIGALRM")
            or threading.current_thread() is not threading.main_thread()
        ):
            yield
            return
        other = signal.getitimer(signal.ITIMER_REAL)[0]
        if other and other <= limit:
            yield
            return

        def on_alarm(signum, frame):
            where = self._running
            running = f"machine {where[1]!r} (env instance {where[0]})" if where else "the HAM"
            raise HAMTimeoutError(
                f"The HAM's machine code ran for more than time_limit={limit}s in one step, in "
                f"{running}. An infinite loop without a yield? Raise HAM(time_limit=) if the "
                "code is just slow."
            )

        start = time.monotonic()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if other:
                signal.setitimer(signal.ITIMER_REAL, max(other - (time.monotonic() - start), 1e-3))


def _to_python(spec: TensorSpec, choice: Tensor, m: int) -> list[Any]:
    """The choices as the values machine bodies receive: ints for discrete scalar choices
    (an index for one-hot), CPU tensor rows otherwise. One host transfer per batch."""
    if isinstance(spec, Categorical) and not spec.shape:
        return choice.tolist()
    if isinstance(spec, OneHot):
        return choice.argmax(-1).tolist()
    rows = choice.detach().cpu()
    return [rows[i] for i in range(m)]


def _annotate(err: Exception, machine: Machine, ctx: MachineContext) -> None:
    note = (
        f"(raised in HAM machine {machine.name!r}, env instance {ctx.index}, call stack "
        f"{_describe_stack(ctx._frames)})"
    )
    if note not in getattr(err, "__notes__", ()):
        err.add_note(note)


def _describe_stack(frames: list[_Frame]) -> str:
    return " > ".join(frame.machine.name for frame in frames) or "<empty>"


def _describe(spec: TensorSpec) -> str:
    extra = f", n={spec.space.n}" if isinstance(spec, (Categorical, OneHot)) else ""
    return f"{type(spec).__name__}(shape={tuple(spec.shape)}{extra}, dtype={spec.dtype})"


def _name(emitters: list[Machine | None], b: int) -> str:
    machine = emitters[b] if 0 <= b < len(emitters) else None
    return machine.name if machine is not None else "<root>"


def _first_bad(values: list[Any], convert) -> int:
    for i, value in enumerate(values):
        try:
            convert(value)
        except Exception:
            return i
    return 0


def _first_bad_row(spec: TensorSpec, value: Tensor) -> int:
    for i in range(value.shape[0]):
        if not bool(spec.is_in(value[i])):
            return i
    return 0
