"""Built-in batched tasks: GridMaze, PointMaze, layouts and the env registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch.utils._python_dispatch import TorchDispatchMode
from torchrl.envs import SerialEnv, TransformedEnv
from torchrl.envs.utils import check_env_specs, step_mdp

from torchrl_hier import Hierarchy, Timeout
from torchrl_hier.envs import (
    LAYOUTS,
    GridMaze,
    PointMaze,
    _render,
    doorways,
    list_envs,
    make_env,
    parse_layout,
    path_distances,
    register_env,
    registry,
    rooms_layout,
    wall_boxes,
)
from torchrl_hier.envs.hash_rng import EpisodeDraws
from torchrl_hier.envs.layouts import StartGoalSampler
from torchrl_hier.levels import random_level

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

UP, DOWN, LEFT, RIGHT = range(4)


def _actions(env, steps: int, seed: int = 0) -> torch.Tensor:
    """A fixed sequence of random actions for ``env`` (independent of the env's generator)."""
    g = torch.Generator().manual_seed(seed)
    shape = (steps, *env.batch_size)
    if isinstance(env, GridMaze):
        return torch.randint(4, shape, generator=g)
    return torch.rand(*shape, 2, generator=g) * 2 - 1


def _run(env, actions: torch.Tensor):
    """Steps ``env`` (auto-resetting finished instances) through ``actions``; stacked outputs."""
    td = env.reset()
    out = []
    for action in actions:
        td["action"] = action.to(env.device)
        step, td = env.step_and_maybe_reset(td)
        out.append(step.clone())
    return torch.stack(out, 0)


# ----------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "make",
    [
        lambda: GridMaze(batch_size=[4], seed=0),
        lambda: GridMaze(batch_size=[3], rooms=3, room_size=4, goal_keys=False),
        lambda: GridMaze(batch_size=(2, 3), rooms=(1, 3), distance="path", min_distance=6),
        lambda: GridMaze(batch_size=[2], layout="Large", distance="path"),
        lambda: PointMaze(batch_size=[4], seed=0),
        lambda: PointMaze(batch_size=[3], layout="Medium", control="force"),
        lambda: PointMaze(batch_size=(2, 2), layout=["####", "#S.#", "#.G#", "####"]),
    ],
)
def test_check_env_specs(make):
    env = make()
    check_env_specs(env)
    td = env.rollout(5, break_when_any_done=False)
    assert td.batch_size == (*env.batch_size, 5)
    obs = td["next", "observation"]
    assert env.observation_spec["observation"].is_in(obs[..., 0, :])


def test_grid_observation_is_unchanged_and_split_into_goal_keys():
    env = GridMaze(batch_size=[5], seed=1)
    td = env.reset()
    size = env.walls.shape[0] - 1
    torch.testing.assert_close(
        td["observation"], torch.cat([env.position, env.goal], -1).float() / size
    )
    torch.testing.assert_close(td["achieved_goal"], td["observation"][:, :2])
    torch.testing.assert_close(td["desired_goal"], td["observation"][:, 2:])
    assert "achieved_goal" not in GridMaze(batch_size=[2], goal_keys=False).reset().keys()


def test_point_observation_layout():
    env = PointMaze(batch_size=[3], control="force", seed=0)
    td = env.rollout(4)
    last = td[:, -1]["next"]
    assert last["observation"].shape == (3, 6)
    torch.testing.assert_close(last["observation"][:, :2], last["achieved_goal"])
    torch.testing.assert_close(last["observation"][:, 4:], last["desired_goal"])
    assert PointMaze(batch_size=[3]).reset()["observation"].shape == (3, 4)


# ----------------------------------------------------------------------------- layouts


def test_rooms_layout_four_rooms():
    walls = rooms_layout(2, 5)
    assert walls.shape == (13, 13)
    assert walls[0].all() and walls[:, 0].all() and walls[6, 1:6].sum() == 4  # one door
    assert (~walls).sum() == 104
    assert rooms_layout((2, 3), 3).shape == (9, 13)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_named_layouts_are_closed_and_connected(name):
    layout = parse_layout(name)
    walls = layout.walls
    assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
    assert (path_distances(walls, (~walls).nonzero()) >= 0).all()


