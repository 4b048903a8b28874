"""Ready-made levels: option and subgoal levels run in a Hierarchy (env.rollout and a Collector,
GridMaze and PointMaze), obey their control rules, and their transitions feed their losses."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.data import Bounded, Categorical
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_hier import Hierarchy, Timeout
from torchrl_hier.envs import GridMaze, PointMaze
from torchrl_hier.levels import (
    GoalReward,
    GoalSlot,
    HindsightGoals,
    LevelEpisodes,
    OptionTermination,
    OptionTerminationLoss,
    SubgoalSpace,
    anneal_exploration,
    check_goal_keys,
    constant_level,
    exploration_modules,
    goal_conditioned_level,
    option_conditioned_level,
    option_level,
    random_level,
    subgoal_level,
    subgoal_transitions,
)

GRID_SPACE = SubgoalSpace((0, 1), 0.0, 1.0)
GRID_TOL = 0.05  # < half a cell of the 13x13 four-rooms maze in [0, 1] coordinates


def rollout(hier: Hierarchy, env, steps: int) -> TensorDict:
    with torch.no_grad():
        return TransformedEnv(env, hier.transform).rollout(
            steps, hier.policy, break_when_any_done=False
        )


def backward_once(loss, data: TensorDict) -> None:
    """One loss evaluation and backward; every trainable network gets a finite gradient."""
    out = loss(data)
    terms = [value for key, value in out.items() if key.startswith("loss")]
    assert terms, f"{type(loss).__name__} returned no loss term"
    loss.zero_grad()
    sum(terms).backward()
    grads = [p.grad for p in loss.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def collect(hier: Hierarchy, env, frames: int, per_batch: int) -> list[TensorDict]:
    collector = Collector(
        TransformedEnv(env, hier.transform),
        hier.policy,
        frames_per_batch=per_batch,
        total_frames=frames,
        auto_register_policy_transforms=False,
    )
    batches = [batch for batch in collector]
    collector.shutdown()
    return batches


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("algorithm", ["dqn", "sac"])
def test_option_level_on_grid_maze_rollout(algorithm):
    torch.manual_seed(0)
    env = GridMaze(batch_size=[4], max_steps=25, seed=0)
    top, top_loss = option_level("option", 4, 3, algorithm=algorithm)
    low, low_loss = option_conditioned_level(
        "primitive", 4, 3, env.action_spec_unbatched, timeout=4
    )
    hier = Hierarchy([top, low], env)
    check_env_specs(TransformedEnv(env, hier.transform))
    batch = rollout(hier, env, 40)
    data = hier.transitions(batch)
    options = data["option"]["action"]
    assert options.dtype == torch.int64 and options.shape[-1] == 3
    assert (options.sum(-1) == 1).all()  # one-hot
    # an option lasts at most its timeout; only episode ends cut it short
    tau = data["option"]["steps_to_next_obs"][:, 0]
    assert (tau <= 4).all()
    assert ((tau == 4) | data["option"]["next", "done"][:, 0]).all()
    # the lower level sees the running option as its parent action
    assert torch.equal(
        data["primitive"]["parent_action"].sum(-1), torch.ones(data["primitive"].shape[0], dtype=torch.int64)
    )
    backward_once(top_loss, data["option"])
    backward_once(low_loss, data["primitive"])


def test_option_level_under_collector_and_learned_termination():
    torch.manual_seed(0)
    env = GridMaze(batch_size=[4], max_steps=25, seed=0)
    top, top_loss = option_level("option", 4, 3)
    always = OptionTermination(4, 3, init_bias=20.0)  # terminates every step
    low, low_loss = option_conditioned_level(
        "primitive", 4, 3, env.action_spec_unbatched, timeout=5, termination=always
    )
    hier = Hierarchy([top, low], env)
    batches = collect(hier, env, frames=80, per_batch=40)
    assert len(batches) == 2
    data = hier.transitions(torch.cat(batches, -1))
    assert (data["option"]["steps_to_next_obs"] == 1).all()
    # an option-critic termination loss trains the head, not the option Q-network
    term_loss = OptionTerminationLoss(OptionTermination(4, 3, init_bias=0.0), top_loss)
    assert not any(p is q for p in term_loss.parameters() for q in top_loss.parameters())
    backward_once(term_loss, data["primitive"])

    never = OptionTermination(4, 3, init_bias=-20.0)
    low, _ = option_conditioned_level(
        "primitive", 4, 3, env.action_spec_unbatched, timeout=5, termination=never
    )
    hier = Hierarchy([top, low], env)
    data = hier.transitions(rollout(hier, env, 30))
    tau = data["option"]["steps_to_next_obs"][:, 0]
    assert ((tau == 5) | data["option"]["next", "done"][:, 0]).all()


def test_option_termination_loss_sign():
    """The head is pushed towards terminating a worse-than-best option and away from it for the
    best one (option-critic's termination gradient)."""
    torch.manual_seed(0)
    top, top_loss = option_level("option", 2, 2)
    head = OptionTermination(2, 2, init_bias=0.0)
    loss = OptionTerminationLoss(head, top_loss, margin=0.0)
    obs = torch.randn(64, 2)
    with torch.no_grad():
        values = top_loss.value_network(TensorDict({"observation": obs}, [64]))["action_value"]
    best = values.argmax(-1)
    worst = torch.nn.functional.one_hot(1 - best, 2)
    td = TensorDict(
        {"parent_action": worst, "next": {"observation": obs, "done": torch.zeros(64, 1, dtype=torch.bool)}},
        [64],
    )
    out = loss(td)
    out["loss_termination"].backward()
    before = head.probability(obs, worst).mean()
    with torch.no_grad():
        for p in head.parameters():
            p -= 0.5 * p.grad
    assert head.probability(obs, worst).mean() > before


def test_option_conditioned_continuous_level_on_point_maze():
    torch.manual_seed(0)
    env = PointMaze(batch_size=[3], max_steps=20, seed=0)
    top, top_loss = option_level("option", 4, 4)
    low, low_loss = option_conditioned_level(
        "motor", 4, 4, env.action_spec_unbatched, timeout=3, algorithm="td3"
    )
    hier = Hierarchy([top, low], env)
    data = hier.transitions(rollout(hier, env, 20))
    actions = data["motor"]["action"]
    assert actions.shape[-1] == 2 and (actions.abs() <= 1).all()
    backward_once(top_loss, data["option"])
    backward_once(low_loss, data["motor"])


def test_anneal_exploration_matches_step():
    top, _ = option_level("option", 4, 3, eps_init=1.0, eps_end=0.1, annealing_num_steps=10)
    (module,) = exploration_modules(top.policy)
    anneal_exploration(top.policy, 4)
    assert module.eps.item() == pytest.approx(1.0 - 4 * 0.09)
    anneal_exploration(top.policy, 100)
    assert module.eps.item() == pytest.approx(0.1)


# ----------------------------------------------------------------------------- subgoals
def grid_subgoal_hierarchy(env, test_probability=0.3, eps_init=1.0, horizon=4):
    top, top_loss = subgoal_level("subgoal", 4, GRID_SPACE, test_probability=test_probability)
    low, low_loss = goal_conditioned_level(
        "primitive", 4, env.action_spec_unbatched, GRID_SPACE, tolerance=GRID_TOL,
        horizon=horizon, eps_init=eps_init,
    )
    return Hierarchy([top, low], env), top, top_loss, low, low_loss


def test_subgoal_level_on_grid_maze_rollout_and_collector():
    torch.manual_seed(0)
    env = GridMaze(batch_size=[4], max_steps=20, seed=0)
    hier, top, top_loss, low, low_loss = grid_subgoal_hierarchy(env)
    check_env_specs(TransformedEnv(env, hier.transform))
    batches = collect(hier, env, frames=160, per_batch=80)
    batch = torch.cat(batches, -1)
    data = hier.transitions(batch)
    sub = data["subgoal"]
    # the subgoal handed below is [absolute subgoal in bounds, test flag]
    assert sub["action"].shape[-1] == 3
    assert ((sub["action"][:, :2] >= 0) & (sub["action"][:, :2] <= 1)).all()
    assert set(sub["action"][:, 2].unique().tolist()) <= {0.0, 1.0}
    # a subgoal ends when reached, after the horizon, or with the episode
    achieved = GRID_SPACE.achieved(sub["next", "observation"])
    reached = (achieved - sub["action"][:, :2]).norm(dim=-1) <= GRID_TOL
    tau = sub["steps_to_next_obs"][:, 0]
    assert (tau <= 4).all()
    assert (reached | (tau == 4) | sub["next", "done"][:, 0]).all()
    # the lower level's intrinsic reward: 0 on the step reaching the subgoal, else -1
    prim = data["primitive"]
    prim_reached = (GRID_SPACE.achieved(prim["next", "observation"]) - prim["parent_action"][:, :2]).norm(dim=-1) <= GRID_TOL
    assert torch.equal(prim["next", "reward"][:, 0], torch.where(prim_reached, 0.0, -1.0))
    # HAC processing, then one loss backward per level
    episodes = LevelEpisodes(hier)
    ready = {name: d for b in batches for name, d in episodes.add(b).items() if d.shape[0]}
    low_data = HindsightGoals(GoalReward(GRID_SPACE, GRID_TOL), gamma=low.gamma, k=2, level="primitive")(
        ready["primitive"]
    )
    top_data = subgoal_transitions(
        ready["subgoal"], GRID_SPACE, tolerance=GRID_TOL, penalty=-4.0,
        goals=HindsightGoals(
            GoalReward(GRID_SPACE, GRID_TOL, goal=GoalSlot.observation((2, 3)), reached=1.0, not_reached=0.0),
            gamma=top.gamma, k=2, level="subgoal",
        ),
        level="subgoal",
    )
    assert top_data["action"].shape[-1] == 2
    backward_once(top_loss, top_data)
    backward_once(low_loss, low_data)


@pytest.mark.parametrize("algorithm", ["td3", "sac"])
def test_relative_subgoal_level_on_point_maze(algorithm):
    torch.manual_seed(0)
    env = PointMaze(batch_size=[4], max_steps=25, seed=0)
    space = SubgoalSpace((0, 1), -1.5, 1.5, relative=True)
    top, top_loss = subgoal_level("subgoal", 4, space, algorithm=algorithm, env=env)
    low, low_loss = goal_conditioned_level(
        "motor", 4, env.action_spec_unbatched, space, tolerance=0.3, horizon=5,
        algorithm=algorithm, env=env,
    )
    hier = Hierarchy([top, low], env)
    check_env_specs(TransformedEnv(env, hier.transform))
    batches = collect(hier, env, frames=200, per_batch=100)
    data = hier.transitions(torch.cat(batches, -1))["subgoal"]
    # the level below gets the absolute target: start position + a displacement within bounds
    displacement = data["action"][:, :2] - space.achieved(data["observation"])
    assert (displacement.abs() <= 1.5 + 1e-5).all()
    assert (displacement.abs() > 1e-3).any()
    episodes = LevelEpisodes(hier)
    ready = {}
    for b in batches:
        for name, d in episodes.add(b).items():
            ready.setdefault(name, []).append(d)
    ready = {name: torch.cat(d) for name, d in ready.items()}
    top_data = subgoal_transitions(ready["subgoal"], space, tolerance=0.3, penalty=-5.0)
    assert (top_data["action"].abs() <= 1.5 + 1e-5).all()  # in the actor's (relative) frame
    low_data = HindsightGoals(GoalReward(space, 0.3), gamma=low.gamma, k=2)(ready["motor"])
    backward_once(top_loss, top_data)
    backward_once(low_loss, low_data)


def test_tested_subgoals_make_the_level_below_greedy():
    torch.manual_seed(0)
    env = GridMaze(batch_size=[8], max_steps=20, seed=0)
    for probability, greedy in ((1.0, True), (0.0, False)):
        hier, top, _, low, _ = grid_subgoal_hierarchy(env, test_probability=probability, eps_init=1.0)
        data = hier.transitions(rollout(hier, env, 20))["primitive"]
        assert (data["parent_action"][:, 2] == probability).all()
        qnet = low.policy[1].policy[0]  # the QValueActor under GreedyWhenTested
        with torch.no_grad():
            best = qnet(data.select("observation", "parent_action").clone())["action"]
        matches = (best == data["action"]).float().mean().item()
        if greedy:
            assert matches == 1.0
        else:  # epsilon = 1: uniformly random actions
            assert matches < 0.5


@pytest.mark.parametrize("algorithm", ["dqn", "td3", "sac"])
def test_tested_flag_switches_exploration_off(algorithm):
    """Under a tested subgoal the level's actions are a deterministic function of its input;
    otherwise they explore (epsilon-greedy, Gaussian noise or sampling)."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    torch.manual_seed(0)
    spec = Categorical(4) if algorithm == "dqn" else Bounded(-1.0, 1.0, (2,))
    low, _ = goal_conditioned_level(
        "low", 4, spec, GRID_SPACE, tolerance=GRID_TOL, algorithm=algorithm, noise_std=0.3
    )
    n = 64
    obs, goal = torch.rand(n, 4), torch.rand(n, 2)
    for flag, deterministic in ((1.0, True), (0.0, False)):
        td = TensorDict(
            {"observation": obs, "parent_action": torch.cat([goal, torch.full((n, 1), flag)], -1)},
            [n],
        )
        with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
            first = low.policy(td.clone())["action"]
            second = low.policy(td.clone())["action"]
        assert torch.equal(first, second) == deterministic


def test_three_level_hac_stack_runs():
    """A middle subgoal level is goal-conditioned on the top's subgoals and inherits tests."""
    torch.manual_seed(0)
    env = GridMaze(batch_size=[4], max_steps=30, seed=0)
    top, _ = subgoal_level("top", 4, GRID_SPACE, test_probability=1.0)
    mid, mid_loss = subgoal_level(
        "mid", 4, GRID_SPACE, goal_space=GRID_SPACE, tolerance=GRID_TOL, horizon=3,
        test_probability=0.0,
    )
    low, _ = goal_conditioned_level(
        "low", 4, env.action_spec_unbatched, GRID_SPACE, tolerance=GRID_TOL, horizon=3
    )
    hier = Hierarchy([top, mid, low], env)
    data = hier.transitions(rollout(hier, env, 30))
    assert (data["mid"]["action"][:, 2] == 1).all()  # the top's test flag is inherited
    assert (data["mid"]["steps_to_next_obs"] <= 9).all()
    ready = subgoal_transitions(
        data["mid"], GRID_SPACE, tolerance=GRID_TOL, penalty=-3.0
    )
    backward_once(mid_loss, ready)


def test_processed_transitions_feed_level_learners():
    """The HAC pipeline's output fits LevelLearner (its key checks, TD0 with gamma**tau)."""
    from torchrl_hier.learning import LevelLearner

    torch.manual_seed(0)
    env = GridMaze(batch_size=[4], max_steps=20, seed=0)
    hier, top, top_loss, low, low_loss = grid_subgoal_hierarchy(env)
    learners = {
        "subgoal": LevelLearner(top_loss, level=top, warmup=4, batch_size=8, update_ratio=0.5),
        "primitive": LevelLearner(low_loss, level=low, warmup=4, batch_size=8, update_ratio=0.1),
    }
    learners["subgoal"].check_level_keys(has_parent=False, name="subgoal")
    learners["primitive"].check_level_keys(has_parent=True, name="primitive")
    episodes = LevelEpisodes(hier)
    her = HindsightGoals(GoalReward(GRID_SPACE, GRID_TOL), gamma=low.gamma, k=2)
    logs = {}
    for batch in collect(hier, env, frames=160, per_batch=80):
        ready = episodes.add(batch)
        learners["primitive"].extend(her(ready["primitive"]))
        learners["subgoal"].extend(
            subgoal_transitions(ready["subgoal"], GRID_SPACE, tolerance=GRID_TOL, penalty=-4.0)
        )
        for name, learner in learners.items():
            logs[name] = learner.update() or logs.get(name, {})
    assert "loss_qvalue" in logs["subgoal"] and "loss" in logs["primitive"]
    anneal_exploration(low.policy, 1000)
    assert exploration_modules(low.policy)[0].eps.item() < 1.0


# ----------------------------------------------------------------------------- bad input
def test_bad_subgoal_projection_names_level_and_key():
    with pytest.raises(ValueError, match="Level 'subgoal'.*components \\[4\\].*'observation'"):
        subgoal_level("subgoal", 4, SubgoalSpace((0, 4), 0.0, 1.0))
    with pytest.raises(ValueError, match="Level 'walker'.*'observation'"):
        goal_conditioned_level(
            "walker", 2, Categorical(4), SubgoalSpace((1, 2), 0.0, 1.0), tolerance=0.1
        )
    with pytest.raises(ValueError, match="low < high"):
        SubgoalSpace((0,), 1.0, 1.0)


@pytest.mark.parametrize("tolerance", [0.0, -0.5])
def test_non_positive_tolerance_names_level(tolerance):
    with pytest.raises(ValueError, match="Level 'walker'.*tolerance must be positive"):
        goal_conditioned_level("walker", 4, Categorical(4), GRID_SPACE, tolerance=tolerance)
    with pytest.raises(ValueError, match="Level 'mid'.*tolerance must be positive"):
        subgoal_level("mid", 4, GRID_SPACE, goal_space=GRID_SPACE, tolerance=tolerance)


def test_env_without_goal_keys_names_level_and_key():
    class NoGoals(GridMaze):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            spec = self.observation_spec
            for key in ("achieved_goal", "desired_goal"):
                if key in spec.keys():
                    del spec[key]

    env = NoGoals(batch_size=[2])
    with pytest.raises(KeyError, match="Level 'walker'.*'achieved_goal'"):
        goal_conditioned_level(
            "walker", 4, env.action_spec_unbatched, GRID_SPACE, tolerance=0.1, env=env
        )
    with pytest.raises(KeyError, match="Level 'planner'.*'desired_goal'"):
        check_goal_keys(env, "planner", keys=("desired_goal",))


def test_goal_conditioned_level_needs_a_subgoal_parent():
    env = GridMaze(batch_size=[2], seed=0)
    low, _ = goal_conditioned_level(
        "walker", 4, env.action_spec_unbatched, GRID_SPACE, tolerance=0.1
    )
    top = constant_level("fixed", torch.tensor([0.5, 0.5]), action_spec=Bounded(0.0, 1.0, (2,)))
    with pytest.raises(ValueError, match="Level 'walker'.*test flag"):
        Hierarchy([top, low], env)


def test_option_level_bad_input():
    env = GridMaze(batch_size=[2], seed=0)
    with pytest.raises(ValueError, match="Level 'low'.*needs a way to end"):
        option_conditioned_level("low", 4, 3, env.action_spec_unbatched, timeout=None)
    with pytest.raises(ValueError, match="Level 'top'.*'dqn' or 'sac'"):
        option_level("top", 4, 3, algorithm="ppo")
    with pytest.raises(ValueError, match="Level 'low'.*2 options but the option level has 3"):
        option_conditioned_level(
            "low", 4, 3, env.action_spec_unbatched, termination=OptionTermination(4, 2)
        )


def test_random_and_constant_levels_still_work():
    env = GridMaze(batch_size=[2], seed=0)
    hier = Hierarchy(
        [
            constant_level("c", torch.tensor([1, 0]), action_spec=Categorical(2, (2,))),
            random_level("r", env.action_spec_unbatched, control=Timeout(2), lowest=True),
        ],
        env,
    )
    data = hier.transitions(rollout(hier, env, 6))
    assert (data["r"]["parent_action"] == torch.tensor([1, 0])).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_subgoal_hierarchy_on_cuda():
    torch.manual_seed(0)
    env = PointMaze(batch_size=[16], max_steps=20, seed=0, device="cuda")
    space = SubgoalSpace((0, 1), -1.5, 1.5, relative=True)
    top, top_loss = subgoal_level("subgoal", 4, space, device="cuda")
    low, low_loss = goal_conditioned_level(
        "motor", 4, env.action_spec_unbatched, space, tolerance=0.3, horizon=5, device="cuda"
    )
    hier = Hierarchy([top, low], env)
    batch = rollout(hier, env, 25)
    assert batch.device.type == "cuda"
    episodes = LevelEpisodes(hier).add(batch)
    top_data = subgoal_transitions(episodes["subgoal"], space, tolerance=0.3, penalty=-5.0)
    low_data = HindsightGoals(GoalReward(space, 0.3), k=2)(episodes["motor"])
    assert top_data.device.type == "cuda" and low_data.device.type == "cuda"
    backward_once(top_loss, top_data)
    backward_once(low_loss, low_data)


# ----------------------------------------------------------------------------- lattice subgoals
def test_subgoal_lattice_points_and_nearest_index():
    space = SubgoalSpace((0, 1), -1.0, 1.0, relative=True, resolution=3)
    assert space.n_points == 9
    points = space.lattice
    assert points.shape == (9, 2)
    assert torch.equal(points[0], torch.tensor([-1.0, -1.0]))
    assert torch.equal(points[5], torch.tensor([0.0, 1.0]))  # row-major: last component fastest
    assert torch.equal(space.lattice_index(points), torch.arange(9))
    # nearest point, out-of-bounds clamped
    assert space.lattice_index(torch.tensor([[0.4, -0.6], [5.0, 5.0]])).tolist() == [3, 8]
    with pytest.raises(ValueError, match="resolution"):
        SubgoalSpace((0, 1), 0.0, 1.0).lattice
    with pytest.raises(ValueError, match="resolution must be an int >= 2"):
        SubgoalSpace((0, 1), 0.0, 1.0, resolution=1)


def test_dqn_subgoal_level_picks_lattice_points_and_learns_their_one_hot():
    torch.manual_seed(0)
    env = GridMaze(batch_size=[4], max_steps=20, seed=0)
    cell = 1.0 / float(env.scale[0])
    space = SubgoalSpace((0, 1), -2 * cell, 2 * cell, relative=True, resolution=5)
    top, top_loss = subgoal_level(
        "subgoal", 4, space, algorithm="dqn", value_range=(-20.0, 0.0), env=env
    )
    low, low_loss = goal_conditioned_level(
        "primitive", 4, env.action_spec_unbatched, space, tolerance=0.5 * cell,
        norm=float("inf"), horizon=4, value_range=(-4.0, 0.0),
    )
    hier = Hierarchy([top, low], env)
    check_env_specs(TransformedEnv(env, hier.transform))
    batches = collect(hier, env, frames=160, per_batch=80)
    sub = hier.transitions(torch.cat(batches, -1))["subgoal"]
    # what is handed below: a lattice point added to the position, plus the test flag
    offset = (sub["action"][:, :2] - space.achieved(sub["observation"])) / cell
    assert torch.allclose(offset, offset.round(), atol=1e-4)
    assert (offset.abs() <= 2 + 1e-4).all() and (offset.abs() > 0.5).any()
    # the learner's frame: the one-hot of the (hindsight) lattice point
    episodes = LevelEpisodes(hier)
    ready = {name: d for b in batches for name, d in episodes.add(b).items() if d.shape[0]}
    top_data = subgoal_transitions(
        ready["subgoal"], space, tolerance=0.5 * cell, norm=float("inf"), penalty=-20.0
    )
    action = top_data["action"]
    assert action.shape[-1] == 25 and (action.sum(-1) == 1).all()
    achieved = space.achieved(ready["subgoal"]["next", "observation"])
    moved = space.clamp(achieved - space.achieved(ready["subgoal"]["observation"]))
    n = ready["subgoal"].shape[0]
    assert torch.equal(action[:n].argmax(-1), space.lattice_index(moved))
    backward_once(top_loss, top_data)
    # both networks' Q-values stay in their value ranges
    q = top_loss.value_network(top_data.clone())["action_value"]
    assert (q >= -20.0).all() and (q <= 0.0).all()
    low_data = HindsightGoals(GoalReward(space, 0.5 * cell, norm=float("inf")), gamma=low.gamma,
                              k=2)(ready["primitive"])
    q_low = low_loss.value_network(low_data.clone())["action_value"]
    assert (q_low >= -4.0).all() and (q_low <= 0.0).all()
    backward_once(low_loss, low_data)


def test_dqn_subgoal_level_bad_input():
    with pytest.raises(ValueError, match="'subgoal'.*resolution"):
        subgoal_level("subgoal", 4, SubgoalSpace((0, 1), 0.0, 1.0), algorithm="dqn")
    with pytest.raises(ValueError, match="value_range needs low < high"):
        subgoal_level(
            "subgoal", 4, SubgoalSpace((0, 1), 0.0, 1.0, resolution=3), algorithm="dqn",
            value_range=(0.0, 0.0),
        )
