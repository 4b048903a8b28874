"""OnPolicyLearner: a level learning on-policy (PPO, A2C, option-critic) from its trajectories.

A level's trajectories (:func:`~torchrl_hier.transitions.level_trajectories`) hold each env
instance's completed semi-MDP transitions in time order, with what each choice recorded (the
sample log-prob, :attr:`Level.records`). The learner holds them until it has
``min_transitions``, then runs ``epochs`` passes of minibatch gradient steps over them and
drops them. For a loss whose default value estimator is GAE (``ClipPPOLoss``, ``A2CLoss``) the
advantages are TorchRL's own ``GAE`` over each row, at the level's gamma, which discounts a
transition of τ env steps by ``gamma**steps_to_next_obs``: a terminated transition does not
bootstrap, a truncated one does, and every row's last held transition bootstraps from its next
observation (the rollout is cut there, as TorchRL cuts a collector batch). Losses with their
own one-step targets (option-critic) get the transitions as they are.

A transition still running when the learner updates is in none of the rows: it completes later,
with what its choice recorded then, and is learnt from in a later update, once. Its log-prob is
that of the policy that chose it, which is what PPO's importance ratio divides by.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.data import ReplayBuffer
from torchrl.objectives import LossModule, ValueEstimators

from torchrl_hier.learning.level_learner import LevelLearner, OptimizerFactory
from torchrl_hier.level import Level
from torchrl_hier.transitions import TRAJECTORY_MASK, pack_trajectories

__all__ = ["OnPolicyLearner"]


class OnPolicyLearner(LevelLearner):
    """Learns one level on-policy from its trajectories, with a stock loss and GAE.

    Typical use::

        level, loss = on_policy_level("agent", obs_dim, env.action_spec_unbatched)
        learner = OnPolicyLearner(loss, level=level, epochs=4, batch_size=256)
        for batch in collector:
            learner.extend(hierarchy.trajectories(batch)[level.name])
            logs = learner.update()    # epochs x minibatches over the held trajectories

    Args:
        loss: ``ClipPPOLoss``/``A2CLoss`` (their default estimator, GAE, is set to the level's
            gamma and ``lmbda``), or a loss computing its own one-step targets such as
            :class:`~torchrl_hier.levels.OptionCriticLoss` (given a TD(0) estimator).
        level, gamma: the level (its gamma) or the discount, as for :class:`LevelLearner`.
        lmbda: GAE's lambda, per semi-MDP step of the level.
        epochs: passes over the held transitions per update.
        batch_size: transitions per minibatch (the last one of a pass may be smaller).
        min_transitions: transitions to hold before an update (1: update whenever there is
            data, e.g. once per collector batch).
        optimizer, lr, max_grad_norm, device, compile: as for :class:`LevelLearner`
            (``device``: where the held trajectories are stored).
    """

    #: This learner reads trajectories (``hierarchy.trajectories(batch)``), not transitions.
    on_policy = True

    def __init__(
        self,
        loss: LossModule,
        *,
        level: Level | None = None,
        gamma: float | None = None,
        lmbda: float = 0.95,
        epochs: int = 4,
        batch_size: int = 256,
        min_transitions: int = 1,
        optimizer: torch.optim.Optimizer | OptimizerFactory | None = None,
        lr: float = 3e-4,
        max_grad_norm: float | None = 0.5,
        device: torch.device | str = "cpu",
        compile: bool | Mapping[str, Any] = False,
    ):
        if not 0.0 <= lmbda <= 1.0:
            raise ValueError(f"lmbda must be in [0, 1], got {lmbda!r}.")
        for what, value in (("epochs", epochs), ("min_transitions", min_transitions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive int, got {value!r}.")
        self.lmbda = float(lmbda)
        self.epochs = epochs
        self.min_transitions = min_transitions
        self._held: list[TensorDictBase] = []
        self._held_total: Tensor | None = None  # transitions held, summed on their device
        super().__init__(
            loss, level=level, gamma=gamma, optimizer=optimizer, lr=lr, batch_size=batch_size,
            device=device, target_update=None, warmup=0, update_ratio=1.0,
            max_grad_norm=max_grad_norm, compile=compile,
        )

    # ----------------------------------------------------------------------------- setup
    def _make_buffer(self, buffer: ReplayBuffer | None, buffer_size: int) -> None:
        """No replay buffer: the learner holds the trajectories since its last update."""
        return None

    def _set_value_estimator(self) -> None:
        """GAE at the level's gamma and ``lmbda`` for losses that default to it (PPO, A2C);
        TD(0) at the level's gamma for losses with their own one-step targets."""
        self._warn_if_gamma_replaced()
        if getattr(self.loss, "default_value_estimator", None) == ValueEstimators.GAE:
            self.loss.make_value_estimator(ValueEstimators.GAE, gamma=self.gamma, lmbda=self.lmbda)
            self.advantage_module = self.loss.value_estimator
        else:
            try:
                self.loss.make_value_estimator(ValueEstimators.TD0, gamma=self.gamma)
            except NotImplementedError as err:
                raise ValueError(
                    f"{type(self.loss).__name__} neither defaults to GAE (as ClipPPOLoss and "
                    "A2CLoss do) nor takes a TD0 estimator for its own targets; an on-policy "
                    f"learner cannot discount it by gamma**steps_to_next_obs: {err}"
                ) from err
            self.advantage_module = None
        self.steps_key = self.loss.value_estimator.tensor_keys.steps_to_next_obs

    # ----------------------------------------------------------------------------- counts
    @property
    def n_transitions(self) -> int:
        """Transitions received so far (reading it counts the held ones: a device sync)."""
        return self._counted + self._held_count()

    @n_transitions.setter
    def n_transitions(self, value: int) -> None:
        self._counted = int(value) - self._held_count()

    @property
    def updates_owed(self) -> int:
        """Gradient steps the next :meth:`update` takes (0 below ``min_transitions``)."""
        held = self._held_count()
        if held < max(self.min_transitions, 1):
            return 0
        return self.epochs * math.ceil(held / self.batch_size)

    def _held_count(self) -> int:
        return 0 if self._held_total is None else int(self._held_total)

    # ----------------------------------------------------------------------------- learning
    def extend(self, trajectories: TensorDictBase) -> None:
        """Holds a level's trajectories (``[instances, T]`` with a ``"mask"``, as
        ``hierarchy.trajectories(batch)[name]`` gives them; unpacked ones, one entry per env
        step, are accepted too) until the next update."""
        if (
            not isinstance(trajectories, TensorDictBase)
            or trajectories.batch_dims != 2
            or TRAJECTORY_MASK not in trajectories.keys()
        ):
            got = (
                f"a TensorDict of shape {tuple(trajectories.batch_size)} with keys "
                f"{sorted(trajectories.keys())}"
                if isinstance(trajectories, TensorDictBase)
                else type(trajectories).__name__
            )
            raise TypeError(
                "An on-policy learner learns from a level's trajectories: a [instances, time] "
                f"TensorDict with a {TRAJECTORY_MASK!r} entry, as hierarchy.trajectories(batch)"
                f"[name] gives them (not hierarchy.transitions(batch)); got {got}."
            )
        valid = trajectories.get(TRAJECTORY_MASK)
        td = self._check_transitions(trajectories, valid)
        if self._held and td.shape[0] != self._held[0].shape[0]:
            raise ValueError(
                f"These trajectories have {td.shape[0]} rows (env instances) but the learner "
                f"holds trajectories of {self._held[0].shape[0]}: rows are instances, so they "
                "cannot be joined. Call update() before changing the number of env instances."
            )
        if td.shape[1] == 0:
            return
        if td.device != self.device:
            td = td.to(self.device)
        self._schema = set(td.keys(include_nested=True, leaves_only=True))
        self._note_non_finite(td)
        self._held.append(td)
        count = td.get(TRAJECTORY_MASK).sum()
        self._held_total = count if self._held_total is None else self._held_total.add_(count)

    def update(self) -> dict[str, float]:
        """``epochs`` passes of minibatch gradient steps over the held trajectories, once they
        hold ``min_transitions``; returns the mean of each loss term and scalar output (e.g.
        ``kl_approx``, ``entropy``), or ``{}`` when it did not update."""
        held = self._held_count()
        if held < self.min_transitions or held == 0:
            return {}
        joined = torch.cat(self._held, dim=1) if len(self._held) > 1 else self._held[0]
        data = pack_trajectories(joined, joined.get(TRAJECTORY_MASK))
        self._counted += held
        self._held, self._held_total = [], None
        return self._run_steps(self._minibatches(data))

    def _minibatches(self, data: TensorDict) -> Iterator[TensorDictBase]:
        valid = data.get(TRAJECTORY_MASK)
        for _ in range(self.epochs):
            flat = self.advantages(data)[valid]
            order = torch.randperm(flat.shape[0], device=flat.device)
            yield from (flat[rows] for rows in order.split(self.batch_size))

    @torch.no_grad()
    def advantages(self, trajectories: TensorDictBase) -> TensorDictBase:
        """``trajectories`` (packed, ``[instances, T]``) with GAE's ``advantage`` and
        ``value_target`` (a shallow copy; the input is not modified), at the level's gamma per
        env step and ``lmbda`` per transition. Each row's last transition ends the rollout:
        GAE bootstraps it from its next observation and does not look past it, whatever its
        done flags say. Losses without GAE get the trajectories unchanged."""
        if self.advantage_module is None:
            return trajectories
        valid = trajectories.get(TRAJECTORY_MASK)
        cut = valid & ~F.pad(valid[:, 1:], (0, 1), value=False)
        view = trajectories.clone(False)
        done = view.get(("next", "done"))
        view.set(("next", "done"), done | cut.reshape(done.shape))
        return self.advantage_module(view)

    # ----------------------------------------------------------------------------- state
    def state_dict(self, include_buffer: bool = False) -> dict[str, Any]:
        """As :meth:`LevelLearner.state_dict`, plus ``lmbda``, and as ``"buffer"`` the held (not
        yet learnt) trajectories, whatever ``include_buffer`` says: at most one update's worth,
        and a resumed run that lacked them would learn from other data."""
        state = super().state_dict(include_buffer=False)
        state["lmbda"] = self.lmbda
        state["buffer"] = None
        if self._held:
            joined = torch.cat(self._held, dim=1)
            state["buffer"] = {"data": joined.to_dict(), "batch_size": list(joined.batch_size)}
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores what :meth:`state_dict` saved, the held trajectories included."""
        self._held, self._held_total = [], None
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "buffer"})
        held = state_dict.get("buffer")
        if held is not None:
            data = TensorDict.from_dict(
                held["data"], batch_size=held["batch_size"], device=self.device,
                auto_batch_size=False,
            )
            self._held, self._held_total = [data], data.get(TRAJECTORY_MASK).sum()
            self._counted -= self._held_count()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(loss={type(self.loss).__name__}, gamma={self.gamma}, "
            f"lmbda={self.lmbda}, epochs={self.epochs}, batch_size={self.batch_size}, "
            f"n_transitions={self.n_transitions}, n_updates={self.n_updates}, "
            f"held={self._held_count()})"
        )