def test_path_distances_umaze_and_disconnected():
    layout = parse_layout("UMaze")
    cells = (~layout.walls).nonzero()
    d = path_distances(layout.walls, cells)
    index = {tuple(c): i for i, c in enumerate(cells.tolist())}
    assert d[index[(1, 1)], index[(3, 1)]] == 6  # around the U, not through the wall
    assert d[index[(1, 1)], index[(1, 3)]] == 2
    assert (d == d.T).all() and (d.diagonal() == 0).all()
    split = parse_layout(["#####", "#.#.#", "#####"])
    d = path_distances(split.walls, (~split.walls).nonzero())
    assert d.tolist() == [[0, -1], [-1, 0]]


def test_start_goal_sampler_is_uniform_over_valid_pairs():
    pairs = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 1]], dtype=torch.bool)
    words = EpisodeDraws(40000, 2, seed=0)(torch.ones(40000, dtype=torch.bool))
    start, goal = StartGoalSampler(pairs)(words)
    assert pairs[goal, start].all()
    counts = torch.zeros(3, 3).index_put_((goal, start), torch.ones(40000), accumulate=True)
    assert (counts[pairs] / 40000 - 0.25).abs().max() < 0.02


@pytest.mark.parametrize(
    "layout, match",
    [
        ("Nope", "Unknown layout name"),
        (["###", "#x#", "###"], "Unknown layout characters"),
        (["###", "#.", "###"], "same length"),
        (["###", "###"], "no free cell"),
        (torch.zeros(3, 3), "bool wall mask"),
    ],
)
def test_bad_layouts(layout, match):
    with pytest.raises(ValueError, match=match):
        parse_layout(layout)


def test_min_distance_too_large_and_bad_distance():
    with pytest.raises(ValueError, match="min_distance=99"):
        GridMaze(batch_size=[2], min_distance=99)
    with pytest.raises(ValueError, match="'manhattan' or 'path'"):
        GridMaze(batch_size=[2], distance="euclid")


def test_bad_point_maze_arguments():
    with pytest.raises(ValueError, match="goal_radius"):
        PointMaze(goal_radius=0.0)
    with pytest.raises(ValueError, match="control"):
        PointMaze(control="torque")
    with pytest.raises(ValueError, match="jitter"):
        PointMaze(jitter=0.45, agent_radius=0.1)
    with pytest.raises(ValueError, match="max_steps"):
        GridMaze(max_steps=0)


@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
def test_start_and_goal_far_apart_by_path(cls):
    kwargs = {"distance": "path"} if cls is GridMaze else {}
    layout = "Large"
    env = cls(batch_size=[512], layout=layout, min_distance=10, seed=0, **kwargs)
    env.reset()
    cells = env.free_cells
    d = path_distances(env.walls, cells)
    lookup = torch.full(env.walls.shape, -1, dtype=torch.long)
    lookup[cells[:, 0], cells[:, 1]] = torch.arange(cells.shape[0])
    if cls is GridMaze:
        start, goal = env.position, env.goal
    else:  # (x, y) -> (row, col)
        start, goal = env.position.flip(-1).floor().long(), env.goal.flip(-1).floor().long()
    dist = d[lookup[start[:, 0], start[:, 1]], lookup[goal[:, 0], goal[:, 1]]]
    assert (dist >= 10).all()


def test_start_and_goal_cells_from_layout_markers():
    env = GridMaze(batch_size=[64], layout=["#####", "#S..#", "#..G#", "#####"], seed=0)
    env.reset()
    assert (env.position == torch.tensor([1, 1])).all()
    assert (env.goal == torch.tensor([2, 3])).all()


# ----------------------------------------------------------------------------- dynamics


