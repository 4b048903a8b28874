"""gymnasium-robotics goal tasks (``PointMaze_*``, ``AntMaze_*``, ...) as batched TorchRL envs.

These MuJoCo tasks return dict observations ``observation`` / ``achieved_goal`` /
``desired_goal`` (float64) and report success in ``info``. :func:`robotics_goal_env` runs
``n`` instances in one gymnasium ``SyncVectorEnv`` (autoreset off: TorchRL resets finished
instances through ``"_reset"``) behind TorchRL's ``GymWrapper``, which writes the dict's entries
under their own keys, and converts them for the hierarchy's goal machinery:

- every entry is cast to float32 (``DoubleToFloat``);
- ``desired_goal`` is appended to ``observation`` (``CatTensors``), so a level's observation
  holds its goal, as in the built-in tasks, and hindsight relabelling rewrites it there (at
  ``task.goal.desired_indices``); ``achieved_goal``/``desired_goal`` stay as entries;
- the env's own success flag (``info["success"]`` for the mazes: goal within 0.45) becomes the
  ``"is_success"`` entry (bool ``[*batch, 1]``) that training and evaluation report, read by
  :class:`InfoSuccessReader` through ``GymWrapper.set_info_dict_reader``.

Needs the ``robotics`` extra: ``pip install 'torchrl_hier[robotics]'`` (``make install`` installs
it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.data import Categorical, Composite
from torchrl.envs import CatTensors, Compose, DoubleToFloat, EnvBase, TransformedEnv
from torchrl.envs.gym_like import BaseInfoDictReader

from torchrl_hier.errors import ConfigError

__all__ = ["robotics_goal_env", "InfoSuccessReader", "require_gymnasium_robotics"]

#: how to install what this module needs
INSTALL_HINT = (
    "pip install 'torchrl_hier[robotics]' (gymnasium-robotics and MuJoCo; `make install` "
    "installs the extra)"
)
GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
SUCCESS = "is_success"


def require_gymnasium_robotics() -> None:
    """Imports gymnasium-robotics and registers its envs with gymnasium; raises an
    ``ImportError`` that says which extra to install when it is missing."""
    try:
        import gymnasium
        import gymnasium_robotics
    except ImportError as err:
        raise ImportError(
            f"gymnasium-robotics tasks need the gymnasium-robotics package ({err}); install it "
            f"with {INSTALL_HINT}."
        ) from err
    gymnasium.register_envs(gymnasium_robotics)


class InfoSuccessReader(BaseInfoDictReader):
    """Reads the env's success flag ``info[info_key]`` (one bool per instance of a vector env)
    into the bool entry ``"is_success"`` of shape ``[*batch_size, 1]``.

    Register it with ``GymWrapper.set_info_dict_reader``; instances that a partial reset left
    alone get ``False`` from gymnasium, and TorchRL keeps their previous entries anyway.
    """

    def __init__(self, batch_size: torch.Size, info_key: str = "success", out_key: str = SUCCESS):
        self.batch_size = torch.Size(batch_size)
        self.info_key = info_key
        self.out_key = out_key
        self._spec = Composite(
            {out_key: Categorical(2, (*self.batch_size, 1), dtype=torch.bool)},
            shape=self.batch_size,
        )

    def __call__(self, info_dict: dict[str, Any], tensordict: TensorDictBase) -> TensorDictBase:
        value = info_dict.get(self.info_key)
        if value is None:
            raise KeyError(
                f"The env's info has no {self.info_key!r} entry (it has {sorted(info_dict)}); "
                "pass the key under which it reports success as success_key= (task.kwargs)."
            )
        flag = torch.as_tensor(np.asarray(value, dtype=bool), device=tensordict.device)
        tensordict.set(self.out_key, flag.reshape(*self.batch_size, 1))
        return tensordict

    @property
    def info_spec(self) -> Composite:
        return self._spec


def _make_one(name: str, max_episode_steps: int | None, kwargs: dict[str, Any]):
    import gymnasium

    if max_episode_steps is not None:
        kwargs = {**kwargs, "max_episode_steps": int(max_episode_steps)}
    env = gymnasium.make(name, **kwargs)
    _remove_maze_model_file(env.unwrapped)
    return env


def _remove_maze_model_file(env: Any) -> None:
    """Deletes the MuJoCo model file a gymnasium-robotics maze wrote for itself.

    gymnasium-robotics 1.4's v4+ mazes (``PointMaze_*-v3``, ``AntMaze_*-v4/v5``) write each
    instance's model to ``<tmp>/ant_maze<time>.xml``, beside the temporary directory they mean
    to use rather than inside it, and never delete it: one file per instance, left in the
    system's temp directory. The model is loaded when the env is built, so the file is not
    needed afterwards. The older mazes (``AntMaze_*-v3``) share one fixed ``ant_maze.xml``
    that another process may be about to load: that one stays."""
    path = getattr(env, "tmp_xml_file_path", None)
    if (
        path
        and os.path.dirname(path) == tempfile.gettempdir()
        and re.fullmatch(r"ant_maze\d+(\.\d+)?\.xml", os.path.basename(path))
    ):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def robotics_goal_env(
    name: str,
    batch_size: int | Sequence[int] = 1,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    *,
    max_episode_steps: int | None = None,
    success_key: str = "success",
    goal_in_observation: bool = True,
    **make_kwargs: Any,
) -> EnvBase:
    """``batch_size`` instances of the gymnasium-robotics goal env ``name`` as one TorchRL env.

    Args:
        name: a gymnasium-robotics id, e.g. ``"PointMaze_Medium-v3"``.
        batch_size: the number of instances (an int or a 1-D shape).
        device: where the env's outputs live (the physics steps on the CPU).
        seed: seeds instance ``i`` with ``seed + i`` (gymnasium's vector-env seeding).
        max_episode_steps: the episode limit (truncation); ``None``: the id's registered one.
        success_key: the ``info`` entry with the env's success flag (``"success"`` for the
            mazes, ``"is_success"`` for Fetch/Shadow hand); written as ``"is_success"``.
        goal_in_observation: append ``desired_goal`` to ``observation`` (the goal indices of
            the task's ``goal`` block then point after the env's own observation).
        make_kwargs: passed to ``gymnasium.make`` (e.g. ``continuing_task=False`` so that
            reaching the maze goal ends the episode, ``reward_type="dense"``).

    The observation entries are float32; ``"achieved_goal"``/``"desired_goal"`` keep the env's
    values and ``"is_success"`` is the env's own criterion.
    """
    require_gymnasium_robotics()
    import gymnasium
    from gymnasium.vector import AutoresetMode, SyncVectorEnv
    from torchrl.envs import GymWrapper

    size = torch.Size([batch_size] if isinstance(batch_size, int) else batch_size)
    if len(size) != 1 or size[0] < 1:
        raise ConfigError(
            f"gymnasium-robotics task {name!r} takes a 1-D batch of instances (task.n_envs), "
            f"got batch_size={tuple(size)}."
        )
    if name not in gymnasium.registry:
        raise ConfigError(
            f"{name!r} is not a gymnasium(-robotics) id; pick one of gymnasium.registry, e.g. "
            "PointMaze_UMaze-v3, PointMaze_Medium-v3 or AntMaze_Medium-v5."
        )
    factory = functools.partial(_make_one, name, max_episode_steps, dict(make_kwargs))
    vector = SyncVectorEnv([factory] * int(size[0]), autoreset_mode=AutoresetMode.DISABLED)
    base = GymWrapper(vector, device=device)
    keys = set(base.observation_spec.keys())
    missing = [key for key in GOAL_KEYS if key not in keys]
    if missing:
        base.close()
        raise ConfigError(
            f"{name!r} is not a goal env: its observation has {sorted(keys)}, but a goal task "
            f"needs {list(GOAL_KEYS)} (gymnasium-robotics' PointMaze_*, AntMaze_*, Fetch*)."
        )
    base.set_info_dict_reader(InfoSuccessReader(base.batch_size, success_key))
    transforms = [DoubleToFloat(in_keys=list(GOAL_KEYS))]
    if goal_in_observation:
        # sort=False: the env's observation first, then the goal
        transforms.append(
            CatTensors(
                ["observation", "desired_goal"], "observation", del_keys=False, sort=False
            )
        )
    env = TransformedEnv(base, Compose(*transforms))
    if seed is not None:
        env.set_seed(seed)
    return env
