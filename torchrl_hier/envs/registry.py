"""Tasks by name: the built-in batched mazes, your own factories, and gymnasium ids.

``make_env("GridMaze-FourRooms", batch_size=256, device="cuda", seed=0)`` builds a built-in
task; any gymnasium id (``"CartPole-v1"``, ``"Taxi-v4"``, ...) gives a TorchRL ``GymEnv``, or a
``SerialEnv`` of them for ``batch_size > 1`` (``GymEnv(num_envs=N)`` returns corrupted data with
gymnasium 1.4, so it is not used). ``register_env`` adds names for configs.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchrl.envs import EnvBase

from torchrl_hier.envs.grid_maze import GridMaze
from torchrl_hier.envs.point_maze import PointMaze
from torchrl_hier.errors import ConfigError

__all__ = ["make_env", "register_env", "list_envs", "EnvFactory"]

#: ``factory(batch_size=torch.Size, device=torch.device, seed=int | None, **kwargs) -> EnvBase``
EnvFactory = Callable[..., EnvBase]

_REGISTRY: dict[str, EnvFactory] = {}


def register_env(name: str, factory: EnvFactory, *, overwrite: bool = False) -> None:
    """Makes ``factory`` reachable as ``make_env(name, ...)``.

    ``factory`` is called as ``factory(batch_size=..., device=..., seed=..., **kwargs)`` and must
    return a TorchRL ``EnvBase`` with that batch size. Re-registering a name raises unless
    ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"An env name must be a non-empty string, got {name!r}.")
    if not callable(factory):
        raise TypeError(
            f"register_env({name!r}, factory): factory must be callable, got {factory!r}."
        )
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"An env named {name!r} is already registered; pass overwrite=True to replace it."
        )
    _REGISTRY[name] = factory


def list_envs() -> list[str]:
    """The registered names (built-in tasks and your own), sorted. Gymnasium ids are accepted by
    :func:`make_env` too but are not listed here (see ``gymnasium.registry``)."""
    return sorted(_REGISTRY)


def _batch_size(batch_size: int | Sequence[int]) -> torch.Size:
    size = torch.Size([batch_size] if isinstance(batch_size, int) else batch_size)
    if any(int(s) < 1 for s in size):
        raise ValueError(f"batch_size must contain positive ints, got {tuple(size)}.")
    return size


def make_env(
    name: str,
    batch_size: int | Sequence[int] = 1,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    **kwargs: Any,
) -> EnvBase:
    """Builds the task called ``name`` with ``batch_size`` instances on ``device``, seeded.

    ``name`` is a registered name (:func:`list_envs`) or a gymnasium id; ``kwargs`` go to the
    task's constructor (for gymnasium ids: to ``GymEnv``). ``batch_size`` is an int or a shape;
    for gymnasium ids an int ``N`` (or ``[N]``) gives a ``SerialEnv`` of ``N`` ``GymEnv`` (batch
    size ``[N]``, like the built-in tasks) and ``()`` a single unbatched ``GymEnv``.
    """
    size = _batch_size(batch_size)
    if name in _REGISTRY:
        env = _REGISTRY[name](batch_size=size, device=torch.device(device), seed=seed, **kwargs)
        if not isinstance(env, EnvBase) or env.batch_size != size:
            raise TypeError(
                f"The factory registered as {name!r} must return a TorchRL EnvBase of batch size "
                f"{tuple(size)}, got {type(env).__name__} "
                f"with batch size {tuple(getattr(env, 'batch_size', ()))}."
            )
        return env
    gym_ids = _gym_ids()
    if name in gym_ids:
        return _make_gym(name, size, device, seed, **kwargs)
    choices = list_envs()
    close = difflib.get_close_matches(name, choices + sorted(gym_ids), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ConfigError(
        f"Unknown env {name!r}.{hint} Registered names: {choices}; any gymnasium id "
        "(gymnasium.registry) works too, and register_env(name, factory) adds your own."
    )


def _gym_ids() -> set[str]:
    try:
        import gymnasium
    except ImportError:  # gymnasium is a dependency, but keep built-in tasks usable without it
        return set()
    return set(gymnasium.registry)


def _make_gym(
    name: str, size: torch.Size, device: torch.device | str, seed: int | None, **kwargs: Any
) -> EnvBase:
    from torchrl.envs import GymEnv, SerialEnv

    if len(size) > 1:
        raise ValueError(
            f"Gymnasium env {name!r} supports a 1-D batch_size (a SerialEnv of GymEnv) or () "
            f"(a single unbatched GymEnv) only, got {tuple(size)}."
        )
    if len(size) == 0:
        env: EnvBase = GymEnv(name, device=device, **kwargs)
    else:
        factory = functools.partial(GymEnv, name, device=device, **kwargs)
        env = SerialEnv(size[0], factory, device=device)
    if seed is not None:
        env.set_seed(seed)
    return env


def _register_builtins() -> None:
    grid = {
        # name: (rooms, room_size, max_steps, min path distance)
        "GridMaze-FourRooms": (2, 5, 100, 10),
        "GridMaze-9Rooms": (3, 5, 200, 16),
        "GridMaze-16Rooms": (4, 5, 300, 22),
        "GridMaze-25Rooms": (5, 5, 400, 28),
    }
    for name, (rooms, room_size, max_steps, min_distance) in grid.items():
        register_env(
            name,
            functools.partial(
                _grid_factory,
                rooms=rooms,
                room_size=room_size,
                max_steps=max_steps,
                min_distance=min_distance,
            ),
        )
    # the point-maze layouts as grids: name: (max_steps, min path distance)
    for layout, (max_steps, min_distance) in {
        "UMaze": (50, 4),
        "Medium": (100, 6),
        "Large": (150, 10),
    }.items():
        register_env(
            f"GridMaze-{layout}",
            functools.partial(
                _grid_factory, layout=layout, max_steps=max_steps, min_distance=min_distance
            ),
        )
    point = {
        # name: (layout, max_steps, min path distance in cells)
        "PointMaze-Open": ("Open", 100, 3),
        "PointMaze-UMaze": ("UMaze", 150, 4),
        "PointMaze-Medium": ("Medium", 300, 6),
        "PointMaze-Large": ("Large", 500, 10),
    }
    for name, (layout, max_steps, min_distance) in point.items():
        for control, suffix in (("velocity", ""), ("force", "-Force")):
            register_env(
                name + suffix,
                functools.partial(
                    PointMaze,
                    layout=layout,
                    control=control,
                    max_steps=max_steps,
                    min_distance=min_distance,
                ),
            )
    # gymnasium's MountainCarContinuous-v0 with HAC's fixed goal (envs.goal_env)
    register_env("MountainCarContinuous", _mountain_car)


def _mountain_car(**kwargs: Any) -> EnvBase:
    from torchrl_hier.envs.goal_env import mountain_car_hac

    return mountain_car_hac(**kwargs)


def _grid_factory(**kwargs: Any) -> GridMaze:
    kwargs.setdefault("distance", "path")
    return GridMaze(**kwargs)


_register_builtins()