def test_grid_walls_block_and_goal_terminates():
    env = GridMaze(batch_size=[2], layout=["####", "#SG#", "####"], max_steps=10)
    td = env.reset()
    for action in (UP, LEFT, DOWN):
        td["action"] = torch.full((2,), action)
        td = step_mdp(env.step(td))
        assert (env.position == torch.tensor([1, 1])).all()
        assert not td["done"].any() and not td["is_success"].any()
    td["action"] = torch.tensor([RIGHT, UP])
    out = env.step(td)["next"]
    assert out["is_success"].tolist() == [[True], [False]]
    assert out["terminated"].tolist() == [[True], [False]]
    assert out["reward"].tolist() == [[1.0], [0.0]]
    assert out["done"].tolist() == [[True], [False]]
    assert not out["truncated"].any()


def test_grid_truncates_after_max_steps():
    env = GridMaze(batch_size=[3], layout=["####", "#SG#", "####"], max_steps=3)
    td = env.reset()
    for _ in range(3):
        td["action"] = torch.full((3,), UP)
        stepped = env.step(td)
        out, td = stepped["next"], step_mdp(stepped)
    assert out["truncated"].all() and out["done"].all()
    assert not out["terminated"].any() and not out["is_success"].any()
    assert (out["reward"] == 0).all()


def test_wall_boxes_cover_walls_and_merge_rows():
    walls = parse_layout("UMaze").walls
    boxes = wall_boxes(walls)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()
    assert area == walls.sum()
    assert boxes.shape[0] < walls.sum()  # runs are merged


def test_point_walls_block_and_goal_reached():
    layout = ["#####", "#S.G#", "#####"]
    env = PointMaze(batch_size=[2], layout=layout, jitter=0.0, agent_radius=0.1, max_steps=100)
    env.reset()
    td = env.reset()
    assert torch.allclose(env.position, torch.tensor([1.5, 1.5]))
    for _ in range(10):  # push up into the wall at y = 1
        td["action"] = torch.tensor([[0.0, -1.0], [-1.0, 0.0]])
        td = step_mdp(env.step(td))
    assert torch.allclose(env.position[0], torch.tensor([1.5, 1.1]), atol=1e-3)
    assert torch.allclose(env.position[1], torch.tensor([1.1, 1.5]), atol=1e-3)
    assert not td["done"].any()
    success = torch.zeros(2, 1, dtype=torch.bool)
    for _ in range(20):
        td["action"] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
        stepped = env.step(td)
        out, td = stepped["next"], step_mdp(stepped)
        success |= out["is_success"]
        if out["done"][0]:
            break
    assert out["is_success"][0] and out["terminated"][0] and out["reward"][0] == 1.0
    assert not success[1]
    assert (env.goal_reached(env.position, env.goal)[0]).all()


def test_point_never_passes_through_walls_even_when_fast():
    env = PointMaze(batch_size=[64], layout="UMaze", max_speed=30.0, dt=0.1, seed=0)
    data = _run(env, _actions(env, 60))
    walls = env.walls
    before = data["achieved_goal"]
    after = data["next", "achieved_goal"]
    t = torch.linspace(0, 1, 101)[:, None, None]
    # the move goes along x first, then along y
    corner = torch.stack([after[..., 0], before[..., 1]], -1)
    leg_x = before + t[..., None] * (corner - before)
    leg_y = corner + t[..., None] * (after - corner)
    for points in (leg_x, leg_y):
        cells = points.floor().long()
        assert not walls[cells[..., 1], cells[..., 0]].any()
    assert (after - before).abs().max() > 1.0  # it really moved far in one step


def test_force_control_velocity_and_wall_stop():
    env = PointMaze(batch_size=[1], layout=["#####", "#S.G#", "#####"], control="force", jitter=0.0)
    td = env.reset()
    td["action"] = torch.tensor([[0.0, 1.0]])
    out = env.step(td)["next"]
    vy = out["observation"][0, 3]
    assert 0 < vy <= env.max_speed
    for _ in range(10):
        td = step_mdp(env.step(td))
        td["action"] = torch.tensor([[0.0, 1.0]])
    assert td["observation"][0, 3] == 0.0  # stopped by the wall below
    assert torch.allclose(env.position[0, 1], torch.tensor(1.9), atol=1e-3)


