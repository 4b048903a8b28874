"""Adjacency-constrained lattice subgoals: ReachabilityMemory, its mask in the DQN subgoal
level's choices, exploration and bootstrap target."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import ObservationNorm, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_hier import Hierarchy
from torchrl_hier.envs import GridMaze
from torchrl_hier.levels import (
    ACTION_MASK,
    LevelEpisodes,
    MaskedQValues,
    PlannedSubgoals,
    ReachabilityMemory,
    SubgoalSpace,
    goal_conditioned_level,
    planned_subgoal_level,
    subgoal_level,
)

# displacements of -1, 0, 1 cell per axis: 9 lattice points, row-major
SPACE = SubgoalSpace((0, 1), -1.0, 1.0, relative=True, resolution=3)


def episodes(positions: list[list[tuple[float, float]]], tau: list[list[int]] | None = None):
    """Whole episodes of a level whose observation is its position: row t goes from
    positions[e][t] to positions[e][t + 1]."""
    obs, nxt, ep, steps = [], [], [], []
    for e, path in enumerate(positions):
        for t in range(len(path) - 1):
            obs.append(path[t])
            nxt.append(path[t + 1])
            ep.append(e)
            steps.append(1 if tau is None else tau[e][t])
    n = len(obs)
    return TensorDict(
        {"observation": torch.tensor(obs), "episode": torch.tensor(ep),
         "steps_to_next_obs": torch.tensor(steps).unsqueeze(-1),
         "next": {"observation": torch.tensor(nxt), "done": torch.zeros(n, 1, dtype=torch.bool)}},
        [n],
    )


def test_memory_records_pairs_within_steps_of_the_same_episode_exactly():
    memory = ReachabilityMemory(SPACE, 0, 4, steps=2)
    # (0,0) -> (0,1) -> (1,1) -> (2,1); another episode from (3,3) to (3,4)
    new = memory.update(episodes([[(0, 0), (0, 1), (1, 1), (2, 1)], [(3, 3), (3, 4)]]))
    table = memory.table.reshape(5, 5, 9)
    point = {(dr, dc): (dr + 1) * 3 + (dc + 1) for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
    expected = {
        (0, 0): {point[0, 1], point[1, 1]},  # (0,1) in 1 step, (1,1) in 2; (2,1) is off the lattice
        (0, 1): {point[1, 0]},  # (1,1) in 1; (2,1) is 2 rows down: off the lattice
        (1, 1): {point[1, 0]},
        (3, 3): {point[0, 1]},
    }
    for r in range(5):
        for c in range(5):
            got = set(table[r, c].nonzero().flatten().tolist())
            assert got == expected.get((r, c), set()), (r, c, got)
    assert new == 5
    assert memory.update(episodes([[(0, 0), (0, 1)]])) == 0  # nothing new: it only grows


def test_memory_counts_env_steps_of_multi_step_transitions():
    memory = ReachabilityMemory(SPACE, 0, 4, steps=3)
    # a higher level's transitions of 2 and 2 env steps: the pair across both spans 4 > 3
    memory.update(episodes([[(0, 0), (1, 1), (2, 2)]], tau=[[2, 2]]))
    table = memory.table.reshape(5, 5, 9)
    assert table[0, 0].nonzero().flatten().tolist() == [8]  # (+1, +1) only
    assert table[1, 1].nonzero().flatten().tolist() == [8]


def test_mask_allows_everything_where_nothing_is_known_and_reads_the_position():
    memory = ReachabilityMemory(SPACE, 0, 4, steps=1)
    memory.update(episodes([[(2, 2), (2, 3)]]))
    # observations of the subgoal level: position then goal
    obs = torch.tensor([[2.0, 2.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]])
    mask = memory.mask(obs)
    assert mask.shape == (2, 9) and mask.dtype == torch.bool
    assert mask[0].nonzero().flatten().tolist() == [5]
    assert bool(mask[1].all())


def test_memory_rejects_bad_settings_and_positions_out_of_bounds():
    with pytest.raises(ValueError, match="lattice"):
        ReachabilityMemory(SubgoalSpace((0, 1), -1.0, 1.0, relative=True), 0, 4, steps=2)
    with pytest.raises(ValueError, match="steps"):
        ReachabilityMemory(SPACE, 0, 4, steps=0)
    with pytest.raises(ValueError, match="low < high"):
        ReachabilityMemory(SPACE, 4, 4, steps=1)
    memory = ReachabilityMemory(SPACE, 0, 4, steps=1)
    with pytest.raises(ValueError, match="outside its bounds"):
        memory.update(episodes([[(5, 0), (5, 1)]]))
    with pytest.raises(KeyError, match="episode"):
        memory.update(episodes([[(0, 0), (0, 1)]]).exclude("episode"))
    with pytest.raises(ValueError, match="algorithm='dqn'"):
        subgoal_level("top", 4, SPACE, algorithm="td3", reachability=memory)
    other = SubgoalSpace((0, 1), -2.0, 2.0, relative=True, resolution=3)
    with pytest.raises(ValueError, match="not the level's subgoal space"):
        subgoal_level("top", 4, other, algorithm="dqn", reachability=memory)


def test_masked_q_values_shared_by_the_target_network():
    memory = ReachabilityMemory(SPACE, 0, 4, steps=1)
    memory.update(episodes([[(2, 2), (2, 3)]]))
    top, loss = subgoal_level("top", 4, SPACE, algorithm="dqn", value_range=(-10.0, 0.0),
                              test_probability=0.0)
    assert not any(isinstance(m, MaskedQValues) for m in top.policy.modules())
    top, loss = subgoal_level("top", 4, SPACE, algorithm="dqn", value_range=(-10.0, 0.0),
                              test_probability=0.0, reachability=memory)
    (masked,) = [m for m in top.policy.modules() if isinstance(m, MaskedQValues)]
    obs = torch.tensor([[2.0, 2.0, 4.0, 4.0]])
    values = masked(obs)
    assert values[0, 5] > -10.0 and bool((values[0, [0, 1, 2, 3, 4, 6, 7, 8]] == -10.0).all())
    # the loss's target parameters run the same module, hence the same (live) memory
    with loss.target_value_network_params.to_module(loss.value_network):
        target = loss.value_network(TensorDict({"observation": obs}, [1]))["action_value"]
    assert bool((target[0, [0, 1, 2, 3, 4, 6, 7, 8]] == -10.0).all())
    memory.update(episodes([[(2, 2), (1, 2)]]))  # (-1, 0): point 1
    assert bool(memory.mask(obs)[0, 1])
    assert masked(obs)[0, 1] > -10.0


def test_masked_level_explores_and_acts_only_among_reachable_subgoals():
    memory = ReachabilityMemory(SPACE, 0, 4, steps=1)
    memory.update(episodes([[(2, 2), (2, 3)], [(2, 2), (3, 2)]]))  # (0, +1) and (+1, 0)
    top, _ = subgoal_level("top", 4, SPACE, algorithm="dqn", eps_init=1.0, eps_end=1.0,
                           test_probability=0.0, reachability=memory)
    td = TensorDict({"observation": torch.tensor([[2.0, 2.0, 4.0, 4.0]]).expand(200, 4)}, [200])
    for mode in (ExplorationType.RANDOM, ExplorationType.DETERMINISTIC):
        with set_exploration_type(mode):
            out = top.policy(td.clone())
        assert out[ACTION_MASK].shape == (200, 9)
        targets = {tuple(t) for t in out["action"][:, :2].tolist()}
        assert targets <= {(2.0, 3.0), (3.0, 2.0)}, targets
        if mode is ExplorationType.RANDOM:
            assert len(targets) == 2


def test_memory_fed_from_a_collected_maze_hierarchy_records_only_real_moves():
    """On GridMaze, every recorded 1-step pair is a move to a free neighbouring cell (or
    staying put against a wall): the table is the maze's true adjacency, from collected
    trajectories of a TorchRL Collector."""
    base = GridMaze(batch_size=[8], rooms=2, room_size=3, max_steps=30, seed=0)
    scale = base.layout.walls.shape[0] - 1
    env = TransformedEnv(base, ObservationNorm(loc=0.0, scale=float(scale), standard_normal=False,
                                               in_keys=["observation", "achieved_goal",
                                                        "desired_goal"]))
    space = SubgoalSpace((0, 1), -1.0, 1.0, relative=True, resolution=3)
    memory = ReachabilityMemory(space, 0, scale, steps=1)
    top, _ = subgoal_level("subgoal", 4, space, algorithm="dqn", reachability=memory,
                           test_probability=0.0)
    low, _ = goal_conditioned_level("primitive", 4, env.action_spec_unbatched, space,
                                    tolerance=0.5, norm=float("inf"), horizon=3)
    hier = Hierarchy([top, low], env)
    level_episodes = LevelEpisodes(hier)
    collector = Collector(TransformedEnv(env, hier.transform), hier.policy, frames_per_batch=240,
                          total_frames=960, auto_register_policy_transforms=False)
    for batch in collector:
        memory.update(level_episodes.add(batch)["primitive"])
    collector.shutdown()
    walls = base.layout.walls
    table = memory.table.reshape(scale + 1, scale + 1, 9)
    assert int(table.sum()) > 20
    for r, c, p in table.nonzero().tolist():
        dr, dc = p // 3 - 1, p % 3 - 1
        assert not walls[r, c] and not walls[r + dr, c + dc]
        assert abs(dr) + abs(dc) <= 1
        if (dr, dc) == (0, 0):  # staying put: a wall (or the maze's edge) next to the cell
            assert any(walls[r + a, c + b] for a, b in ((-1, 0), (1, 0), (0, -1), (0, 1)))


def test_distances_are_hop_counts_of_the_recorded_subgoal_graph():
    memory = ReachabilityMemory(SPACE, 0, 4, steps=1)
    # a corridor along row 0: (0,0) -> (0,1) -> (0,2) -> (0,3), plus a dead end (1,0) -> (0,0)
    memory.update(episodes([[(0, 0), (0, 1), (0, 2), (0, 3)], [(1, 0), (0, 0)]]))
    d = memory.distances()
    cell = lambda r, c: r * 5 + c  # noqa: E731
    assert d[cell(0, 0), cell(0, 3)] == 3 and d[cell(1, 0), cell(0, 3)] == 4
    assert d[cell(0, 2), cell(0, 2)] == 0
    assert torch.isinf(d[cell(0, 3), cell(0, 0)])  # edges are one-way, as recorded
    assert memory.distances() is d  # cached ...
    memory.update(episodes([[(0, 3), (0, 2), (0, 1), (0, 0)]]))
    assert memory.distances()[cell(0, 3), cell(0, 0)] == 3  # ... until the table grows


def test_planner_takes_the_first_subgoal_of_a_shortest_chain_and_the_goal_when_reachable():
    space = SubgoalSpace((0, 1), -2.0, 2.0, relative=True, resolution=5)
    memory = ReachabilityMemory(space, 0, 4, steps=2)
    # from (2,0) the direct way right is a wall: a detour through row 0 to the goal (2,4)
    memory.update(episodes([[(2, 0), (1, 0), (0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 4),
                             (2, 4)]]))
    planner = PlannedSubgoals(memory, goal=(2, 3), norm=float("inf"))
    obs = torch.tensor([[2.0, 0.0, 2.0, 4.0], [0.0, 3.0, 2.0, 4.0], [4.0, 4.0, 9.0, 9.0]])
    out = planner(TensorDict({"observation": obs}, [3]))
    pick = out["action"].argmax(-1)
    points = space.lattice
    # from (2,0): (0,0) [2 up] starts the shortest chain ((0,0) -> (0,2) -> (0,4) -> (2,4))
    assert points[pick[0]].tolist() == [-2.0, 0.0]
    # from (0,3): the goal (2,4) is 3 steps away, beyond steps=2: via (0,4) or (1,4)
    assert points[pick[1]].tolist() in ([1.0, 1.0], [0.0, 1.0])
    # unknown cell and a goal out of the graph: everything allowed, the point nearest the goal
    assert points[pick[2]].tolist() == [0.0, 0.0] or bool(out[ACTION_MASK][2].all())
    with pytest.raises(ValueError, match="components"):
        PlannedSubgoals(memory, goal=(2,))


def test_planned_level_hands_an_absolute_reachable_subgoal_below_and_explores_in_the_mask():
    memory = ReachabilityMemory(SPACE, 0, 4, steps=1)
    memory.update(episodes([[(2, 2), (2, 3), (2, 4)], [(2, 2), (3, 2)]]))
    level = planned_subgoal_level("top", 4, memory, (2, 3), eps_init=1.0, eps_end=1.0)
    obs = torch.tensor([[2.0, 2.0, 2.0, 4.0]]).expand(100, 4)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        greedy = level.policy(TensorDict({"observation": obs}, [100]))["action"]
    assert greedy[0].tolist() == [2.0, 3.0, 0.0]  # towards the goal, test flag 0
    with set_exploration_type(ExplorationType.RANDOM):
        explored = level.policy(TensorDict({"observation": obs}, [100]))["action"]
    assert {tuple(a[:2]) for a in explored.tolist()} == {(2.0, 3.0), (3.0, 2.0)}


def attempts(rows: list[tuple[tuple, tuple, tuple, bool]]):
    """Whole episodes of a goal-conditioned level (its observation is its position), one
    subgoal attempt each: (start, absolute subgoal in "parent_action", end, episode done); an
    attempt of two steps whose middle is its start."""
    obs, nxt, parent, ep, done = [], [], [], [], []
    for e, (start, subgoal, end, last_done) in enumerate(rows):
        obs += [start, start]
        nxt += [start, end]
        parent += [[*subgoal, 0.0]] * 2
        ep += [e, e]
        done += [[False], [last_done]]
    n = len(obs)
    return TensorDict(
        {"observation": torch.tensor(obs, dtype=torch.float32), "episode": torch.tensor(ep),
         "parent_action": torch.tensor(parent),
         "steps_to_next_obs": torch.ones(n, 1, dtype=torch.long),
         "next": {"observation": torch.tensor(nxt, dtype=torch.float32),
                  "done": torch.tensor(done)}},
        [n],
    )


def test_reliability_estimates_and_reroutes_around_subgoals_the_level_below_misses():
    memory = ReachabilityMemory(SPACE, 0, 4, steps=1, reliability=0.5, refresh=1)
    # two ways from (0,0) to (1,1): via (0,1) or via (1,0)
    memory.update(episodes([[(0, 0), (0, 1), (1, 1)], [(0, 0), (1, 0), (1, 1)]]))
    cell = lambda r, c: r * 5 + c  # noqa: E731
    assert memory.distances()[cell(0, 0), cell(1, 1)] == 2
    right, down = 5, 7  # lattice points (0, +1) and (+1, 0)
    # two missed attempts at (0,1) from (0,0), one reached (1,0), one cut by the episode's end
    memory.record_outcomes(attempts([
        ((0, 0), (0, 1), (0, 0), False), ((0, 0), (0, 1), (0, 0), False),
        ((0, 0), (1, 0), (1, 0), False), ((0, 0), (1, 0), (0, 0), True)]))
    success = memory.success.reshape(5, 5, 9)
    assert success[0, 0, right] == pytest.approx(0.25)  # 1 * (1 - 0.5)**2
    assert success[0, 0, down] == 1.0
    assert memory.costs().reshape(5, 5, 9)[0, 0, right] == pytest.approx(4.0)
    assert memory.distances()[cell(0, 0), cell(1, 1)] == 2  # via (1,0), cost 1 + 1
    memory.update(attempts([((0, 0), (1, 0), (0, 0), False)] * 3))  # update records them too
    assert memory.distances()[cell(0, 0), cell(1, 1)] == pytest.approx(1 + 4.0)  # via (0,1)
    planner = PlannedSubgoals(memory, goal=(2, 3))
    obs = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert planner(TensorDict({"observation": obs}, [1]))["action"].argmax(-1).item() == right
    with pytest.raises(ValueError, match="reliability"):
        ReachabilityMemory(SPACE, 0, 4, steps=1).record_outcomes(
            attempts([((0, 0), (0, 1), (0, 0), False)]))
    with pytest.raises(ValueError, match="reliability"):
        ReachabilityMemory(SPACE, 0, 4, steps=1, reliability=1.5)


def test_planned_subgoals_config_trains_and_fills_the_memory_from_the_primitive_level(tmp_path):
    """`hierarchy=planned_subgoals` builds from Hydra: a frozen planning top level whose memory
    the goal-conditioned level's transition processing fills, trained by `train`."""
    from omegaconf import OmegaConf
    from test_train import FAST, compose_cfg

    from torchrl_hier.experiment import ConfigError, build_experiment, load_checkpoint
    from torchrl_hier.train import train

    overrides = ["task=GridMaze-FourRooms", "hierarchy=planned_subgoals", "task.kwargs.max_steps=20",
                 "hierarchy.levels.primitive.learner.warmup=4",
                 "hierarchy.levels.primitive.learner.batch_size=8"]
    cfg = compose_cfg([*FAST, *overrides, f"run_dir={tmp_path}"])
    summary = train(cfg)
    assert summary["levels"]["subgoal"]["frozen"] and summary["levels"]["subgoal"]["updates"] == 0
    assert summary["levels"]["primitive"]["updates"] > 0
    ckpt, _ = load_checkpoint(tmp_path)  # the memory is in the checkpointed policy
    (table,) = [v for k, v in ckpt["policy"].items() if k.endswith("memory.table")]
    assert int(table.sum()) > 0
    exp = build_experiment(cfg)
    memory = exp.parts[0].reachability
    assert isinstance(memory, ReachabilityMemory) and memory.reliability == 0.2
    assert memory.space.n_points == 49 and memory.cell == pytest.approx(2 * cfg.task.goal.tolerance)
    env = TransformedEnv(exp.env, exp.hierarchy.transform)
    batch = env.rollout(40, exp.hierarchy.policy, break_when_any_done=False)
    exp.pipeline(batch)
    assert int(memory.table.sum()) > 0
    bad = compose_cfg(["task=CartPole-v1", "hierarchy=planned_subgoals", f"run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="goal"):
        build_experiment(bad)
    OmegaConf.set_struct(cfg, False)
    cfg.hierarchy.levels.subgoal.reliability = 2.0
    with pytest.raises(ConfigError, match="reliability"):
        build_experiment(cfg)


def test_memory_is_saved_and_restored_with_the_policy_state_dict():
    memory = ReachabilityMemory(SPACE, 0, 4, steps=1, reliability=0.5)
    memory.update(episodes([[(2, 2), (2, 3)]]))
    memory.record_outcomes(attempts([((2, 2), (2, 3), (2, 2), False)]))
    level = planned_subgoal_level("top", 4, memory, (2, 3))
    state = level.policy.state_dict()
    assert {k.rsplit(".", 1)[-1] for k in state if "memory" in k} == {"table", "success"}
    fresh = ReachabilityMemory(SPACE, 0, 4, steps=1, reliability=0.5)
    restored = planned_subgoal_level("top", 4, fresh, (2, 3))
    before = fresh.distances()  # cached on the empty table ...
    restored.policy.load_state_dict(state)
    assert torch.equal(fresh.table, memory.table) and torch.equal(fresh.success, memory.success)
    assert fresh.distances() is not before  # ... and dropped on loading
    assert torch.equal(fresh.distances(), memory.distances())
    # the DQN subgoal level's loss does not copy the memory into its target parameters
    _, loss = subgoal_level("top", 4, SPACE, algorithm="dqn", reachability=memory)
    assert not any("table" in k for k in loss.state_dict())
