"""LayeredRL's ``Collector``: steps a vector env with a LayeredRL-style :class:`Hierarchy`, feeds
the backward pass the *final* observation of each episode (not the reset one), learns, reports
statistics and evaluates a copy of the hierarchy in eval mode now and then.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchrl.envs import EnvBase
from tqdm import tqdm

from torchrl_hier.layered._specs import check_autoreset_mode, is_gym_vector_env
from torchrl_hier.layered.hierarchy import Hierarchy

__all__ = ["Collector"]

SUCCESS_KEYS = ("is_success", "success")


@dataclass
class _Step:
    """One vector step, as numpy arrays of length ``n`` except the observations."""

    obs: Any  # what the hierarchy acts on next (the reset observation where an episode ended)
    obs_transition: Any  # what the step reached (the final observation where an episode ended)
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray | None  # the episode's success where it ended and the env reported one
    success_mask: np.ndarray | None


def _success_from_info(info: dict, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    for key in SUCCESS_KEYS:
        if key in info:
            value = np.asarray(info[key]).reshape(n).astype(bool)
            mask = np.asarray(info.get(f"_{key}", np.ones(n, dtype=bool))).reshape(n)
            return value, mask
    return None, None


class _GymVectorRunner:
    """Steps a gymnasium vector env in SAME_STEP or DISABLED autoreset mode."""

    def __init__(self, env: Any):
        self.same_step = check_autoreset_mode(env)
        self.env = env
        self.n = int(env.num_envs)

    def reset(self, seed: int | None) -> Any:
        obs, _ = self.env.reset(seed=seed)
        return obs

    def step(self, action: Tensor) -> _Step:
        obs, reward, terminated, truncated, info = self.env.step(action.detach().cpu().numpy())
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        done = terminated | truncated
        if self.same_step:
            obs_transition = obs
            final = info.get("_final_obs")
            if final is not None and final.any():
                obs_transition = np.array(obs, copy=True)
                obs_transition[final] = np.stack(info["final_obs"][final])
            success, mask = _success_from_info(info.get("final_info", {}), self.n)
        else:
            obs_transition = obs
            success, mask = _success_from_info(info, self.n)
            if done.any():
                obs_transition = np.array(obs, copy=True)
                obs, _ = self.env.reset(options={"reset_mask": done})
        if mask is not None:
            mask = mask & done
        return _Step(obs, obs_transition, np.asarray(reward), terminated, truncated, success, mask)


class _TorchRLRunner:
    """Steps a TorchRL env with ``step_and_maybe_reset``: ``("next", obs)`` is the final
    observation, the returned root the reset one."""

    def __init__(self, env: EnvBase, observation_key):
        if len(env.batch_size) != 1:
            raise ValueError(
                f"The Collector needs a TorchRL env with batch_size=[n], got {tuple(env.batch_size)}."
            )
        self.env = env
        self.n = int(env.batch_size[0])
        self.observation_key = observation_key
        done_keys = {key if isinstance(key, str) else key[-1]: key for key in env.done_keys}
        self.terminated_key = done_keys.get("terminated", done_keys.get("done"))
        self.truncated_key = done_keys.get("truncated")
        self._td = None

    def reset(self, seed: int | None) -> Tensor:
        if seed is not None:
            self.env.set_seed(seed)
        self._td = self.env.reset()
        return self._td.get(self.observation_key)

    def _flag(self, td, key) -> np.ndarray:
        if key is None or key not in td.keys(True):
            return np.zeros(self.n, dtype=bool)
        return td.get(key).reshape(self.n).cpu().numpy().astype(bool)

    def step(self, action: Tensor) -> _Step:
        td = self._td
        td.set(self.env.action_key, action.to(td.device) if td.device is not None else action)
        td, next_root = self.env.step_and_maybe_reset(td)
        nxt = td.get("next")
        terminated = self._flag(nxt, self.terminated_key)
        truncated = self._flag(nxt, self.truncated_key)
        success, mask = None, None
        for key in SUCCESS_KEYS:
            if key in nxt.keys():
                success = nxt.get(key).reshape(self.n).cpu().numpy().astype(bool)
                mask = terminated | truncated
                break
        self._td = next_root
        reward = nxt.get(self.env.reward_key).reshape(self.n).cpu().numpy()
        return _Step(
            next_root.get(self.observation_key),
            nxt.get(self.observation_key),
            reward,
            terminated,
            truncated,
            success,
            mask,
        )


def _make_runner(env: Any, observation_key) -> _GymVectorRunner | _TorchRLRunner:
    if is_gym_vector_env(env):
        return _GymVectorRunner(env)
    if isinstance(env, EnvBase):
        return _TorchRLRunner(env, observation_key)
    raise TypeError(
        "The Collector steps a gymnasium.vector.VectorEnv or a torchrl.envs.EnvBase with "
        f"batch_size=[n]; got {type(env).__name__}."
    )


class _Episodes:
    """Per-instance running returns/lengths; records finished episodes (vectorised)."""

    def __init__(self, n: int):
        self.returns = np.zeros(n)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.finished_returns: list[float] = []
        self.finished_lengths: list[int] = []
        self.successes: list[bool] = []

    def step(self, step: _Step, record: np.ndarray | None = None) -> np.ndarray:
        """Adds a step; returns the done mask. ``record`` limits which ends are recorded."""
        self.returns += step.reward.reshape(-1)
        self.lengths += 1
        done = step.terminated | step.truncated
        if done.any():
            take = done if record is None else done & record
            self.finished_returns.extend(self.returns[take].tolist())
            self.finished_lengths.extend(self.lengths[take].tolist())
            if step.success is not None:
                self.successes.extend(step.success[take & step.success_mask].tolist())
            self.returns[done] = 0.0
            self.lengths[done] = 0
        return done

    def mark(self) -> tuple[int, int]:
        """Where the finished-episode records stand now, for :meth:`summary`."""
        return len(self.finished_returns), len(self.successes)

    def drop_running(self) -> None:
        """Forgets the episodes in flight (their env was reset)."""
        self.returns[:] = 0.0
        self.lengths[:] = 0

    def summary(self, since: tuple[int, int] = (0, 0)) -> dict[str, Any]:
        """Statistics of the episodes that finished after ``since`` (a :meth:`mark`)."""
        returns, lengths = self.finished_returns[since[0]:], self.finished_lengths[since[0]:]
        successes = self.successes[since[1]:]
        return {
            "episodes": len(returns),
            "episode_returns": list(returns),
            "episode_lengths": list(lengths),
            "mean_return": float(np.mean(returns)) if returns else float("nan"),
            "mean_length": float(np.mean(lengths)) if lengths else float("nan"),
            "success_rate": float(np.mean(successes)) if successes else None,
        }


class Collector:
    """Collects experience with a LayeredRL-style :class:`Hierarchy` and trains it::

        hierarchy.train()
        collector = Collector(hierarchy=hierarchy, env=env, eval_env=eval_env, eval_every=1000)
        collector.reset(seed=0)
        stats = collector.collect(n_steps=10_000, learn=True)

    Args:
        hierarchy: the hierarchy acting in ``env`` (sized for its number of instances).
        env: a gymnasium vector env in ``SAME_STEP`` (or ``DISABLED``) autoreset mode, or a
            TorchRL env with batch size ``[n]``.
        eval_env: where evaluations run; without one they run on ``env`` and each evaluation
            ends the training episodes in flight (the env and hierarchy are reset afterwards,
            and the unfinished transitions of those episodes are lost).
        eval_every: vector steps between evaluations during :meth:`collect` (``None``: never).
        eval_episodes: episodes per evaluation, spread evenly over the eval env's instances
            (so short episodes are not over-represented).
        eval_max_steps: vector steps after which an evaluation stops even if episodes are
            still running (it warns and reports the episodes that finished).
        progress: show a tqdm progress bar in :meth:`collect`.
        writer: a TensorBoard ``SummaryWriter``; defaults to the hierarchy's.
        observation_key: for a TorchRL env, the observation entry the hierarchy acts on.
    """

    def __init__(
        self,
        hierarchy: Hierarchy,
        env: Any,
        eval_env: Any | None = None,
        eval_every: int | None = None,
        eval_episodes: int = 10,
        eval_max_steps: int = 10_000,
        progress: bool = True,
        writer: Any | None = None,
        observation_key="observation",
    ):
        if not isinstance(hierarchy, Hierarchy):
            raise TypeError(
                "hierarchy must be a torchrl_hier.layered.Hierarchy, got "
                f"{type(hierarchy).__name__}. For a torchrl_hier.Hierarchy use a TorchRL "
                "collector with hierarchy.policy and TransformedEnv(env, hierarchy.transform)."
            )
        self.hierarchy = hierarchy
        self.runner = _make_runner(env, observation_key)
        if self.runner.n != hierarchy.n_env_instances:
            raise ValueError(
                f"The env has {self.runner.n} instances but the hierarchy is sized for "
                f"{hierarchy.n_env_instances}; call hierarchy.set_n_env_instances({self.runner.n})."
            )
        self.eval_runner = None if eval_env is None else _make_runner(eval_env, observation_key)
        self.eval_every = _check_optional_positive(eval_every, "eval_every")
        self.eval_episodes = _check_positive(eval_episodes, "eval_episodes")
        self.eval_max_steps = _check_positive(eval_max_steps, "eval_max_steps")
        if self.eval_every is not None and eval_env is None:
            warnings.warn(
                "Collector: evaluations run on the training env (no eval_env given), so each "
                "one ends the training episodes in flight; pass eval_env= to avoid that.",
                UserWarning,
                stacklevel=2,
            )
        self.progress = progress
        self.writer = writer if writer is not None else hierarchy.writer
        self.vector_steps = 0
        self._obs = None
        self._episodes: _Episodes | None = None
        self._eval_seed: int | None = None

    @property
    def env_steps(self) -> int:
        """Env transitions collected so far (vector steps x instances)."""
        return self.vector_steps * self.runner.n

    def reset(self, seed: int | None = None) -> None:
        """Resets the env (with ``seed``) and the hierarchy; call it before :meth:`collect`."""
        self._obs = self.runner.reset(seed)
        self.hierarchy.reset()
        self._episodes = _Episodes(self.runner.n)
        if seed is not None:
            self._eval_seed = seed + 1

    def collect(self, n_steps: int, learn: bool = True, progress: bool | None = None) -> dict[str, Any]:
        """Runs ``n_steps`` vector steps (``n_steps * n`` env transitions).

        Returns statistics of the episodes that ended during the call (``episode_returns``,
        ``episode_lengths``, ``mean_return``, ``mean_length``, ``success_rate`` when the env
        reports ``is_success``), ``steps_per_second`` (env transitions per second, evaluation
        time excluded), ``transitions`` (completed transitions per level), ``losses`` (mean of
        each level's losses when learning) and ``evaluations``.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps <= 0:
            raise ValueError(
                f"n_steps must be a positive int (vector steps; each steps all {self.runner.n} "
                f"env instances), got {n_steps!r}."
            )
        if self._obs is None:
            raise RuntimeError("collect() was called before reset(): call collector.reset(seed=...).")
        hierarchy = self.hierarchy
        if learn and not hierarchy.training:
            raise RuntimeError(
                "collect(learn=True) with the hierarchy in eval mode: call hierarchy.train() "
                "first, or pass learn=False."
            )
        episodes = self._episodes
        since = episodes.mark()
        counts_before = hierarchy.n_transitions
        loss_sums: dict[str, dict[str, float]] = {}
        loss_counts: dict[str, dict[str, int]] = {}
        evaluations = []
        eval_time = 0.0
        start = time.perf_counter()
        bar = tqdm(
            total=int(n_steps),
            disable=not (self.progress if progress is None else progress),
            unit="step",
            desc="collect",
        )
        try:
            for _ in range(int(n_steps)):
                with torch.no_grad():
                    action = hierarchy.get_action(self._obs)
                step = self.runner.step(action)
                hierarchy.process_transition(
                    step.obs_transition, step.reward, step.terminated, step.truncated
                )
                if learn:
                    for name, logs in hierarchy.learn().items():
                        sums = loss_sums.setdefault(name, {})
                        counts = loss_counts.setdefault(name, {})
                        for key, value in logs.items():
                            sums[key] = sums.get(key, 0.0) + value
                            counts[key] = counts.get(key, 0) + 1
                self._obs = step.obs
                done = episodes.step(step)
                self.vector_steps += 1
                bar.update(1)
                if done.any():
                    self._log_episodes(episodes, done)
                    bar.set_postfix(mean_return=f"{np.mean(episodes.finished_returns[-100:]):.3g}")
                if self.eval_every is not None and self.vector_steps % self.eval_every == 0:
                    eval_start = time.perf_counter()
                    evaluations.append(self.evaluate())
                    eval_time += time.perf_counter() - eval_start
        finally:
            bar.close()
        elapsed = max(time.perf_counter() - start - eval_time, 1e-9)
        stats = self._episodes.summary(since)
        counts_after = hierarchy.n_transitions
        transitions = {name: counts_after[name] - counts_before[name] for name in counts_after}
        stats.update(
            vector_steps=int(n_steps),
            env_steps=int(n_steps) * self.runner.n,
            steps_per_second=int(n_steps) * self.runner.n / elapsed,
            transitions=transitions,
            losses={
                name: {key: sums[key] / loss_counts[name][key] for key in sums}
                for name, sums in loss_sums.items()
            },
            evaluations=evaluations,
        )
        return stats

    def _log_episodes(self, episodes: _Episodes, done: np.ndarray) -> None:
        if self.writer is None:
            return
        k = int(done.sum())
        step = self.env_steps
        self.writer.add_scalar("train/return", float(np.mean(episodes.finished_returns[-k:])), step)
        self.writer.add_scalar("train/episode_length", float(np.mean(episodes.finished_lengths[-k:])), step)

    def evaluate(self, n_episodes: int | None = None) -> dict[str, Any]:
        """Runs ``n_episodes`` (default ``eval_episodes``) episodes with a copy of the hierarchy
        in eval mode (deterministic actions, nothing fed to the learners) on the eval env."""
        n_episodes = _check_positive(
            self.eval_episodes if n_episodes is None else n_episodes, "n_episodes"
        )
        runner = self.eval_runner or self.runner
        hierarchy = self.hierarchy.get_copy()
        if runner.n != hierarchy.n_env_instances:
            hierarchy.set_n_env_instances(runner.n, propagate_to_levels=False)
        hierarchy.eval()
        m = runner.n
        quota = n_episodes // m + (np.arange(m) < n_episodes % m)
        finished = np.zeros(m, dtype=np.int64)
        episodes = _Episodes(m)
        obs = runner.reset(self._eval_seed)
        self._eval_seed = None
        hierarchy.reset()
        steps = 0
        while (finished < quota).any() and steps < self.eval_max_steps:
            with torch.no_grad():
                action = hierarchy.get_action(obs)
            step = runner.step(action)
            hierarchy.process_transition(
                step.obs_transition, step.reward, step.terminated, step.truncated
            )
            done = episodes.step(step, record=finished < quota)
            finished += done
            obs = step.obs
            steps += 1
        if (finished < quota).any():
            warnings.warn(
                f"Evaluation stopped after eval_max_steps={self.eval_max_steps} vector steps with "
                f"{int(np.minimum(finished, quota).sum())} of {n_episodes} episodes finished.",
                UserWarning,
                stacklevel=2,
            )
        self.hierarchy._sync_mode()  # the copy shares the modules: give them back their mode
        if runner is self.runner:
            # The evaluation used the training env: restart the training episodes.
            self._obs = self.runner.reset(None)
            self.hierarchy.reset()
            self._episodes.drop_running()
        result = episodes.summary()
        result["env_steps"] = self.env_steps
        if self.writer is not None:
            self.writer.add_scalar("eval/return", result["mean_return"], self.env_steps)
            if result["success_rate"] is not None:
                self.writer.add_scalar("eval/success_rate", result["success_rate"], self.env_steps)
        return result


def _check_positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive int, got {value!r}.")
    return int(value)


def _check_optional_positive(value: Any, what: str) -> int | None:
    return None if value is None else _check_positive(value, what)