@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
def test_compute_reward_matches_env(cls):
    env = cls(batch_size=[32], layout="Open", seed=0, max_steps=20)
    data = _run(env, _actions(env, 60))
    nxt = data["next"]
    assert nxt["is_success"].any()
    reached = env.goal_reached(nxt["achieved_goal"], nxt["desired_goal"])
    assert torch.equal(reached, nxt["is_success"])
    torch.testing.assert_close(
        env.compute_reward(nxt["achieved_goal"], nxt["desired_goal"]), nxt["reward"]
    )


# ----------------------------------------------------------------------------- resets, seeds


@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
@pytest.mark.parametrize("batch_size", [(6,), (2, 3)])
def test_partial_reset_only_touches_masked_instances(cls, batch_size):
    env = cls(batch_size=batch_size, seed=0, max_steps=50)
    td = env.reset()
    for action in _actions(env, 3):
        td["action"] = action
        td = step_mdp(env.step(td))
    position, goal = env.position.clone(), env.goal.clone()
    observation = td["observation"].clone()
    mask = torch.tensor([True, False, True, False, False, True]).reshape(batch_size)
    td["_reset"] = mask[..., None]
    out = env.reset(td)
    keep = ~mask
    assert torch.equal(env.position[keep], position[keep])
    assert torch.equal(env.goal[keep], goal[keep])
    assert (env.elapsed[keep] == 3).all() and (env.elapsed[mask] == 0).all()
    assert torch.equal(out["observation"][keep], observation[keep])
    assert not torch.equal(env.goal[mask], goal[mask])  # resampled
    torch.testing.assert_close(
        out["achieved_goal"][mask], env._observation()["achieved_goal"][mask]
    )
    assert not out["done"][mask].any()  # the others keep their flags (one may have finished)


@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
def test_seeding_is_reproducible(cls):
    runs = []
    for seed in (3, 3, 4):
        env = cls(batch_size=[16], seed=seed, max_steps=15)
        runs.append(_run(env, _actions(env, 40)))
    assert torch.equal(runs[0]["next", "observation"], runs[1]["next", "observation"])
    assert not torch.equal(runs[0]["observation"][0], runs[2]["observation"][0])
    env.set_seed(3)  # reseeding replays the seed-3 run
    again = _run(env, _actions(env, 40))
    assert torch.equal(again["next", "observation"], runs[0]["next", "observation"])


_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    """splitmix64's output function on plain Python ints (Vigna's reference algorithm)."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _reference_words(seed: int, instance: int, episode: int, n: int) -> list[int]:
    """The draws of one episode start, as documented in EpisodeDraws, in plain Python."""
    key = _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ instance) ^ episode)
    return [_splitmix64(key ^ j) >> 1 for j in range(n)]


def _reference_episode(env, seed: int, instance: int, episode: int):
    """(start, goal) of an instance's ``episode``-th reset, from the env's tables (valid pairs,
    free cells) and the documented draws, computed in Python ints and numpy float32: no torch
    op and no device is involved, so an env that matches it gives these episodes anywhere."""
    sampler = env.sampler
    words = _reference_words(seed, instance, episode, 2 if isinstance(env, GridMaze) else 6)
    g = words[0] % sampler.goals.shape[0]
    k = words[1] % int(sampler.counts[g])
    start_cell = env.free_cells[int(sampler.starts[g, k])].tolist()
    goal_cell = env.free_cells[int(sampler.goals[g])].tolist()
    if isinstance(env, GridMaze):
        return start_cell, goal_cell

    def point(cell, pair):
        noise = [np.float32(w >> 39) * np.float32(2.0**-24) * np.float32(2) - np.float32(1) for w in pair]
        return [
            np.float32(c) + np.float32(0.5) + n * np.float32(env.jitter)
            for c, n in zip(cell[::-1], noise)
        ]

    return point(start_cell, words[2:4]), point(goal_cell, words[4:6])


@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
def test_episodes_follow_the_device_independent_reference_draws(cls):
    """Starts and goals, through full and partial resets, equal the plain-Python reference:
    they depend on (seed, instance, its episode count) only, not on a device's generator."""
    seed = 2**63 + 12345  # seeds are taken modulo 2**64
    env = cls(batch_size=[5], layout="Medium", seed=seed)
    episodes = [0] * 5
    masks = [None, [True, False, True, False, False], [False, True, True, False, True]]
    for mask in masks:
        td = None if mask is None else TensorDict({"_reset": torch.tensor(mask)[:, None]}, [5])
        env.reset(td)
        for b in range(5):
            if mask is not None and not mask[b]:
                continue
            start, goal = _reference_episode(env, seed, b, episodes[b])
            episodes[b] += 1
            if cls is GridMaze:
                assert env.position[b].tolist() == start and env.goal[b].tolist() == goal
            else:
                assert torch.equal(env.position[b], torch.tensor(np.array(start)))
                assert torch.equal(env.goal[b], torch.tensor(np.array(goal)))
    assert env.draws.episodes.tolist() == episodes


