"""FixedGoal / goal_gym_env (a gymnasium task made goal-conditioned), per-component goal
tolerances, and the MountainCarContinuous task and HAC configs built from them."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_module
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.envs import GymEnv, TransformedEnv
from torchrl.envs.utils import ExplorationType, check_env_specs, set_exploration_type

from torchrl_hier.control import GoalReached, check_tolerance, within_tolerance
from torchrl_hier.envs import FixedGoal, goal_gym_env, make_env
from torchrl_hier.envs.goal_env import MOUNTAIN_CAR_HAC
from torchrl_hier.errors import ConfigError
from torchrl_hier.experiment.builders import build_experiment
from torchrl_hier.levels import (
    GaussianOrUniform,
    GoalReward,
    GoalSlot,
    HindsightGoals,
    SubgoalSpace,
    actor_critic_head,
    exploration_modules,
    subgoal_attempts,
    subgoal_test_penalties,
)


def compose_cfg(overrides):
    with initialize_config_module("torchrl_hier.conf", version_base=None):
        return compose("config", overrides=list(overrides))


# ----------------------------------------------------------------------------- tolerances
def test_per_component_tolerance_bounds_each_component_with_the_inf_norm():
    goal = torch.tensor([0.48, 0.04])
    achieved = torch.tensor([[0.485, 0.059], [0.485, 0.061], [0.495, 0.04], [0.47, 0.02]])
    reached = within_tolerance(achieved, goal, (0.01, 0.02), norm=math.inf)
    assert reached.tolist() == [True, False, False, True]
    # a number keeps the plain distance test
    assert within_tolerance(achieved, goal, 0.0151, norm=2.0).tolist() == [
        False, False, True, False
    ]
    # a per-component tolerance with the 2-norm is an ellipse: ||diff / tol|| <= 1
    assert within_tolerance(torch.tensor([0.487, 0.054]), goal, (0.01, 0.02), 2.0).item()
    assert not within_tolerance(torch.tensor([0.488, 0.055]), goal, (0.01, 0.02), 2.0).item()


@pytest.mark.parametrize("bad", [0.0, -1.0, (0.1, 0.0), [], "x", True])
def test_bad_tolerances_raise_and_name_who(bad):
    with pytest.raises((ValueError, TypeError), match="Level 'mid' needs a positive tolerance"):
        check_tolerance(bad, "Level 'mid'")


def test_tolerance_of_the_wrong_length_raises():
    with pytest.raises(ValueError, match="one tolerance per component"):
        within_tolerance(torch.zeros(3), torch.zeros(3), (0.1, 0.2))
    with pytest.raises(ValueError, match="3 tolerances for a goal of 2 components"):
        GoalReward(SubgoalSpace((0, 1), -1.0, 1.0), (0.1, 0.1, 0.1))


def test_goal_reached_and_goal_reward_take_per_component_tolerances():
    space = SubgoalSpace((0, 1), -1.0, 1.0)
    reward = GoalReward(space, [0.1, 0.5], norm=math.inf)
    assert reward.tolerance == (0.1, 0.5)
    achieved = torch.tensor([[0.05, 0.4], [0.2, 0.0]])
    assert reward.is_reached(achieved, torch.zeros(2)).tolist() == [True, False]
    rule = GoalReached((0.1, 0.5), achieved="pos", goal="goal", norm=math.inf)
    # the two env TensorDicts a level step reads its keys from
    step = SimpleNamespace(
        name="low", root=TensorDict({"goal": torch.zeros(2, 2)}, [2]),
        next=TensorDict({"pos": achieved}, [2]), next_observation=None, parent_action=None,
    )
    assert rule(step).tolist() == [True, False]
    assert GoalReached([0.1, 0.5]).tolerance == (0.1, 0.5)


def test_subgoal_tests_use_the_per_component_tolerance():
    space = SubgoalSpace((0, 1), -1.0, 1.0)
    td = TensorDict(
        {
            "observation": torch.zeros(2, 2),
            "action": torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]),  # tested subgoals at 0
            "next": {"observation": torch.tensor([[0.05, 0.4], [0.2, 0.0]]),
                     "reward": torch.zeros(2, 1), "done": torch.zeros(2, 1, dtype=torch.bool),
                     "terminated": torch.zeros(2, 1, dtype=torch.bool)},
        },
        [2],
    )
    missed = subgoal_test_penalties(td, space, tolerance=(0.1, 0.5), penalty=-5.0, norm=math.inf)
    assert torch.equal(missed["next", "observation"], torch.tensor([[0.2, 0.0]]))  # 2nd missed
    assert missed["next", "reward"].tolist() == [[-5.0]]


# ----------------------------------------------------------------------------- FixedGoal
def test_fixed_goal_adds_goal_keys_appends_the_goal_and_tests_success():
    env = TransformedEnv(
        GymEnv("Pendulum-v1"), FixedGoal((0, 1), (1.0, 0.0), (0.05, 0.05), success="goal")
    )
    check_env_specs(env)
    td = env.rollout(5)
    obs = td["observation"]
    assert obs.shape == (5, 5)
    assert torch.equal(td["achieved_goal"], obs[:, :2])
    assert torch.equal(td["desired_goal"], torch.tensor([[1.0, 0.0]]).expand(5, 2))
    assert torch.equal(obs[:, 3:], td["desired_goal"])
    expected = ((obs[:, :2] - torch.tensor([1.0, 0.0])).abs() <= 0.05).all(-1, keepdim=True)
    assert torch.equal(td["is_success"], expected)
    assert env.transform.desired_indices == (3, 4)


def test_fixed_goal_checks_its_arguments():
    with pytest.raises(ValueError, match="one per goal component"):
        FixedGoal((0, 1), (1.0, 0.0, 2.0))
    with pytest.raises(ValueError, match="success='reached'; choose one of"):
        FixedGoal((0, 1), (1.0, 0.0), success="reached")
    with pytest.raises(ValueError, match="distinct goal indices"):
        FixedGoal((0, 0), (1.0, 0.0))
    with pytest.raises(ValueError, match="out of range"):
        TransformedEnv(GymEnv("Pendulum-v1"), FixedGoal((0, 7), (1.0, 0.0))).observation_spec


def test_goal_gym_env_rescales_the_observation_goal_and_tolerance():
    env = goal_gym_env(
        "MountainCarContinuous-v0", batch_size=3, seed=0, indices=(0, 1), goal=(0.48, 0.04),
        tolerance=(0.01, 0.02), obs_scale=(1 / 0.9, 1 / 0.07), obs_loc=(0.3 / 0.9, 0.0),
    )
    check_env_specs(env)
    goal = env.transform[-1]
    assert torch.allclose(goal.goal, torch.tensor([0.78 / 0.9, 0.04 / 0.07]))
    assert goal.tolerance == pytest.approx((0.01 / 0.9, 0.02 / 0.07))
    low = env.observation_spec["observation"].space.low[0, :2]
    high = env.observation_spec["observation"].space.high[0, :2]
    assert torch.allclose(low, -torch.ones(2)) and torch.allclose(high, torch.ones(2))
    start = env.reset()["observation"][:, 0] * 0.9 - 0.3  # gymnasium starts in [-0.6, -0.4]
    assert bool(((start >= -0.6) & (start <= -0.4)).all())


def test_vectorized_mountain_car_resets_each_instance_and_keeps_the_env_reward():
    env = make_env("MountainCarContinuous", batch_size=2, seed=0, max_episode_steps=7)
    td = env.rollout(20, break_when_any_done=False)
    done = td["next", "done"].squeeze(-1)
    assert done[:, 6].all() and done[:, 13].all() and done.sum() == 4
    assert td["next", "truncated"].squeeze(-1)[:, 6].all()
    action = td["action"].squeeze(-1)
    assert torch.allclose(td["next", "reward"].squeeze(-1), -0.1 * action**2, atol=1e-6)
    assert not td["next", "is_success"].any()  # success is reaching the flag: terminated
    serial = make_env("MountainCarContinuous", batch_size=2, seed=0, vectorized=False)
    assert serial.observation_spec["observation"].shape == env.observation_spec["observation"].shape


# ----------------------------------------------------------------------------- task + configs
def test_task_yaml_goal_block_matches_the_env():
    cfg = compose_cfg(["task=MountainCarContinuous", "hierarchy=hac"])
    env = make_env("MountainCarContinuous", batch_size=1)
    goal = env.transform[-1]
    block = cfg.task.goal
    assert list(block.desired_indices) == list(goal.desired_indices)
    assert list(block.tolerance) == pytest.approx(goal.tolerance, rel=1e-5)
    assert MOUNTAIN_CAR_HAC["tolerance"] == (0.01, 0.02)
    assert float(block.low) == -1.0 and float(block.high) == 1.0


@pytest.mark.parametrize("hierarchy, levels, horizon", [("hac", 2, 20), ("hac_3level", 3, 5)])
def test_hac_configs_build_on_mountain_car(hierarchy, levels, horizon):
    cfg = compose_cfg(["task=MountainCarContinuous", f"hierarchy={hierarchy}", "compile=false"])
    exp = build_experiment(cfg, n_envs=2, seed=0)
    assert len(exp.hierarchy.names) == levels
    top = exp.parts[0].level
    # the top level is rewarded by HAC's goal reward on the env goal, per component
    assert isinstance(top.reward, GoalReward) and top.reward.tolerance == pytest.approx(
        (0.0111111, 0.285714)
    )
    low = exp.parts[-1].level
    assert f"transitions={horizon}" in repr(low.control)
    env = TransformedEnv(exp.env, exp.env_transform())
    td = env.rollout(3, exp.policy)
    assert td["action"].shape == (2, 3, 1)


def test_goal_reward_for_the_top_level_needs_an_env_goal():
    cfg = compose_cfg(["task=MountainCarContinuous", "hierarchy=hac",
                       "hierarchy.levels.top.reward=bonus"])
    with pytest.raises(ConfigError, match="reward='bonus'; choose env or goal"):
        build_experiment(cfg, n_envs=1, seed=0)
    cfg = compose_cfg(["task=MountainCarContinuous", "hierarchy=hac",
                       "hierarchy.levels.top.value_range=[0.0,-1.0]"])
    with pytest.raises(ConfigError, match="needs low < high"):
        build_experiment(cfg, n_envs=1, seed=0)
    cfg = compose_cfg(["task=MountainCarContinuous", "hierarchy=hac",
                       "task.goal.tolerance=[0.1,0.1,0.1]"])
    with pytest.raises(ConfigError, match="3 goal tolerances for a goal of 2 components"):
        build_experiment(cfg, n_envs=1, seed=0)


# ----------------------------------------------------------------------------- HAC's parts
def _attempts_td():
    # one episode of 6 steps pursuing subgoals a, a, b, b, b (test flag toggles), then a new
    # episode with subgoal b again
    sub = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0],
                        [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    nxt = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    return TensorDict(
        {
            "observation": torch.zeros(6, 2), "parent_action": sub, "action": torch.zeros(6, 1),
            "steps_to_next_obs": torch.ones(6, 1, dtype=torch.long),
            "episode": torch.tensor([0, 0, 0, 0, 0, 1]),
            "next": {"observation": nxt, "parent_action": sub, "reward": torch.zeros(6, 1),
                     "done": torch.zeros(6, 1, dtype=torch.bool),
                     "terminated": torch.zeros(6, 1, dtype=torch.bool),
                     "truncated": torch.zeros(6, 1, dtype=torch.bool)},
        },
        [6],
    )


def test_subgoal_attempts_split_episodes_where_the_subgoal_changes():
    td = _attempts_td()
    assert subgoal_attempts(td, goal_dim=2).tolist() == [1, 1, 2, 2, 2, 3]
    # the test flag is part of the parent action, so without goal_dim it splits attempts too
    assert subgoal_attempts(td).tolist() == [1, 2, 3, 3, 4, 5]


@pytest.mark.parametrize("scope", ["episode", "subgoal"])
def test_hindsight_scope_subgoal_draws_goals_from_the_same_attempt_only(scope):
    td = _attempts_td()
    space = SubgoalSpace((0, 1), -100.0, 100.0)
    her = HindsightGoals(GoalReward(space, 0.5), k=50, strategy="future", scope=scope)
    sources = her.goal_sources(td, torch.Generator().manual_seed(0))
    last = torch.tensor([1, 1, 4, 4, 4, 5]) if scope == "subgoal" else torch.tensor([4] * 5 + [5])
    assert bool((sources <= last).all()) and bool((sources >= torch.arange(6)).all())
    assert int(sources.max(0).values[0]) == int(last[0])  # reaches its scope's end
    out = her(td)
    assert out.shape[0] == 6 * 51


def test_hindsight_scope_is_checked():
    space = SubgoalSpace((0, 1), -1.0, 1.0)
    with pytest.raises(ValueError, match="unknown hindsight scope 'attempt'"):
        HindsightGoals(GoalReward(space, 0.5), scope="attempt")
    with pytest.raises(ValueError, match="scope 'subgoal' needs a goal from the level above"):
        HindsightGoals(GoalReward(space, 0.5, goal=GoalSlot.observation((2, 3))), scope="subgoal")


def test_gaussian_or_uniform_mixes_uniform_actions_only_while_exploring():
    spec = Bounded(-torch.ones(2), torch.ones(2), (2,))
    module = GaussianOrUniform(spec, std=1e-3, random_probability=0.3)
    td = TensorDict({"action": torch.zeros(4000, 2)}, [4000])
    with set_exploration_type(ExplorationType.RANDOM):
        action = module(td.clone())["action"]
    uniform = (action.abs() > 0.01).any(-1).float().mean()
    assert 0.25 < float(uniform) < 0.35
    assert bool((action.abs() <= 1).all())
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert torch.equal(module(td.clone())["action"], td["action"])
    with pytest.raises(ValueError, match="random_probability must be in"):
        GaussianOrUniform(spec, random_probability=1.5)
    # the ready-made TD3 head builds it from its random_probability
    policy, _, _ = actor_critic_head(3, spec, random_probability=0.2)
    (explore,) = exploration_modules(policy)
    assert isinstance(explore, GaussianOrUniform) and explore.random_probability == 0.2


def test_mountain_car_success_is_reaching_the_flag():
    env = make_env("MountainCarContinuous", batch_size=2, seed=0)
    td = env.reset()
    assert not td["is_success"].any()
    # a bang-bang policy: push in the direction of the velocity, which reaches the flag
    for _ in range(300):
        velocity = td["observation"][:, 1:2]
        td["action"] = torch.where(velocity >= 0, 1.0, -1.0)
        td = env.step(td)
        if td["next", "done"].any():
            break
        td = td["next"]
    assert torch.equal(td["next", "is_success"], td["next", "terminated"])
    assert td["next", "terminated"].any() and td["next", "reward"].max() > 90


# ----------------------------------------------------------------------------- pre-tanh penalty
class _SlopeCritic(torch.nn.Module):
    """Q(s, a) = 0.01 * a: a critic that prefers the upper bound, by very little."""

    def forward(self, observation, action):
        return 0.01 * action.sum(-1, keepdim=True) + 0.0 * observation.sum(-1, keepdim=True)


def _train_actor_on_slope(penalty: float, steps: int = 300) -> float:
    """Trains a TD3 head's actor (Adam) against :class:`_SlopeCritic`; returns mean |u|."""
    from torchrl.modules import ValueOperator
    from torchrl.objectives import TD3Loss

    from torchrl_hier.levels import PreTanhPenaltyTD3Loss

    torch.manual_seed(0)
    spec = Bounded(-torch.ones(1), torch.ones(1), (1,))
    _, actor, loss = actor_critic_head(2, spec, hidden=(16,), pre_tanh_penalty=penalty)
    assert type(loss) is (PreTanhPenaltyTD3Loss if penalty else TD3Loss)
    critic = ValueOperator(_SlopeCritic(), in_keys=["observation", "action"])
    loss = (PreTanhPenaltyTD3Loss(actor, critic, action_spec=spec, pre_tanh_penalty=penalty)
            if penalty else TD3Loss(actor, critic, action_spec=spec))
    optim = torch.optim.Adam(list(actor.parameters()), lr=1e-2)
    obs = torch.rand(64, 2) * 2 - 1
    td = TensorDict({"observation": obs, "action": torch.zeros(64, 1),
                     "next": {"observation": obs, "reward": torch.zeros(64, 1),
                              "done": torch.zeros(64, 1, dtype=torch.bool),
                              "terminated": torch.zeros(64, 1, dtype=torch.bool)}}, [64])
    for _ in range(steps):
        out = loss(td.clone())
        optim.zero_grad()
        (out["loss_actor"] + out.get("loss_pre_tanh", torch.zeros(()))).backward()
        optim.step()
    with torch.no_grad():
        u = actor(td.select("observation"))["param"]
    if penalty:
        assert torch.isclose(out["pre_tanh_abs"], u.abs().mean(), rtol=0.2)
    return float(u.abs().mean())


