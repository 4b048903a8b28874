"""HierarchyLearner: one LevelLearner per level, fed with ``hierarchy.transitions(batch)``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tensordict import TensorDictBase
from torchrl.objectives import LossModule

from torchrl_hier.hierarchy import Hierarchy
from torchrl_hier.learning.level_learner import LevelLearner
from torchrl_hier.transitions import level_trajectories, level_transitions

__all__ = ["HierarchyLearner"]


class HierarchyLearner(Mapping[str, LevelLearner]):
    """Routes each level's SMDP transitions to its learner and updates them all.

    Each level may use a different loss, buffer, warm-up and update ratio::

        learners = HierarchyLearner({"option": LevelLearner(dqn_loss, level=top),
                                     "primitive": LevelLearner(sac_loss, level=low)},
                                    hierarchy=hier)
        for batch in collector:
            learners.extend(hier.transitions(batch))
            logs = learners.update()      # {level name: {loss term: mean value}}

    Args:
        learners: ``{level name: LevelLearner}``.
        hierarchy: if given, every learner is checked against its level (gamma, and that the
            loss only reads entries the level's transitions hold), and every level must have a
            learner or be listed in ``frozen``.
        frozen: names of levels that deliberately do not learn (fixed or random policies):
            their transitions are ignored. Transitions of any other level without a learner
            raise, so nothing is dropped by mistake.
    """

    def __init__(
        self,
        learners: Mapping[str, LevelLearner],
        *,
        hierarchy: Hierarchy | None = None,
        frozen: Iterable[str] = (),
    ):
        learners = dict(learners)
        for name, learner in learners.items():
            if not isinstance(learner, LevelLearner):
                raise TypeError(
                    f"The learner of level {name!r} must be a LevelLearner, got "
                    f"{type(learner).__name__}."
                )
        self.frozen = frozenset(frozen)
        both = sorted(self.frozen & set(learners))
        if both:
            raise ValueError(f"Levels {both} have a learner but are also listed in frozen=.")
        if not learners:
            raise ValueError("HierarchyLearner needs at least one LevelLearner.")
        self.learners = learners
        self.hierarchy = hierarchy
        if hierarchy is not None:
            self._check_hierarchy(hierarchy)

    @classmethod
    def from_losses(
        cls,
        hierarchy: Hierarchy,
        losses: Mapping[str, LossModule],
        *,
        per_level: Mapping[str, Mapping[str, Any]] | None = None,
        frozen: Iterable[str] = (),
        **common: Any,
    ) -> HierarchyLearner:
        """Builds a ``LevelLearner(loss, level=level, **common, **per_level[name])`` for each
        level named in ``losses``."""
        per_level = dict(per_level or {})
        unknown = sorted((set(losses) | set(per_level)) - set(hierarchy.names))
        if unknown:
            raise KeyError(
                f"No level named {unknown} in the hierarchy (levels: {hierarchy.names})."
            )
        levels = {level.name: level for level in hierarchy.levels}
        learners = {
            name: LevelLearner(loss, level=levels[name], **{**common, **per_level.get(name, {})})
            for name, loss in losses.items()
        }
        return cls(learners, hierarchy=hierarchy, frozen=frozen)

    def _check_hierarchy(self, hierarchy: Hierarchy) -> None:
        names = hierarchy.names
        unknown = sorted((set(self.learners) | self.frozen) - set(names))
        if unknown:
            raise KeyError(f"No level named {unknown} in the hierarchy (levels: {names}).")
        untrained = [
            name for name in names if name not in self.learners and name not in self.frozen
        ]
        if untrained:
            raise ValueError(
                f"Levels {untrained} have no learner. Give them one, or list them in frozen= if "
                "they are not meant to learn."
            )
        for i, level in enumerate(hierarchy.levels):
            learner = self.learners.get(level.name)
            if learner is None:
                continue
            if learner.level is not None and learner.level is not level:
                raise ValueError(
                    f"The learner of {level.name!r} was built for another level "
                    f"({learner.level.name!r})."
                )
            LevelLearner._resolve_gamma(level, learner.gamma)
            learner.check_level_keys(
                has_parent=i > 0, name=f"level {level.name!r}", records=level.records
            )

    def extend(self, transitions: Mapping[str, TensorDictBase]) -> None:
        """Adds ``hierarchy.transitions(batch)`` (``{level name: transitions}``) to the buffers."""
        unknown = sorted(set(transitions) - set(self.learners) - self.frozen)
        if unknown:
            raise KeyError(
                f"Transitions of levels {unknown} have no learner (learners: "
                f"{sorted(self.learners)}, frozen: {sorted(self.frozen)}). Add a learner or list "
                "the level in frozen=."
            )
        for name, data in transitions.items():
            learner = self.learners.get(name)
            if learner is not None:
                learner.extend(data)

    def extend_batch(self, batch: TensorDictBase) -> None:
        """Adds what each learner reads from a collected batch, each extracted once: the
        level's transitions for off-policy learners, its trajectories for on-policy ones
        (:class:`~torchrl_hier.learning.OnPolicyLearner`). Needs ``hierarchy=``."""
        hierarchy = self.hierarchy
        if hierarchy is None:
            raise ValueError(
                "extend_batch extracts each level's data with the hierarchy: build the learners "
                "with HierarchyLearner(..., hierarchy=hier), or call "
                "extend(hier.transitions(batch)) / extend(hier.trajectories(batch)) yourself."
            )
        on_policy = [name for name, learner in self.learners.items() if learner.on_policy]
        off_policy = [name for name in self.learners if name not in on_policy]
        data: dict[str, TensorDictBase] = {}
        if off_policy:
            data.update(level_transitions(batch, hierarchy.levels, hierarchy.keys, off_policy))
        if on_policy:
            data.update(level_trajectories(batch, hierarchy.levels, hierarchy.keys, on_policy))
        self.extend(data)

    def update(self) -> dict[str, dict[str, float]]:
        """Updates every level; returns ``{level name: its mean losses}`` for the levels that
        took gradient steps."""
        out = {}
        for name, learner in self.learners.items():
            logs = learner.update()
            if logs:
                out[name] = logs
        return out

    @property
    def n_transitions(self) -> dict[str, int]:
        return {name: learner.n_transitions for name, learner in self.learners.items()}

    @property
    def n_updates(self) -> dict[str, int]:
        return {name: learner.n_updates for name, learner in self.learners.items()}

    def state_dict(self, include_buffers: bool = False) -> dict[str, Any]:
        return {
            name: learner.state_dict(include_buffer=include_buffers)
            for name, learner in self.learners.items()
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if set(state_dict) != set(self.learners):
            raise KeyError(
                f"The saved learners are for levels {sorted(state_dict)}, these are for "
                f"{sorted(self.learners)}."
            )
        for name, learner in self.learners.items():
            learner.load_state_dict(state_dict[name])

    def __getitem__(self, name: str) -> LevelLearner:
        return self.learners[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.learners)

    def __len__(self) -> int:
        return len(self.learners)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}: {learner!r}" for name, learner in self.learners.items())
        return f"{type(self).__name__}({inner})"