@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
def test_an_instance_episodes_do_not_depend_on_the_batch(cls):
    small, large = cls(batch_size=[2], seed=5), cls(batch_size=[7], seed=5)
    for _ in range(3):
        small.reset()
        large.reset()
        assert torch.equal(small.goal, large.goal[:2])
        assert torch.equal(small.position, large.position[:2])


@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
def test_state_dict_restores_mid_episode_state_and_draws(cls):
    """An env restored from ``state_dict()`` continues exactly as the original: same positions
    mid-episode and the same episodes after later resets."""
    env = cls(batch_size=[8], seed=1, max_steps=6)
    actions = _actions(env, 20)
    td = env.reset()
    for action in actions[:7]:
        td["action"] = action
        _, td = env.step_and_maybe_reset(td)
    saved = {k: v.clone() for k, v in env.state_dict().items()}
    carried = td.clone()  # what a collector carries to the next step
    rest = []
    for action in actions[7:]:
        td["action"] = action
        step, td = env.step_and_maybe_reset(td)
        rest.append(step["next", "observation"].clone())
    restored = cls(batch_size=[8], seed=99, max_steps=6)
    restored.load_state_dict(saved)
    td = carried
    for action, expected in zip(actions[7:], rest):
        td["action"] = action
        step, td = restored.step_and_maybe_reset(td)
        assert torch.equal(step["next", "observation"], expected)


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
def test_step_and_reset_are_vectorised(cls):
    """The number of tensor ops per step / reset does not grow with the number of instances."""
    counts = []
    for n in (2, 257):
        env = cls(batch_size=[n], seed=0)
        td = env.reset()
        td["action"] = env.action_spec.rand()
        td["_reset"] = torch.arange(n)[:, None] % 2 == 0
        with _CountOps() as ops:
            env._step(td)
            env._reset(td)
        counts.append(ops.count)
    assert counts[0] == counts[1]


# ----------------------------------------------------------------------------- rendering


def test_grid_render():
    env = GridMaze(batch_size=[3], seed=0)
    env.reset()
    frame = env.render(cell_px=8)
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
    assert frame.shape == (13 * 8, 13 * 8, 3)
    r, c = env.position[2].tolist()
    gr, gc = env.goal[2].tolist()
    frame = env.render(2, cell_px=8)
    assert tuple(frame[r * 8 + 4, c * 8 + 4]) == _render.AGENT
    assert tuple(frame[gr * 8 + 4, gc * 8 + 4]) == _render.GOAL
    assert tuple(frame[0, 0]) == _render.WALL
    with pytest.raises(IndexError, match="out of range"):
        env.render(3)


def test_point_render():
    env = PointMaze(batch_size=[2], layout="Medium", seed=0)
    env.reset()
    frame = env.render(-1, cell_px=10)
    assert frame.dtype == np.uint8 and frame.shape == (80, 80, 3)
    x, y = (env.position[1] * 10).long().tolist()
    assert tuple(frame[y, x]) == _render.AGENT