@pytest.mark.filterwarnings("ignore:No target network updater")
def test_pre_tanh_penalty_keeps_a_td3_actor_off_its_tanh_bound():
    # stock TD3 + Adam on a critic that barely depends on the action: the pre-tanh output
    # runs far past where the tanh responds (the saturated HAC primitive level)
    assert _train_actor_on_slope(0.0) > 3.0  # tanh(3) = 0.995
    # the penalty's gradient 2 w u balances 0.01 / cosh(u)**2 near |u| ~ 0.4
    assert _train_actor_on_slope(0.01) < 1.0


@pytest.mark.filterwarnings("ignore:No target network updater")
def test_pre_tanh_penalty_value_and_settings():
    from torchrl_hier.levels import PreTanhPenaltyTD3Loss

    spec = Bounded(-torch.ones(1), torch.ones(1), (1,))
    _, actor, loss = actor_critic_head(3, spec, pre_tanh_penalty=0.5)
    td = TensorDict({"observation": torch.randn(8, 3), "action": torch.zeros(8, 1),
                     "next": {"observation": torch.randn(8, 3), "reward": torch.zeros(8, 1),
                              "done": torch.zeros(8, 1, dtype=torch.bool),
                              "terminated": torch.zeros(8, 1, dtype=torch.bool)}}, [8])
    out = loss(td.clone())
    with torch.no_grad():
        u = actor(td.select("observation"))["param"]
    torch.testing.assert_close(out["loss_pre_tanh"], 0.5 * u.pow(2).mean())
    with pytest.raises(ValueError, match="pre_tanh_penalty must be a positive number"):
        PreTanhPenaltyTD3Loss(actor, loss.qvalue_network, action_spec=spec, pre_tanh_penalty=0)
    with pytest.raises(ValueError, match="is for the TD3 actor"):
        actor_critic_head(3, spec, algorithm="sac", pre_tanh_penalty=0.1)
    with pytest.raises(ValueError, match="must be a number >= 0"):
        actor_critic_head(3, spec, pre_tanh_penalty=-1.0)
    # the hac configs switch it on per level; bad values are config errors
    cfg = compose_cfg(["task=MountainCarContinuous", "hierarchy=hac",
                       "hierarchy.levels.primitive.pre_tanh_penalty=0.01"])
    exp = build_experiment(cfg, n_envs=1, seed=0)
    assert isinstance(exp.learners["primitive"].loss, PreTanhPenaltyTD3Loss)
    cfg = compose_cfg(["task=MountainCarContinuous", "hierarchy=hac",
                       "hierarchy.levels.top.pre_tanh_penalty=-0.1"])
    with pytest.raises(ConfigError, match="levels.top.pre_tanh_penalty=-0.1; give a number >= 0"):
        build_experiment(cfg, n_envs=1, seed=0)
