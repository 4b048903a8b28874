"""A batched TorchRL env whose every outcome is read from tables, so a test knows it all.

Rewards and episode ends are indexed by ``(instance, clock)``, where an instance's clock counts
the env steps it has taken since the env was built (resets do not advance it). The observation
spells out where the env is, so tests can recover any step's place from the data alone.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

__all__ = ["ScriptedEnv", "NONE", "TERMINATE", "TRUNCATE", "INSTANCE", "CLOCK", "STEP", "EPISODE"]

#: Codes of the ``ends`` table: what happens at the end of the step taken at a clock.
NONE, TERMINATE, TRUNCATE = 0, 1, 2
#: Entries of the observation: instance index, clock, step within the episode, episode index.
INSTANCE, CLOCK, STEP, EPISODE = 0, 1, 2, 3


class ScriptedEnv(EnvBase):
    """Rewards, terminations and truncations come from tables; actions are ignored.

    Args:
        rewards: float tensor ``[*batch, T]``: the reward of the step an instance takes at clock
            ``c`` is ``rewards[..., c % T]``.
        ends: int tensor ``[*batch, T]`` of :data:`NONE`, :data:`TERMINATE` or
            :data:`TRUNCATE`: how the step taken at clock ``c`` ends (``ends[..., c % T]``).
        action_dim: size of the (unbounded float) action, which the env records in
            :attr:`last_action` and otherwise ignores.

    The observation is ``(instance, clock, step, episode)`` as floats: the flat instance index,
    its clock, the steps taken in the current episode, and the episode's index (episodes of an
    instance are numbered from 0 by the steps that ended them). Partial resets (``"_reset"``)
    restart the episode of the flagged instances only; the clock never restarts.
    """

    def __init__(
        self,
        rewards: torch.Tensor,
        ends: torch.Tensor,
        action_dim: int = 3,
        device: torch.device | str = "cpu",
    ):
        if rewards.shape != ends.shape or rewards.ndim < 2:
            raise ValueError(
                "rewards and ends must share one shape [*batch, T] with at least one batch dim; "
                f"got {tuple(rewards.shape)} and {tuple(ends.shape)}."
            )
        if not torch.isin(ends, torch.tensor([NONE, TERMINATE, TRUNCATE])).all():
            raise ValueError("ends may only hold NONE (0), TERMINATE (1) or TRUNCATE (2).")
        batch_size = rewards.shape[:-1]
        super().__init__(batch_size=batch_size, device=device)
        self.rewards = rewards.to(self.device, torch.float32)
        self.ends = ends.to(self.device, torch.long)
        self.horizon = rewards.shape[-1]
        self.instance = torch.arange(batch_size.numel(), device=self.device).reshape(batch_size)
        self.clock = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.step_count = torch.zeros_like(self.clock)
        self.episode = torch.zeros_like(self.clock)
        self.last_action: torch.Tensor | None = None
        self.observation_spec = Composite(
            observation=Unbounded((*batch_size, 4), dtype=torch.float32, device=self.device),
            shape=batch_size,
        )
        self.action_spec = Unbounded(
            (*batch_size, action_dim), dtype=torch.float32, device=self.device
        )
        self.reward_spec = Unbounded((*batch_size, 1), dtype=torch.float32, device=self.device)
        flag = Categorical(2, (*batch_size, 1), dtype=torch.bool, device=self.device)
        self.full_done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=batch_size
        )

    def _observation(self) -> torch.Tensor:
        return torch.stack([self.instance, self.clock, self.step_count, self.episode], -1).float()

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        reset = None if tensordict is None else tensordict.get("_reset", None)
        if reset is None:
            self.step_count = torch.zeros_like(self.step_count)
        else:
            self.step_count = self.step_count.masked_fill(reset.reshape(self.batch_size), 0)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        return TensorDict(
            {
                "observation": self._observation(),
                "done": done,
                "terminated": done.clone(),
                "truncated": done.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self.last_action = tensordict.get("action").clone()
        index = (self.clock % self.horizon).unsqueeze(-1)
        reward = self.rewards.gather(-1, index)
        end = self.ends.gather(-1, index)
        terminated, truncated = end == TERMINATE, end == TRUNCATE
        done = terminated | truncated
        self.clock = self.clock + 1
        self.step_count = self.step_count + 1
        observation = self._observation()
        # The next episode gets the next index; the final observation keeps this one.
        self.episode = self.episode + done.squeeze(-1).long()
        return TensorDict(
            {
                "observation": observation,
                "reward": reward,
                "done": done,
                "terminated": terminated,
                "truncated": truncated,
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _set_seed(self, seed: int | None) -> None:
        """Nothing is random here."""