# ----------------------------------------------------------------------------- devices


@cuda
@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
def test_runs_on_cuda(cls):
    env = cls(batch_size=[8], device="cuda", seed=0)
    check_env_specs(env)
    td = env.rollout(20, break_when_any_done=False)
    assert td["next", "observation"].device.type == "cuda"
    assert env.render().shape[-1] == 3
    moved = cls(batch_size=[8], seed=0).to("cuda")
    assert moved.position.device.type == "cuda" and moved.rollout(5).device.type == "cuda"


@cuda
@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
def test_cuda_matches_cpu_dynamics(cls):
    cpu, gpu = (cls(batch_size=[64], device=d, seed=0, max_steps=1000) for d in ("cpu", "cuda"))
    cpu.reset()
    gpu.reset()
    gpu.position.copy_(cpu.position)
    gpu.goal.copy_(cpu.goal)
    for action in _actions(cpu, 30):
        a = cpu._step(TensorDict(action=action, batch_size=cpu.batch_size))
        b = gpu._step(TensorDict(action=action.cuda(), batch_size=gpu.batch_size))
        torch.testing.assert_close(a["observation"], b["observation"].cpu())
        assert torch.equal(a["is_success"], b["is_success"].cpu())


# ----------------------------------------------------------------------------- registry


def test_builtin_names_are_listed():
    names = list_envs()
    for name in (
        "GridMaze-FourRooms",
        "GridMaze-9Rooms",
        "PointMaze-UMaze",
        "PointMaze-UMaze-Force",
    ):
        assert name in names


@pytest.mark.parametrize("name", list_envs())
def test_make_builtin(name):
    env = make_env(name, batch_size=2, seed=0)
    assert env.batch_size == (2,)
    check_env_specs(env)
    assert "is_success" in env.observation_spec and "desired_goal" in env.observation_spec


def test_make_env_passes_kwargs_and_seed():
    a = make_env("GridMaze-FourRooms", batch_size=[4], seed=1, max_steps=7)
    b = make_env("GridMaze-FourRooms", batch_size=[4], seed=1, max_steps=7)
    assert a.max_steps == 7
    assert torch.equal(a.reset()["observation"], b.reset()["observation"])


def test_unknown_name_lists_choices():
    """A ConfigError (a ValueError): the trainer prints it as one ``Error:`` line."""
    from torchrl_hier.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'GridMaze-FourRooms'") as err:
        make_env("GridMaze-FourRoom")
    assert "PointMaze-UMaze" in str(err.value) and "register_env" in str(err.value)
    with pytest.raises(ValueError, match="Taxi-v4"):
        make_env("Taxi-v3")


