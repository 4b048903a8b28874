"""A HAM plus an env as an env whose step is one choice (TorchRL ``EnvBase`` and gymnasium).

Flat learners of any library can then learn one choice point of a HAM: each step takes the
choice, runs the machines (other choice points are decided by their own modules) and the env
until the instance reaches that choice point again or the episode ends, and reports the joint
state, the reward discounted inside the step (``sum_k gamma**k r_k`` with the choice point's
gamma) and τ, the number of env steps it took (``steps_to_next_obs``; use ``gamma**τ`` to
discount the next value; TorchRL's ``DQNLoss`` does so when the key is at a sample's root).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, OneHot, TensorSpec, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.utils import step_mdp

from torchrl_hier.collectors import reports_worker_errors
from torchrl_hier.ham import _keys as K
from torchrl_hier.ham.machines import ChoicePoint, HAMError
from torchrl_hier.ham.runtime import MachineRuntime, _describe, _to_python

if TYPE_CHECKING:
    from torchrl_hier.ham.ham import HAM

__all__ = ["HAMChoiceEnv", "HAMGymEnv"]

_MAX_EMPTY_EPISODES = 100


def _select_point(ham: HAM, choice: str | None) -> ChoicePoint:
    points = ham.choice_points
    if choice is None:
        if len(points) != 1:
            raise ValueError(
                f"The HAM has choice points {list(points)}; pass choice= to say which one the "
                "env's actions decide (the others are decided by their modules)."
            )
        return next(iter(points.values()))
    if choice not in points:
        raise KeyError(f"No choice point {choice!r}; the HAM has {list(points)}.")
    return points[choice]


class HAMChoiceEnv(EnvBase):
    """``env`` driven by ``ham``'s machines; one step = one choice of the choice point ``choice``.

    ``env`` must be unbatched (batch it with ``SerialEnv``/``ParallelEnv`` of these). The
    action spec is the choice point's spec. Observations: ``"observation"`` (through the choice
    point's ``obs_map``), ``"stack"``, ``"args"`` (if it has an args spec) and
    ``"steps_to_next_obs"`` (τ of the step just taken, int64 ``[1]``); the reward is discounted
    within the step. Rewards earned before the first choice of an episode are not reported.
    """

    def __init__(self, ham: HAM, env: EnvBase, choice: str | None = None):
        if tuple(env.batch_size) != ():
            raise ValueError(
                f"HAMChoiceEnv wraps an unbatched env (batch_size=[]), got {tuple(env.batch_size)}. "
                "Batch several HAMChoiceEnv with SerialEnv/ParallelEnv instead."
            )
        ham._freeze()
        super().__init__(batch_size=[], device=env.device)
        self.ham = ham
        self.base_env = env
        self.point = _select_point(ham, choice)
        self.runtime = MachineRuntime(ham, 1, external=self.point, record_events=False)
        point = self.point
        shape, dtype = point.mapped_observation
        observation = {
            K.OBSERVATION: Unbounded(shape, dtype=dtype),
            K.STACK: Unbounded((ham.max_depth,), dtype=torch.int64),
            K.STEPS_TO_NEXT_OBS: Unbounded((1,), dtype=torch.int64),
        }
        if point.args_spec is not None:
            observation[K.ARGS] = point.args_spec.clone()
        self.observation_spec = Composite(observation, shape=())
        self.action_spec = point.spec.clone()
        self.reward_spec = Unbounded((1,), dtype=ham.reward_dtype)
        flag = Categorical(2, (1,), dtype=torch.bool)
        self.full_done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=())
        self._td: TensorDictBase | None = None
        self._last: tuple[Any, list[int]] = (None, [0] * ham.max_depth)

    def _advance(self, restart: bool) -> tuple[float, int, TensorDictBase | None]:
        """Runs machines and env until the next external choice or the episode's end.

        Returns the discounted reward, τ, and the final ``"next"`` TensorDict if it ended.
        """
        ham, point = self.ham, self.point
        total, tau, gamma = 0.0, 0, point.gamma
        flags = [restart]
        while True:
            obs = self._td.get(ham.observation_key)
            out = self.runtime.step(obs.reshape(1, *obs.shape), flags)
            flags = None
            if out.waiting[0]:
                _, args, stack = self.runtime.waiting_state(0)
                self._last = (args, stack + [0] * (ham.max_depth - len(stack)))
                return total, tau, None
            self._td.set(ham.action_key, out.action[0])
            stepped = self.base_env.step(self._td)
            nxt = stepped.get("next")
            total += gamma**tau * float(nxt.get(ham.reward_key).sum())
            tau += 1
            if bool(nxt.get(ham.done_keys["done"]).any()):
                return total, tau, nxt
            self._td = step_mdp(stepped, keep_other=False, exclude_action=True)

    def _output(self, observation, reward: float, tau: int, final: TensorDictBase | None) -> TensorDictBase:
        ham, point = self.ham, self.point
        args, stack = self._last
        data = {
            K.OBSERVATION: point.map_observation(observation.reshape(1, *observation.shape))[0],
            K.STACK: torch.tensor(stack, dtype=torch.int64),
            K.STEPS_TO_NEXT_OBS: torch.tensor([tau], dtype=torch.int64),
            "reward": torch.tensor([reward], dtype=ham.reward_dtype),
        }
        for name, key in ham.done_keys.items():
            value = final.get(key, None) if final is not None else None
            data[name] = (
                value.reshape(1).to(torch.bool) if value is not None else torch.zeros(1, dtype=torch.bool)
            )
        if point.args_spec is not None:
            data[K.ARGS] = (
                torch.as_tensor(args, dtype=point.args_spec.dtype).reshape(point.args_spec.shape)
                if args is not None
                else point.args_spec.zero()
            )
        return TensorDict(data, batch_size=[], device=self.device)

    @reports_worker_errors
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        for _ in range(_MAX_EMPTY_EPISODES):
            self._td = self.base_env.reset()
            _, _, final = self._advance(restart=True)
            if final is None:
                out = self._output(self._td.get(self.ham.observation_key), 0.0, 0, None)
                out.exclude("reward", inplace=True)
                return out
        raise HAMError(
            f"{_MAX_EMPTY_EPISODES} episodes in a row ended before the machines reached choice "
            f"point {self.point.name!r}; HAMChoiceEnv cannot produce a first observation."
        )

    @reports_worker_errors
    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        point = self.point
        choice = tensordict.get("action")
        if tuple(choice.shape) != tuple(point.spec.shape) or not bool(point.spec.is_in(choice.to(point.spec.dtype))):
            raise HAMError(
                f"Choice {choice.tolist()!r} is outside the spec of choice point {point.name!r} "
                f"({_describe(point.spec)})."
            )
        self.runtime.choose(_to_python(point.spec, choice.reshape(1, *choice.shape), 1))
        reward, tau, final = self._advance(restart=False)
        observation = (final if final is not None else self._td).get(self.ham.observation_key)
        return self._output(observation, reward, tau, final)

    def _set_seed(self, seed: int | None) -> None:
        self.base_env.set_seed(seed)


class HAMGymEnv(gymnasium.Env):
    """:class:`HAMChoiceEnv` as a ``gymnasium.Env``, for learners of other libraries.

    ``env`` is an unbatched TorchRL env or a ``gymnasium.Env`` (wrapped with ``GymWrapper``,
    categorical actions). Observations are a ``Dict`` of numpy arrays; ``info["tau"]`` (also
    ``info["steps_to_next_obs"]``) is the number of env steps the choice took, and the reward
    is already discounted within the step by the choice point's gamma.
    """

    metadata = {"render_modes": []}

    def __init__(self, ham: HAM, env, choice: str | None = None):
        if isinstance(env, gymnasium.Env):
            from torchrl.envs import GymWrapper

            env = GymWrapper(env, categorical_action_encoding=True)
        self.env = HAMChoiceEnv(ham, env, choice=choice)
        spec = self.env.observation_spec
        self.observation_space = gymnasium.spaces.Dict(
            {key: _gym_space(spec[key], ham) for key in spec.keys() if key != K.STEPS_TO_NEXT_OBS}
        )
        self.action_space = _gym_space(self.env.action_spec, ham)

    def _observation(self, td: TensorDictBase) -> dict[str, Any]:
        out = {}
        for key, space in self.observation_space.spaces.items():
            value = td.get(key).numpy()
            out[key] = int(value) if isinstance(space, gymnasium.spaces.Discrete) else value.astype(space.dtype, copy=False)
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.env.set_seed(seed)
        return self._observation(self.env.reset()), {}

    def step(self, action):
        point = self.env.point
        td = TensorDict({"action": torch.as_tensor(np.asarray(action), dtype=point.spec.dtype)}, [])
        nxt = self.env.step(td).get("next")
        tau = int(nxt.get(K.STEPS_TO_NEXT_OBS))
        return (
            self._observation(nxt),
            float(nxt.get("reward")),
            bool(nxt.get("terminated")),
            bool(nxt.get("truncated")),
            {"tau": tau, "steps_to_next_obs": tau},
        )


def _gym_space(spec: TensorSpec, ham: HAM) -> gymnasium.Space:
    """A gymnasium space for a (simple) TorchRL spec."""
    np_dtype = torch.empty((), dtype=spec.dtype).numpy().dtype
    if isinstance(spec, Categorical) and not spec.shape:
        return gymnasium.spaces.Discrete(spec.space.n)
    if isinstance(spec, OneHot):
        return gymnasium.spaces.MultiBinary(spec.space.n)
    if isinstance(spec, Bounded):
        low, high = spec.space.low.numpy(), spec.space.high.numpy()
        return gymnasium.spaces.Box(low.astype(np_dtype), high.astype(np_dtype), dtype=np_dtype)
    if spec.dtype == torch.bool:
        return gymnasium.spaces.MultiBinary(list(spec.shape) or 1)
    if not spec.dtype.is_floating_point:
        info = np.iinfo(np_dtype)
        return gymnasium.spaces.Box(info.min, info.max, tuple(spec.shape), dtype=np_dtype)
    return gymnasium.spaces.Box(-np.inf, np.inf, tuple(spec.shape), dtype=np_dtype)
