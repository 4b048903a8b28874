"""LevelLearner: what one level needs to learn from its semi-MDP transitions.

A replay buffer, a ``torchrl.objectives`` loss (its value estimator set to TD(0) with the
level's gamma, so the target is ``R + gamma**tau * (1 - terminated) * V(next)``), an optimizer,
target-network updates, a warm-up and an update ratio, both counted in the level's own
transitions: a high level completes far fewer transitions than the lowest one, so counting
env frames would make it update far too often on far too little data.

A gradient step is the stock loss's forward and backward pass, the optimizer step and the
target update; with ``compile=True`` the loss forward runs as a ``torch.compile``-d function
(its backward pass is compiled with it), which on small networks removes most of the Python
overhead of TensorDict-based losses. The optimizer calls stay eager: traced inside, each of
them is a graph break, and dynamo traces everything before a break twice (about half of the
warm-up). Sampling and soft target updates take fast paths with the stock classes' results
(:mod:`torchrl_hier.learning.fast`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch._dynamo.exc
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import LazyTensorStorage, ReplayBuffer, TensorDictReplayBuffer
from torchrl.objectives import HardUpdate, LossModule, SoftUpdate, ValueEstimators
from torchrl.objectives.utils import TargetNetUpdater
from torchrl.objectives.value import TD0Estimator

from torchrl_hier._logging import quiet_torchrl_info
from torchrl_hier.learning.fast import FusedSoftUpdate, make_sampler
from torchrl_hier.level import ACTION, OBSERVATION, PARENT_ACTION, Level

__all__ = ["LevelLearner", "transition_keys"]

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
LossForward = Callable[[TensorDictBase], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def transition_keys(has_parent: bool, records: Iterable[str] = ()) -> set[NestedKey]:
    """The leaf keys of a level's transitions as :meth:`Hierarchy.transitions` writes them
    (``records``: the level's :attr:`~torchrl_hier.Level.records`)."""
    keys: set[NestedKey] = {
        OBSERVATION,
        ACTION,
        "steps_to_next_obs",
        ("next", OBSERVATION),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
        ("next", "truncated"),
    }
    if has_parent:
        keys |= {PARENT_ACTION, ("next", PARENT_ACTION)}
    return keys | set(records)


def _key_str(key: NestedKey) -> str:
    return key if isinstance(key, str) else "/".join(key)


def _sorted(keys: Iterable[NestedKey]) -> list[str]:
    return sorted(_key_str(key) for key in keys)


class LevelLearner:
    """Learns one level from its SMDP transitions with a stock ``torchrl.objectives`` loss.

    Typical use, in a plain loop over a TorchRL collector::

        learner = LevelLearner(DQNLoss(qnet, action_space=spec), level=level, warmup=1000)
        for batch in collector:
            learner.extend(hierarchy.transitions(batch)[level.name])
            logs = learner.update()   # the gradient steps owed by update_ratio, mean losses

    Args:
        loss: a ``torchrl.objectives.LossModule`` (``DQNLoss``, ``DiscreteSACLoss``,
            ``SACLoss``, ``TD3Loss``, ``DDPGLoss``, ...). Its networks must be the modules the
            level's policy runs, so that training the loss trains the policy.
        level: the level this learner trains; its ``gamma`` is used (and checked against
            ``gamma`` when both are given).
        gamma: the discount. Needed when ``level`` is not given.
        optimizer: an optimizer over ``loss.parameters()``, or a factory ``params -> optimizer``
            (e.g. ``functools.partial(torch.optim.Adam, lr=3e-4)``); default Adam with ``lr``.
        lr: learning rate of the default optimizer.
        buffer_size: capacity of the replay buffer (oldest transitions are overwritten).
        batch_size: transitions per gradient step.
        device: where the replay buffer stores its transitions.
        target_update: a ``SoftUpdate``/``HardUpdate`` built on ``loss``, or ``"soft"``
            (Polyak, ``tau``) or ``"hard"`` (copy every ``period`` gradient steps). ``None``
            uses ``"soft"`` when the loss has target networks and nothing otherwise.
        tau: the Polyak factor of ``"soft"``: ``target <- (1 - tau) * target + tau * online``.
        period: gradient steps between two copies with ``"hard"``.
        warmup: transitions of this level to collect before the first gradient step.
        update_ratio: gradient steps per transition of this level after the warm-up
            (0.25: one step every 4 transitions; 2.0: two steps per transition).
        max_grad_norm: clip the gradient norm to this value before each step (``None``: no clip).
        buffer: a replay buffer to use instead of the default
            ``TensorDictReplayBuffer(LazyTensorStorage(buffer_size, device=device))``. Plain
            uniform buffers are read directly; others (custom sampler, transform, ...) through
            their ``sample``.
        compile: ``True`` runs the loss forward (and so its backward) as a
            ``torch.compile``-d function (``dynamic=False``: batches have a fixed size); a
            mapping gives ``torch.compile``'s keyword arguments instead (``mode``,
            ``backend``, ...). Same update as eager up to float rounding, after a warm-up of
            seconds (tens of seconds on CPU the first time, less once inductor's on-disk
            cache has the kernels): worth it for thousands of steps. Random draws inside the
            step (SAC's actions, TD3's target noise) come from inductor's own generator, so
            the random stream differs from an eager run's (same distributions);
            ``torch._inductor.config.fallback_random = True`` makes them equal. If compiling
            fails (e.g. TorchRL 0.14.1's ``TanhDelta`` with its default ``safe=True``
            refuses to be compiled; the ready-made TD3 actor uses ``safe=False``), the
            learner warns, says why, and runs that step and all later ones eagerly. Each
            compiled learner adds an entry to dynamo's cache of the loss forward; past
            ``torch._dynamo.config.recompile_limit`` (8) learners in one process, the later
            ones run eagerly (torch logs it). Default ``False``.
    """

    #: Whether the learner reads a level's trajectories (``hierarchy.trajectories(batch)``,
    #: :class:`~torchrl_hier.learning.OnPolicyLearner`) rather than its transitions.
    on_policy = False

    def __init__(
        self,
        loss: LossModule,
        *,
        level: Level | None = None,
        gamma: float | None = None,
        optimizer: torch.optim.Optimizer | OptimizerFactory | None = None,
        lr: float = 1e-3,
        buffer_size: int = 100_000,
        batch_size: int = 256,
        device: torch.device | str = "cpu",
        target_update: TargetNetUpdater | str | None = None,
        tau: float = 0.005,
        period: int = 1000,
        warmup: int = 1000,
        update_ratio: float = 0.25,
        max_grad_norm: float | None = None,
        buffer: ReplayBuffer | None = None,
        compile: bool | Mapping[str, Any] = False,
    ):
        if not isinstance(loss, LossModule):
            raise TypeError(
                f"loss must be a torchrl.objectives.LossModule (DQNLoss, SACLoss, TD3Loss, ...), "
                f"got {type(loss).__name__}."
            )
        if not (isinstance(warmup, int) and warmup >= 0):
            raise ValueError(
                f"warmup must be an int >= 0 (transitions of this level), got {warmup!r}."
            )
        if not update_ratio > 0:
            raise ValueError(
                f"update_ratio must be > 0 (gradient steps per transition), got {update_ratio!r}."
            )
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        self.loss = loss
        self.level = level
        self.gamma = self._resolve_gamma(level, gamma)
        self.batch_size = batch_size
        self.warmup = warmup
        self.update_ratio = float(update_ratio)
        self.max_grad_norm = max_grad_norm
        self.device = torch.device(device)
        self._set_value_estimator()
        self.optimizer = self._make_optimizer(optimizer, lr)
        self.target_updater = self._make_target_updater(target_update, tau, period)
        self.buffer = self._make_buffer(buffer, buffer_size)
        # The first write into a buffer made here does not log TorchRL's storage INFO line.
        self._quiet_first_write = buffer is None
        self.n_transitions = 0
        self.n_updates = 0
        self._schema: set[NestedKey] | None = None
        self._non_finite: dict[NestedKey, torch.Tensor] = {}
        self._params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.compile_options = self._compile_options(compile)
        self._forward: LossForward = self._loss_forward
        self._compiled = False  # whether _forward is torch.compile'd and has run once
        if self.compile_options is not None:
            self._forward = torch.compile(self._loss_forward, **self.compile_options)

    # ----------------------------------------------------------------------------- setup
    def _make_buffer(self, buffer: ReplayBuffer | None, buffer_size: int) -> ReplayBuffer | None:
        """The replay buffer: ``buffer``, or a ``LazyTensorStorage`` one of ``buffer_size``."""
        if buffer is not None:
            return buffer
        if not (isinstance(buffer_size, int) and buffer_size > 0):
            raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}.")
        return TensorDictReplayBuffer(
            storage=LazyTensorStorage(buffer_size, device=self.device), batch_size=self.batch_size
        )

    @staticmethod
    def _resolve_gamma(level: Level | None, gamma: float | None) -> float:
        if level is not None and not isinstance(level, Level):
            raise TypeError(f"level must be a torchrl_hier.Level, got {type(level).__name__}.")
        if level is None and gamma is None:
            raise ValueError(
                "LevelLearner needs the level's discount: pass level=<Level> or gamma=<float>."
            )
        if level is not None and gamma is not None and not math.isclose(level.gamma, gamma):
            raise ValueError(
                f"gamma={gamma} differs from level {level.name!r}'s gamma={level.gamma}: the "
                "level accumulates its SMDP reward with its own gamma, so the loss must bootstrap "
                "with the same one. Drop gamma= or make them equal."
            )
        gamma = float(level.gamma if gamma is None else gamma)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
        return gamma

    @staticmethod
    def _compile_options(compile: bool | Mapping[str, Any]) -> dict[str, Any] | None:
        """``torch.compile`` keyword arguments, or ``None`` for eager."""
        if isinstance(compile, bool):
            return {"dynamic": False} if compile else None
        if isinstance(compile, Mapping):
            return {"dynamic": False, **compile}
        raise TypeError(
            "compile must be a bool or a mapping of torch.compile keyword arguments, got "
            f"{type(compile).__name__}."
        )

    def _warn_if_gamma_replaced(self) -> None:
        """Warns when the loss already has a value estimator at another gamma: the learner
        replaces it with one at the level's gamma (the level accumulates its SMDP reward with
        that one). TorchRL makes a default estimator (gamma 0.99) the first time a loss's
        ``value_estimator`` is read or the loss runs, so this is not always the user's
        choice; hence a warning, not an error."""
        existing = getattr(self.loss, "_value_estimator", None)
        gamma = getattr(existing, "gamma", None)
        if gamma is None or math.isclose(float(gamma), self.gamma, rel_tol=1e-6):
            return
        warnings.warn(
            f"The loss's {type(existing).__name__} value estimator has gamma={float(gamma):g}; "
            f"the learner replaces it with one at the level's gamma={self.gamma:g}, since the "
            "level accumulates its SMDP reward with that one. Set the level's gamma to change "
            "the discount (TorchRL gives a loss a 0.99 estimator when its value_estimator is "
            "first read or it first runs).",
            UserWarning,
            stacklevel=4,
        )

    def _set_value_estimator(self) -> None:
        """TD(0) with this level's gamma; its target reads ``steps_to_next_obs`` (tau)."""
        existing = getattr(self.loss, "_value_estimator", None)
        if existing is not None and not isinstance(existing, TD0Estimator):
            raise ValueError(
                f"The loss already has a {type(existing).__name__} value estimator. SMDP "
                "transitions sampled from a replay buffer are not trajectories, so a level "
                "learner bootstraps with TD(0): R + gamma**tau * (1 - terminated) * V(next). "
                "Leave the loss's value estimator unset; the learner makes a TD0 one."
            )
        self._warn_if_gamma_replaced()
        try:
            self.loss.make_value_estimator(ValueEstimators.TD0, gamma=self.gamma)
        except NotImplementedError as err:
            raise ValueError(
                f"{type(self.loss).__name__} does not support a TD0 value estimator, which a "
                f"level learner needs to discount by gamma**steps_to_next_obs: {err}"
            ) from err
        self.steps_key: NestedKey = self.loss.value_estimator.tensor_keys.steps_to_next_obs

    def _make_optimizer(
        self, optimizer: torch.optim.Optimizer | OptimizerFactory | None, lr: float
    ) -> torch.optim.Optimizer:
        params = [p for p in self.loss.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                f"{type(self.loss).__name__} has no trainable parameters: nothing to learn."
            )
        if optimizer is None:
            return torch.optim.Adam(params, lr=lr)
        if isinstance(optimizer, torch.optim.Optimizer):
            own = {id(p) for p in params}
            covered = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if not own & covered:
                raise ValueError(
                    "The optimizer holds none of the loss's parameters. Build it on "
                    "loss.parameters() (the loss keeps its own functional copy of the networks' "
                    "parameters), or pass a factory such as partial(torch.optim.Adam, lr=1e-3)."
                )
            return optimizer
        if callable(optimizer):
            made = optimizer(params)
            if not isinstance(made, torch.optim.Optimizer):
                raise TypeError(
                    f"The optimizer factory returned {type(made).__name__}, not a torch optimizer."
                )
            return made
        raise TypeError(
            "optimizer must be a torch.optim.Optimizer, a factory params -> Optimizer, or None; "
            f"got {type(optimizer).__name__}."
        )

    def _has_targets(self) -> bool:
        return any(
            name.startswith("target_") and name.endswith("_params")
            for name, _ in self.loss.named_children()
        )

    def _make_target_updater(
        self, target_update: TargetNetUpdater | str | None, tau: float, period: int
    ) -> TargetNetUpdater | None:
        if isinstance(target_update, TargetNetUpdater):
            if target_update.loss_module is not self.loss:
                raise ValueError(
                    f"The {type(target_update).__name__} was built on another loss module; "
                    "build it on this learner's loss: SoftUpdate(loss, tau=...)."
                )
            return target_update
        if target_update is None:
            if not self._has_targets():
                return None
            target_update = "soft"
        if target_update not in ("soft", "hard"):
            raise ValueError(
                f"target_update must be a SoftUpdate/HardUpdate instance, 'soft', 'hard' or None; "
                f"got {target_update!r}."
            )
        if not self._has_targets():
            raise ValueError(
                f"target_update={target_update!r} but {type(self.loss).__name__} has no target "
                "networks. Build the loss with them (e.g. DQNLoss(..., delay_value=True)) or "
                "leave target_update=None."
            )
        if target_update == "soft":
            if not 0.0 < tau <= 0.5:
                raise ValueError(f"tau must be in (0, 0.5] for soft target updates, got {tau}.")
            return SoftUpdate(self.loss, tau=tau)
        if not (isinstance(period, int) and period > 0):
            raise ValueError(
                f"period must be a positive int for hard target updates, got {period!r}."
            )
        return HardUpdate(self.loss, value_network_update_interval=period)

    # ----------------------------------------------------------------------------- keys
    @property
    def required_keys(self) -> set[NestedKey]:
        """The entries a transition must hold: what the loss reads, plus ``steps_to_next_obs``.

        ``("next", action)`` (recomputed by actor-critic losses from the next observation) and
        the optional prioritized-replay weight are not required.
        """
        tensor_keys = self.loss.tensor_keys
        optional = {
            getattr(tensor_keys, "priority_weight", None),
            ("next", getattr(tensor_keys, "action", ACTION)),
        }
        keys = {
            key if isinstance(key, str) or len(key) > 1 else key[0]
            for key in self.loss.in_keys
        }
        return (keys - optional) | {self.steps_key}

    def check_level_keys(
        self, has_parent: bool, name: str = "this level", records: Iterable[str] = ()
    ) -> None:
        """Raises if the loss reads entries that the level's transitions do not hold
        (``records``: what the level's choices record, :attr:`~torchrl_hier.Level.records`)."""
        held = transition_keys(has_parent, records)
        missing = {key for key in self.required_keys if key not in held}
        if missing:
            raise KeyError(
                f"The loss of {name} reads {_sorted(missing)}, which its transitions do not hold "
                f"(they hold {_sorted(held)}). Make its networks read {OBSERVATION!r}"
                + (f" and {PARENT_ACTION!r}" if has_parent else "")
                + f", and the loss read {ACTION!r} and ('next', 'reward'/'done'/'terminated')"
                + "; an entry the level's policy writes when it chooses (e.g. 'action_log_prob') "
                "is kept when the level lists it in its records=."
            )

    def _check_transitions(self, td: TensorDictBase, valid: torch.Tensor | None = None) -> TensorDictBase:
        """``td`` flattened to one batch dim, checked to hold what the loss reads, in the layout
        of what the learner already holds; ``valid`` (``td``'s shape, kept as is): the entries
        that hold a transition (the others are not checked for their tau)."""
        if not isinstance(td, TensorDictBase):
            raise TypeError(
                f"extend expects a TensorDict of transitions (hierarchy.transitions(batch)[name]), "
                f"got {type(td).__name__}."
            )
        if valid is None and td.batch_dims != 1:
            td = td.reshape(-1)
        present = set(td.keys(include_nested=True))
        missing = {key for key in self.required_keys if key not in present}
        if missing:
            hint = (
                f" Keep {_key_str(self.steps_key)!r} (tau): td.select(*loss.in_keys) drops it, "
                "and without it the loss would discount by gamma instead of gamma**tau."
                if self.steps_key in missing
                else ""
            )
            raise KeyError(
                f"The transitions lack {_sorted(missing)}, which {type(self.loss).__name__} needs. "
                f"Expected {_sorted(self.required_keys)}; got "
                f"{_sorted(td.keys(include_nested=True, leaves_only=True))}.{hint}"
            )
        schema = set(td.keys(include_nested=True, leaves_only=True))
        if self._schema is not None and schema != self._schema:
            raise KeyError(
                "These transitions do not have the keys of those already in the buffer, so "
                f"some entries would be dropped: new {_sorted(schema - self._schema)}, missing "
                f"{_sorted(self._schema - schema)}. Extend with transitions of one layout."
            )
        reward = td.get(("next", "reward"), None)
        steps = td.get(self.steps_key)
        if reward is not None and steps.numel() != reward.numel():
            raise ValueError(
                f"{_key_str(self.steps_key)!r} has shape {tuple(steps.shape)} but ('next', "
                f"'reward') has shape {tuple(reward.shape)}: there must be one tau per transition."
            )
        if steps.is_floating_point() or steps.dtype == torch.bool:
            raise TypeError(
                f"{_key_str(self.steps_key)!r} must hold integer step counts, got {steps.dtype}."
            )
        too_short = steps < 1
        if valid is not None:
            too_short = too_short & valid.reshape(valid.shape + (1,) * (steps.ndim - valid.ndim))
        if steps.numel() and bool(too_short.any()):
            raise ValueError(
                f"{_key_str(self.steps_key)!r} must be >= 1 (env steps per transition), got a "
                f"minimum of {int(steps[too_short].min())}."
            )
        return td

    # ----------------------------------------------------------------------------- learning
    def extend(self, transitions: TensorDictBase) -> None:
        """Adds a level's completed transitions (any number, zero included) to the buffer."""
        td = self._check_transitions(transitions)
        n = td.batch_size.numel()  # TensorDict.numel() is at least 1
        if n == 0:
            return
        self._schema = set(td.keys(include_nested=True, leaves_only=True))
        self._note_non_finite(td)
        if self._quiet_first_write:
            with quiet_torchrl_info():
                self.buffer.extend(td)
            self._quiet_first_write = False
        else:
            self.buffer.extend(td)
        self.n_transitions += n

    def _note_non_finite(self, td: TensorDictBase) -> None:
        """Remembers, on the device, which float entries held NaN/inf; :meth:`update` reads
        the flags back with its losses (no host sync here, once per env step in some loops)."""
        for key, value in td.items(include_nested=True, leaves_only=True):
            if not value.is_floating_point():
                continue
            bad = ~torch.isfinite(value).all()
            seen = self._non_finite.get(key)
            self._non_finite[key] = bad if seen is None else seen | bad

    def _raise_if_non_finite(self, keys: list[str], values: list[float], flags: list[float]) -> None:
        name = f"level {self.level.name!r}" if self.level is not None else "this learner"
        bad_entries = [key for key, flag in zip(self._non_finite, flags) if flag]
        if bad_entries:
            raise FloatingPointError(
                f"The transitions given to the learner of {name} hold NaN or inf in "
                f"{_sorted(bad_entries)}, so its losses and parameters would become non-finite. "
                "Check the env's rewards and observations (and the level's reward rule) for "
                "NaN/inf before they reach the learner."
            )
        bad_terms = [key for key, value in zip(keys, values) if not math.isfinite(value)]
        if bad_terms:
            raise FloatingPointError(
                f"The loss of {name} became non-finite ({_sorted(bad_terms)}) in the last "
                "gradient steps, on finite transitions: the parameters may now be NaN/inf. "
                "Lower the learning rate, clip gradients (max_grad_norm=...) or bound the "
                "values (e.g. value_range= on the ready-made levels)."
            )

    @property
    def updates_owed(self) -> int:
        """Gradient steps due now: ``update_ratio`` per transition past the warm-up."""
        if self.n_transitions < max(self.warmup, 1):
            return 0
        due = math.floor((self.n_transitions - self.warmup) * self.update_ratio + 1e-9)
        return max(due - self.n_updates, 0)

    def _loss_device(self) -> torch.device | None:
        for tensor in (*self.loss.parameters(), *self.loss.buffers()):
            return tensor.device
        return None

    def _loss_forward(self, batch: TensorDictBase) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss's total (the sum of its ``loss*`` terms) and its scalar outputs, detached
        (what :meth:`update` averages). ``torch.compile`` wraps this."""
        out = self.loss(batch)
        terms = [value for key, value in out.items() if key.startswith("loss")]
        if not terms:
            raise KeyError(
                f"{type(self.loss).__name__} returned no 'loss*' entry "
                f"(it returned {sorted(out.keys())}); cannot take a gradient step."
            )
        scalars = {
            key: value.detach().reshape(())
            for key, value in out.items()
            if isinstance(value, torch.Tensor) and value.numel() == 1
        }
        return sum(terms), scalars

    def _gradient_step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """Loss forward and backward, clipping, optimizer step; returns the loss's scalar
        outputs."""
        total, scalars = self._forward(batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._params, self.max_grad_norm)
        self.optimizer.step()
        return scalars

    def _first_compiled_step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """The compiled step's first call (where compiling happens); on a compiler error,
        warns and falls back to the eager step for this and every later step. The step is
        retried eagerly: a compiler error stops the step before the optimizer changes any
        parameter, and the eager step starts by zeroing the gradients."""
        try:
            out = self._gradient_step(batch)
        except torch._dynamo.exc.TorchDynamoException as err:
            warnings.warn(
                f"torch.compile failed on the gradient step of {type(self.loss).__name__} "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); this "
                "learner runs eagerly from now on (same update, no compile speed-up). Pass "
                "compile=False to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
            self._forward = self._loss_forward
            self.compile_options = None
            return self._gradient_step(batch)
        self._compiled = True
        return out

    def update(self) -> dict[str, float]:
        """Performs the gradient steps owed by ``update_ratio``; returns the mean of each loss
        term (``loss_*``) and of the loss's other scalar outputs (e.g. ``alpha``) over them.
        Returns an empty dict when nothing is owed (still in the warm-up).

        The values are summed on the loss's device and read back once, at the end."""
        owed = self.updates_owed
        if owed == 0 or len(self.buffer) == 0:
            return {}
        sample = make_sampler(self.buffer, self.batch_size)
        return self._run_steps(sample() for _ in range(owed))

    def _run_steps(self, batches: Iterable[TensorDictBase]) -> dict[str, float]:
        """One gradient step (and target update) per batch; the mean of each scalar output
        over the steps, read back once, with the non-finite checks."""
        device = self._loss_device()
        target_step = None
        if type(self.target_updater) is SoftUpdate:
            target_step = FusedSoftUpdate(self.target_updater).step
        elif self.target_updater is not None:
            target_step = self.target_updater.step
        keys: list[str] = []
        sums: list[torch.Tensor] = []
        steps = 0
        for batch in batches:
            if device is not None and batch.device != device:
                batch = batch.to(device, non_blocking=True)
            if self.compile_options is not None and not self._compiled:
                out = self._first_compiled_step(batch)
            else:
                out = self._gradient_step(batch)
            if target_step is not None:
                target_step()
            if not keys:
                keys = list(out)
                sums = [value.clone() for value in out.values()]
            else:
                torch._foreach_add_(sums, [out[key] for key in keys])
            self.n_updates += 1
            steps += 1
        if not steps:
            return {}
        flags = [flag.float().reshape(1) for flag in self._non_finite.values()]
        read = torch.cat([torch.stack(sums).float() / steps, *[f.to(sums[0].device) for f in flags]])
        values = read.tolist()  # the one host sync of the update
        means, flagged = values[: len(keys)], values[len(keys):]
        self._raise_if_non_finite(keys, means, flagged)
        return dict(zip(keys, means))

    # ----------------------------------------------------------------------------- state
    def state_dict(self, include_buffer: bool = False) -> dict[str, Any]:
        """Loss parameters (online and target), optimizer, target-update progress and counters;
        the replay buffer too when ``include_buffer``."""
        state: dict[str, Any] = {
            "gamma": self.gamma,
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "target_update": (
                None if self.target_updater is None else self.target_updater.state_dict()
            ),
            "n_transitions": self.n_transitions,
            "n_updates": self.n_updates,
            "schema": None if self._schema is None else sorted(self._schema, key=str),
        }
        if include_buffer:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores what :meth:`state_dict` saved (the buffer only if it was saved)."""
        missing = {"gamma", "loss", "optimizer", "n_transitions", "n_updates"} - set(state_dict)
        if missing:
            raise KeyError(
                f"Not a LevelLearner state dict: it lacks {sorted(missing)} (it has "
                f"{sorted(state_dict)})."
            )
        if not math.isclose(state_dict["gamma"], self.gamma):
            raise ValueError(
                f"The saved learner used gamma={state_dict['gamma']}, this one gamma={self.gamma}."
            )
        self.loss.load_state_dict(state_dict["loss"])
        self.optimizer.load_state_dict(state_dict["optimizer"])
        if self.target_updater is not None and state_dict.get("target_update") is not None:
            self.target_updater.load_state_dict(state_dict["target_update"])
        self.n_transitions = int(state_dict["n_transitions"])
        self.n_updates = int(state_dict["n_updates"])
        schema = state_dict.get("schema")
        self._schema = None if schema is None else {
            key if isinstance(key, str) else tuple(key) for key in schema
        }
        if "buffer" in state_dict:
            self.buffer.load_state_dict(state_dict["buffer"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(loss={type(self.loss).__name__}, gamma={self.gamma}, "
            f"n_transitions={self.n_transitions}, n_updates={self.n_updates}, "
            f"buffer={len(self.buffer)}, "
            f"warmup={self.warmup}, update_ratio={self.update_ratio})"
        )