def test_register_env(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def tiny(batch_size, device, seed, **kwargs):
        return GridMaze(batch_size=batch_size, rooms=1, room_size=3, device=device, seed=seed)

    register_env("Tiny", tiny)
    assert "Tiny" in list_envs()
    assert make_env("Tiny", batch_size=3).walls.shape == (5, 5)
    with pytest.raises(ValueError, match="already registered"):
        register_env("Tiny", tiny)
    register_env("Tiny", lambda batch_size, device, seed: GridMaze(batch_size=[1]), overwrite=True)
    with pytest.raises(TypeError, match="batch size"):
        make_env("Tiny", batch_size=3)
    with pytest.raises(TypeError, match="callable"):
        register_env("Bad", "not a factory")


def test_gym_ids():
    env = make_env("CartPole-v1", batch_size=2, seed=0)
    again = make_env("CartPole-v1", batch_size=2, seed=0)
    torch.testing.assert_close(env.reset()["observation"], again.reset()["observation"])
    assert isinstance(env, SerialEnv) and env.batch_size == (2,)
    check_env_specs(env)
    assert make_env("CartPole-v1", batch_size=()).batch_size == ()
    with pytest.raises(ValueError, match="1-D batch_size"):
        make_env("CartPole-v1", batch_size=(2, 2))
    env.close()
    again.close()


# ----------------------------------------------------------------------------- with a hierarchy


@pytest.mark.parametrize("name", ["GridMaze-FourRooms", "PointMaze-UMaze"])
def test_hierarchy_runs_on_builtin_tasks(name):
    torch.manual_seed(0)
    env = make_env(name, batch_size=4, seed=0, max_steps=20)
    goal_spec = env.observation_spec["desired_goal"]
    hierarchy = Hierarchy(
        [
            random_level("subgoal", goal_spec[0].clone()),
            random_level("primitive", env.action_spec_unbatched, control=Timeout(3), lowest=True),
        ],
        env,
    )
    tenv = TransformedEnv(env, hierarchy.transform)
    check_env_specs(tenv)
    rollout = tenv.rollout(50, hierarchy.policy, break_when_any_done=False)
    data = hierarchy.transitions(rollout)
    assert data["primitive"]["steps_to_next_obs"].sum() == 4 * 50


@pytest.mark.parametrize("name", ["GridMaze-UMaze", "PointMaze-Open-Force"])
def test_collector_batches_keep_goal_keys(name):
    from torchrl.collectors import Collector

    env = make_env(name, batch_size=8, seed=0, max_steps=20)
    collector = Collector(
        env,
        None,  # random policy
        frames_per_batch=8 * 25,
        total_frames=8 * 50,
        auto_register_policy_transforms=False,
    )
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2
    nxt = torch.cat([b["next"] for b in batches], 1)
    torch.testing.assert_close(
        env.compute_reward(nxt["achieved_goal"], nxt["desired_goal"]), nxt["reward"]
    )
    assert nxt["done"].any(1).all()  # every instance finished an episode within 20 steps...
    assert (nxt["done"].sum(1) >= 2).all()  # ...and the collector reset it and went on


def test_grid_maze_refuses_actions_outside_its_spec():
    env = GridMaze(batch_size=[2], seed=0)
    td = env.reset()
    td["action"] = torch.tensor([1, 7])
    with pytest.raises(RuntimeError, match=r"outside its spec Categorical\(4\)"):
        env.step(td)


# ----------------------------------------------------------------------------- four rooms options
def test_grid_maze_fixed_goal_and_its_errors():
    env = make_env("GridMaze-FourRooms", batch_size=[64], seed=0, goal=(6, 9), min_distance=1)
    data = _run(env, _actions(env, 200))
    goals = torch.cat([data["desired_goal"].reshape(-1, 2), data["next", "desired_goal"].reshape(-1, 2)])
    assert torch.equal(goals.unique(dim=0), (torch.tensor([[6.0, 9.0]]) / 12))
    assert data["next", "is_success"].any()
    assert len(data["observation"][:, :, :2].reshape(-1, 2).unique(dim=0)) > 50  # starts vary
    with pytest.raises(ValueError, match=r"goal=\(0, 0\) must be the \(row, col\) of a free cell"):
        make_env("GridMaze-FourRooms", goal=(0, 0))
    with pytest.raises(ValueError, match=r"goal=\(13, 1\)"):
        make_env("GridMaze-FourRooms", goal=(13, 1))
    with pytest.raises(ValueError, match="slip is the probability"):
        GridMaze(slip=1.5)
    with pytest.raises(ValueError, match=r"observation='pixels'; choose one of \['coordinates', 'onehot'\]"):
        GridMaze(observation="pixels")


def test_grid_maze_slips_to_another_move_with_its_probability():
    """With slip=1/3 a third of the moves go another way (never the intended one), the
    slips repeat with the seed, differ across seeds and continue exactly from a saved state."""
    layout = ["#########"] + ["#.......#"] * 7 + ["#########"]
    env = GridMaze(batch_size=[512], layout=layout, seed=0, slip=1 / 3, max_steps=1000)
    td = env.reset()
    g = torch.Generator().manual_seed(0)
    slipped, free_moves = 0, 0
    for _ in range(8):
        action = torch.randint(4, (512,), generator=g)
        before = env.position.clone()
        intended = before + env.moves[action]
        open_target = ~env.walls[intended[:, 0], intended[:, 1]]
        td["action"] = action
        td = step_mdp(env.step(td))
        moved = env.position - before
        free_moves += int(open_target.sum())
        went_elsewhere = open_target & (env.position != intended).any(-1)
        slipped += int(went_elsewhere.sum())
        assert (moved.abs().sum(-1) <= 1).all()  # one cell at most, slipped or not
    # 1/3, not 1/4: a slip draws among the other three moves only
    assert 0.30 < slipped / free_moves < 0.37, slipped / free_moves

    def positions(seed: int, steps: int = 30):
        env = GridMaze(batch_size=[8], seed=seed, slip=1 / 3, max_steps=500)
        td = env.reset()
        out = []
        for action in _actions(env, steps, seed=1):
            td["action"] = action
            td = step_mdp(env.step(td))
            out.append(env.position.clone())
        return torch.stack(out), env.state_dict()

    a, _ = positions(3)
    b, _ = positions(3)
    c, _ = positions(4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    first, state = positions(3, steps=10)
    assert torch.equal(first, a[:10])
    env = GridMaze(batch_size=[8], seed=3, slip=1 / 3, max_steps=500)
    env.load_state_dict(state)
    td = TensorDict({"observation": env._observation()["observation"]}, [8])
    rest = []
    for action in _actions(env, 30, seed=1)[10:]:
        td["action"] = action
        td = step_mdp(env.step(td))
        rest.append(env.position.clone())
    assert torch.equal(torch.stack(rest), a[10:])  # the slips continue from the saved state


def test_grid_maze_one_hot_observations():
    env = make_env("GridMaze-FourRooms", batch_size=[16], seed=0, observation="onehot")
    check_env_specs(env)
    n_free, n_goals = env.free_cells.shape[0], env.goal_cells.shape[0]
    assert n_free == 104 and env.observation_size == n_free + n_goals
    data = _run(env, _actions(env, 20))
    obs = data["next", "observation"]
    agent, goal = obs[..., :n_free], obs[..., n_free:]
    assert (agent.sum(-1) == 1).all() and (goal.sum(-1) == 1).all()
    cells = env.free_cells[agent.argmax(-1)]
    torch.testing.assert_close(cells.float() / 12, data["next", "achieved_goal"])
    torch.testing.assert_close(env.goal_cells[goal.argmax(-1)].float() / 12, data["next", "desired_goal"])
    fixed = make_env("GridMaze-FourRooms", batch_size=[2], goal=(6, 9), observation="onehot")
    assert fixed.observation_size == 104  # a single goal cell adds no entries
    assert torch.equal(fixed.cell_observations((6, 9)), torch.eye(104))
    coords = make_env("GridMaze-FourRooms", batch_size=[2], seed=0)
    coords.reset()
    expected = torch.cat([coords.free_cells / 12, (coords.goal[0] / 12).expand(104, 2)], -1)
    torch.testing.assert_close(coords.cell_observations(), expected.float())
    with pytest.raises(ValueError, match="is not one of this maze's goal cells"):
        fixed.cell_observations((1, 1))


def test_doorways_are_the_hallways():
    assert doorways(rooms_layout(2, 5)).nonzero().tolist() == [[3, 6], [6, 3], [6, 9], [9, 6]]
    assert int(doorways(rooms_layout(3, 5)).sum()) == 12
    assert not doorways(parse_layout("Open").walls).any()


@cuda
def test_slips_and_one_hot_cells_are_the_same_on_cuda():
    """The slips are counter-based draws too: one seed, the same slippery episodes on cuda."""
    cpu, gpu = (
        GridMaze(batch_size=[64], device=d, seed=5, slip=1 / 3, observation="onehot", max_steps=1000)
        for d in ("cpu", "cuda")
    )
    a = _run(cpu, _actions(cpu, 40))
    b = _run(gpu, _actions(cpu, 40))
    assert torch.equal(a["next", "observation"], b["next", "observation"].cpu())
