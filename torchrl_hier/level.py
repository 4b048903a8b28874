"""A level of a hierarchy: a TensorDictModule policy plus the small parts that define its SMDP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tensordict.nn import TensorDictModuleBase
from torch import Tensor
from torchrl.data import TensorSpec

from torchrl_hier.control import Always, LevelStep, ReturnControlRule

__all__ = ["Level", "OBSERVATION", "PARENT_ACTION", "ACTION"]

#: Keys of a level's own TensorDict: what its policy reads and writes, and what its
#: transitions hold.
OBSERVATION = "observation"
PARENT_ACTION = "parent_action"
ACTION = "action"


@dataclass(eq=False)
class Level:
    """One level of a hierarchy.

    Args:
        name: unique name; this level's pending action and start observation are carried as
            ``("hier", f"{name}_action")`` and ``("hier", f"{name}_observation")``.
        policy: a ``TensorDictModule`` reading ``"observation"`` (this level's mapped env
            observation) and, below the top, ``"parent_action"`` (the action of the level
            above), and writing ``"action"``.
        action_spec: the spec of the action it emits. ``None`` for the lowest level means the
            env's action spec.
        obs_map: maps the env observation to this level's observation (information hiding).
        obs_shape: the mapped observation's shape; a negative int ``-k`` means "the env
            observation with ``k`` fewer entries in its last dim" (LayeredRL's convention).
            ``None`` means the env observation's shape (or is inferred when a map is given).
        reward: per-env-step reward of this level, ``LevelStep -> Tensor[batch]``; ``None``
            uses the env reward. The level's transition reward is ``sum_k gamma**k r_k``.
        control: when this level hands control back to the level above (ignored on the top).
        gamma: the level's discount, used to accumulate its SMDP reward; losses of this level
            must use the same gamma and discount by ``gamma**steps_to_next_obs``.
        records: entries of the policy's output that a choice records for the level's learner,
            e.g. ``("action_log_prob",)`` for PPO/A2C (the sample log-prob of the choice). Above
            the lowest level each is carried from the choice on, like the pending action, as
            ``("hier", f"{name}_{record}")``; the lowest level writes them into the env
            TensorDict. The level's transitions hold them. Default: none (no carried cost).
    """

    name: str
    policy: TensorDictModuleBase
    action_spec: TensorSpec | None = None
    obs_map: Callable[[Tensor], Tensor] | None = None
    obs_shape: tuple[int, ...] | int | None = None
    reward: Callable[[LevelStep], Tensor] | None = None
    control: ReturnControlRule = field(default_factory=Always)
    gamma: float = 0.99
    records: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"A level needs a non-empty string name, got {self.name!r}.")
        if not isinstance(self.policy, TensorDictModuleBase):
            raise TypeError(
                f"Level {self.name!r}: policy must be a TensorDictModule (reading 'observation' "
                f"and 'parent_action', writing 'action'), got {type(self.policy).__name__}."
            )
        if not isinstance(self.control, ReturnControlRule):
            raise TypeError(
                f"Level {self.name!r}: control must be a ReturnControlRule such as Timeout(10), "
                f"got {type(self.control).__name__}."
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"Level {self.name!r}: gamma must be in [0, 1], got {self.gamma}.")
        records = (self.records,) if isinstance(self.records, str) else tuple(self.records)
        reserved = {OBSERVATION, PARENT_ACTION, ACTION}
        bad = [r for r in records if not isinstance(r, str) or not r or r in reserved]
        if bad or len(set(records)) != len(records):
            raise ValueError(
                f"Level {self.name!r}: records must be distinct entry names of the policy's "
                f"output other than {sorted(reserved)} (e.g. ('action_log_prob',)), got "
                f"{self.records!r}."
            )
        self.records = records

    def map_observation(self, observation: Tensor) -> Tensor:
        return observation if self.obs_map is None else self.obs_map(observation)
